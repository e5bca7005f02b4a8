"""Pick the call's speech synthesizer from settings: ElevenLabs with a key, else offline espeak-ng."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from voxpipe.processors.tts.base import TTSService

if TYPE_CHECKING:
    from voxpipe.config.locales import LocaleRow
    from voxpipe.config.settings import VoxpipeSettings

__all__ = ["tts_from_settings"]

logger = logging.getLogger(__name__)


def tts_from_settings(
    settings: VoxpipeSettings, locale: LocaleRow | None = None, **options: Any
) -> TTSService:
    """ElevenLabs (voice and language from the locale row) when ``ELEVENLABS_API_KEY`` is set;
    otherwise espeak-ng in the locale's language. ``options`` go to the chosen service."""
    if settings.elevenlabs_api_key is not None:
        from voxpipe.processors.tts.elevenlabs import ElevenLabsTTSService

        voice_id = options.pop("voice_id", None) or (
            locale.tts_voice if locale else settings.elevenlabs_voice_id
        )
        language = options.pop("language", None) or (locale.tts_language if locale else None)
        options.setdefault("outage_grace_s", settings.provider_outage_grace_s)
        return ElevenLabsTTSService(
            api_key=settings.elevenlabs_api_key.get_secret_value(),
            voice_id=voice_id,
            base_url=settings.elevenlabs_base_url,
            language=language,
            **options,
        )
    from voxpipe.processors.tts.espeak import EspeakEngine, EspeakTTSService

    voice = options.pop("voice", None)
    if voice is None:
        candidates = [locale.locale.lower(), locale.tts_language.lower()] if locale else []
        engine = EspeakEngine.get()
        voice = next((v for v in candidates if engine.has_voice(v)), "en-us")
    logger.info("ELEVENLABS_API_KEY is not set: using the offline TTS (espeak-ng, voice %s)", voice)
    return EspeakTTSService(voice=voice, **options)
