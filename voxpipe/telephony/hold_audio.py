"""The default hold audio: a soft two-note chime every few seconds, made here (no recording).

``hold.wav`` next to this module is ``hold_wav()`` written once (8 kHz, 16-bit mono, 6 s;
Twilio loops a wait URL's audio). ``python -m voxpipe.telephony.hold_audio`` rewrites it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from voxpipe.audio.wav import wav_bytes

__all__ = ["HOLD_WAV", "hold_wav", "shipped_hold_wav"]

HOLD_WAV = Path(__file__).with_name("hold.wav")
RATE = 8000


def _note(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    # A bell-like tone: fundamental plus a quiet octave, with an exponential decay.
    tone = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
    envelope = np.exp(-3.0 * t) * np.minimum(1.0, t / 0.01)
    return np.asarray(tone * envelope)


def hold_wav(seconds: float = 6.0) -> bytes:
    """The chime (E5 then C5) followed by quiet, as WAV bytes."""
    total = np.zeros(int(RATE * seconds))
    for start, freq in ((0.0, 659.25), (0.6, 523.25)):
        note = _note(freq, 1.5)
        i = int(start * RATE)
        total[i : i + len(note)] += note[: len(total) - i]
    pcm = (total / np.max(np.abs(total)) * 0.25 * 32767).astype("<i2")
    return wav_bytes(pcm.tobytes(), RATE)


@functools.lru_cache(maxsize=1)
def shipped_hold_wav() -> bytes:
    """The packaged hold audio (generated again if the file is missing)."""
    try:
        return HOLD_WAV.read_bytes()
    except OSError:
        return hold_wav()


if __name__ == "__main__":
    HOLD_WAV.write_bytes(hold_wav())
