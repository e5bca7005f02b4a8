"""Loudness of PCM16 audio: RMS, dBFS and a 0..1 volume for gating.

dBFS here is RMS relative to a full-scale square wave (a full-scale sine reads -3 dBFS).
The 0..1 volume maps dBFS linearly from ``VOLUME_FLOOR_DBFS`` (0.0) to ``VOLUME_CEIL_DBFS``
(1.0). Conversational speech averages about -30 to -20 dBFS, and even its weak consonants
(a final "s", an initial "th") mostly stay above -46 dBFS (volume 0.6, the VAD's default gate),
while line and room noise usually sits below -60 dBFS (volume < 0.25).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rms", "dbfs", "volume", "dbfs_to_volume", "VOLUME_FLOOR_DBFS", "VOLUME_CEIL_DBFS"]

VOLUME_FLOOR_DBFS = -70.0
VOLUME_CEIL_DBFS = -30.0
# What silence reads as, instead of -inf, so values stay finite and comparable.
SILENCE_DBFS = -120.0


def _samples(pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(pcm, np.ndarray):
        return pcm
    return np.frombuffer(pcm, dtype="<i2")


def rms(pcm: bytes | bytearray | memoryview | np.ndarray) -> float:
    """Root mean square of PCM16 samples, in sample units (0..32768)."""
    x = _samples(pcm)
    if x.size == 0:
        return 0.0
    f = x.astype(np.float32)
    return math.sqrt(float(np.dot(f, f)) / x.size)


def dbfs(pcm: bytes | bytearray | memoryview | np.ndarray) -> float:
    """RMS level in dBFS (0 for a full-scale square wave, ``SILENCE_DBFS`` for digital silence)."""
    r = rms(pcm)
    if r <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(r / 32768.0))


def dbfs_to_volume(level_dbfs: float) -> float:
    """Map a dBFS level to the 0..1 volume scale."""
    v = (level_dbfs - VOLUME_FLOOR_DBFS) / (VOLUME_CEIL_DBFS - VOLUME_FLOOR_DBFS)
    return min(1.0, max(0.0, v))


def volume(pcm: bytes | bytearray | memoryview | np.ndarray) -> float:
    """Normalised volume 0..1 of PCM16 audio (see the module docstring for the scale)."""
    return dbfs_to_volume(dbfs(pcm))
