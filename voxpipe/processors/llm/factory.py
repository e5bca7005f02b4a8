"""Pick the call's LLM from settings: OpenAI (or any compatible server) with a key or base URL
override, else the offline scripted dialog."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from voxpipe.processors.llm.base import LLMService

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.processors.llm.scripted import Intent

__all__ = ["llm_from_settings", "uses_cloud_llm"]

logger = logging.getLogger(__name__)

_OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
_SCRIPTED_ONLY = (
    "default_reply",
    "greeting",
    "first_token_delay",
    "token_delay",
    "summary_max_chars",
)


def uses_cloud_llm(settings: VoxpipeSettings) -> bool:
    """True when an OpenAI key is set, or OPENAI_BASE_URL points at another server (Ollama...)."""
    base = (settings.openai_base_url or _OPENAI_DEFAULT_BASE).rstrip("/")
    return settings.openai_api_key is not None or base != _OPENAI_DEFAULT_BASE


def llm_from_settings(
    settings: VoxpipeSettings, *, intents: Sequence[Intent] = (), **options: Any
) -> LLMService:
    """``OpenAILLMService`` when configured; otherwise a ``ScriptedLLMService`` over ``intents``
    (with the scripted-only ``options``: ``default_reply``, ``greeting``, delays)."""
    # The call's settings, not the process environment: tests and multi-tenant servers differ.
    options.setdefault("max_tokens", settings.llm_max_tokens)
    options.setdefault("first_token_timeout", settings.llm_timeout_s)
    options.setdefault("retries", settings.llm_retries)
    options.setdefault("fallback_text", settings.llm_fallback_text)
    options.setdefault("outage_grace_s", settings.provider_outage_grace_s)
    if uses_cloud_llm(settings):
        from voxpipe.processors.llm.openai import OpenAILLMService

        # The scripted dialog's own options (its wording for the offline stack) mean nothing
        # to a model: a bot passes them once and runs with either.
        for name in _SCRIPTED_ONLY:
            options.pop(name, None)

        key = settings.openai_api_key
        return OpenAILLMService(
            api_key=key.get_secret_value() if key is not None else None,
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            **options,
        )
    from voxpipe.processors.llm.scripted import ScriptedLLMService

    logger.info(
        "OPENAI_API_KEY is not set: using the offline scripted dialog (%d intents)", len(intents)
    )
    options.pop("temperature", None)
    return ScriptedLLMService(intents, **options)
