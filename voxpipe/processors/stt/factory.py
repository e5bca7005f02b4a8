"""Pick the call's speech recogniser from settings: Deepgram with a key, else offline PocketSphinx."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxpipe.processors.stt.base import STTService

if TYPE_CHECKING:
    from voxpipe.config.locales import LocaleRow
    from voxpipe.config.settings import VoxpipeSettings

__all__ = ["stt_from_settings"]

logger = logging.getLogger(__name__)


def stt_from_settings(
    settings: VoxpipeSettings,
    locale: LocaleRow | None = None,
    *,
    grammar: str | Path | None = None,
    phrases: Sequence[str] | None = None,
    keywords: Sequence[str] | Mapping[str, float] | None = None,
    **options: Any,
) -> STTService:
    """Deepgram (model and language from the locale row) when ``DEEPGRAM_API_KEY`` is set;
    otherwise PocketSphinx, with the bot's grammar, phrases or keywords if it has them.

    ``options`` go to the chosen service (e.g. ``endpointing_ms`` for Deepgram).
    """
    threshold = settings.stt_confidence_threshold
    if settings.deepgram_api_key is not None:
        from voxpipe.processors.stt.deepgram import DeepgramSTTService

        model = options.pop("model", None) or (locale.stt_model if locale else "nova-2")
        language = options.pop("language", None) or (locale.stt_language if locale else "en-US")
        options.setdefault("outage_grace_s", settings.provider_outage_grace_s)
        return DeepgramSTTService(
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_base_url,
            model=model,
            language=language,
            confidence_threshold=threshold,
            **options,
        )
    from voxpipe.processors.stt.pocketsphinx import PocketSphinxSTTService

    mode = "a grammar" if grammar or phrases else "keywords" if keywords else "its general model"
    logger.info("DEEPGRAM_API_KEY is not set: using the offline STT (PocketSphinx, %s)", mode)
    if locale is not None and not locale.stt_language.lower().startswith("en"):
        logger.warning(
            "the offline STT only knows English; locale %s will be recognised as English",
            locale.locale,
        )
    return PocketSphinxSTTService(
        grammar=grammar,
        phrases=phrases,
        keywords=keywords,
        confidence_threshold=threshold,
        **options,
    )
