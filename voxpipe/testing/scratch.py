"""Settings for runs that must not touch the configured stores or providers (scenarios, replays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxpipe.config.settings import VoxpipeSettings

__all__ = ["PROVIDER_FIELDS", "scratch_settings"]

# Provider credentials dropped for offline runs, so each factory picks its offline service and
# no transfer reaches a real carrier.
PROVIDER_FIELDS = (
    "deepgram_api_key",
    "openai_api_key",
    "elevenlabs_api_key",
    "twilio_account_sid",
    "twilio_auth_token",
    "transfer_to",
)
_DEFAULTED_FIELDS = ("openai_base_url", "deepgram_base_url", "elevenlabs_base_url")


def scratch_settings(
    base: VoxpipeSettings,
    scratch: Path,
    *,
    overrides: dict[str, Any] | None = None,
    offline: bool = True,
) -> VoxpipeSettings:
    """``base`` with ``overrides``, every store under ``scratch`` (memory sessions, SQLite
    transcripts, spool, recordings; no call-end webhook) and, when ``offline``, no provider
    credentials. Raises ``ValueError`` (pydantic's) for an invalid override."""
    values: dict[str, Any] = {**base.model_dump(), **(overrides or {})}
    values.update(
        redis_url=None,
        database_url=None,
        sqlite_path=str(scratch / "calls.sqlite3"),
        spool_dir=str(scratch / "spool"),
        recordings_url=str(scratch / "recordings"),
        record_dir=None,
        call_end_webhook_url=None,
    )
    if offline:
        fields = VoxpipeSettings.model_fields
        for name in PROVIDER_FIELDS:
            values[name] = None
        for name in _DEFAULTED_FIELDS:
            values[name] = fields[name].default
    return VoxpipeSettings(_env_file=None, **values)  # type: ignore[call-arg]
