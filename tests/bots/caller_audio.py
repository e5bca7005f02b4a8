"""Caller recordings for whole-call tests: now ``voxpipe.testing.caller_wav`` (kept for callers
of the old name)."""

from __future__ import annotations

from pathlib import Path

from voxpipe.testing import caller_wav


def make_caller_wav(
    path: Path, lines: list[str], *, lead_s: float = 5.0, gap_s: float = 5.0, rate: int = 16000
) -> Path:
    """``caller_wav(lines, path, lead_s=..., pause_s=gap_s)``."""
    return caller_wav(lines, path, lead_s=lead_s, pause_s=gap_s, sample_rate=rate)
