"""COMPLIANCE_PROFILE: what the server refuses (hipaa) or warns about (default) at start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from voxpipe.server.carriers import UnsafeSettingsError

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings

__all__ = ["check_compliance", "compliance_problems"]

logger = logging.getLogger(__name__)


def compliance_problems(
    settings: VoxpipeSettings, record_dir: str | Path | None = None
) -> list[str]:
    """Why these settings do not keep call records safe enough for PHI (one line each)."""
    problems: list[str] = []
    kek, _previous = settings.records_keks()
    if kek is None:
        problems.append(
            "no key-encryption key: set RECORDS_KEK (base64 of 32 random bytes) so call "
            "records are encrypted at rest"
        )
    if record_dir or settings.record_dir:
        problems.append(
            "RECORD_DIR / --record writes every call's audio and text to disk unencrypted: unset it"
        )
    url = settings.call_end_webhook_url
    if url and not url.lower().startswith("https://"):
        problems.append(f"CALL_END_WEBHOOK_URL {url} is not https: call data would travel in clear")
    public = settings.public_url
    if not public or not public.lower().startswith("https://"):
        problems.append(
            f"PUBLIC_URL {public or '(unset)'} is not https: the records API must be reached "
            "through TLS"
        )
    return problems


def check_compliance(settings: VoxpipeSettings, record_dir: str | Path | None = None) -> None:
    """hipaa: raise UnsafeSettingsError listing every problem; default: warn about keys."""
    webhook_problem = _webhook_secret_problem(settings)
    if webhook_problem is not None:  # refused in every profile: calls would fail to report
        raise UnsafeSettingsError(webhook_problem)
    problems = compliance_problems(settings, record_dir)
    if settings.compliance_profile == "hipaa":
        if problems:
            raise UnsafeSettingsError(
                "COMPLIANCE_PROFILE=hipaa refuses to start:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        return
    kek, _previous = settings.records_keks()
    if kek is None:
        logger.warning(
            "RECORDS_KEK (and TRANSCRIPT_KEY) unset: transcripts, caller numbers and call "
            "metadata are stored in clear"
        )
        if settings.recording == "on":
            logger.warning("RECORDS_KEK unset: call recordings are stored in clear (RECORDING=on)")


def _webhook_secret_problem(settings: VoxpipeSettings) -> str | None:
    if not settings.call_end_webhook_url:
        return None
    from voxpipe.records.webhook import decode_secret

    if settings.call_end_webhook_secret is None:
        return "CALL_END_WEBHOOK_URL is set: set CALL_END_WEBHOOK_SECRET (whsec_<base64>) too"
    try:
        decode_secret(settings.call_end_webhook_secret.get_secret_value())
    except ValueError as exc:
        return str(exc)
    return None
