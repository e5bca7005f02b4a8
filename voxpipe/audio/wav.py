"""WAV file read/write for PCM16 audio (stdlib ``wave``)."""

from __future__ import annotations

import io
import os
import wave
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = ["WavAudio", "read_wav", "write_wav", "wav_bytes"]


@dataclass(slots=True)
class WavAudio:
    """PCM16 little-endian audio read from a WAV file, with its format."""

    pcm: bytes
    sample_rate: int
    num_channels: int = 1

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / (2 * self.num_channels * self.sample_rate)


def _to_pcm16(raw: bytes, sample_width: int) -> bytes:
    # WAV stores 8-bit audio unsigned and wider audio signed little-endian; keep the top 16 bits.
    if sample_width == 2:
        return raw
    if sample_width == 1:
        u8 = np.frombuffer(raw, dtype=np.uint8)
        return ((u8.astype(np.int16) - 128) << 8).astype("<i2").tobytes()
    if sample_width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        return np.ascontiguousarray(b[:, 1:]).tobytes()
    if sample_width == 4:
        return (np.frombuffer(raw, dtype="<i4") >> 16).astype("<i2").tobytes()
    raise ValueError(f"unsupported WAV sample width {sample_width} bytes; expected 1, 2, 3 or 4")


def read_wav(source: str | os.PathLike[str] | BinaryIO) -> WavAudio:
    """Read a PCM WAV file (8/16/24/32-bit integer) and return its audio as PCM16."""
    try:
        with wave.open(
            source if not isinstance(source, os.PathLike) else os.fspath(source), "rb"
        ) as w:
            raw = w.readframes(w.getnframes())
            return WavAudio(_to_pcm16(raw, w.getsampwidth()), w.getframerate(), w.getnchannels())
    except wave.Error as exc:
        raise ValueError(
            f"cannot read {source!r} as a WAV file: {exc} (only integer PCM WAV is supported; "
            "convert float or compressed audio first)"
        ) from exc


def write_wav(
    dest: str | os.PathLike[str] | BinaryIO, pcm: bytes, sample_rate: int, num_channels: int = 1
) -> None:
    """Write PCM16 little-endian audio as a WAV file."""
    frame = 2 * num_channels
    if len(pcm) % frame:
        raise ValueError(
            f"PCM16 audio with {num_channels} channel(s) must be a multiple of {frame} bytes, "
            f"got {len(pcm)}"
        )
    with wave.open(dest if not isinstance(dest, os.PathLike) else os.fspath(dest), "wb") as w:
        w.setnchannels(num_channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


def wav_bytes(pcm: bytes, sample_rate: int, num_channels: int = 1) -> bytes:
    """Return PCM16 audio wrapped in an in-memory WAV file (for HTTP upload APIs)."""
    buf = io.BytesIO()
    write_wav(buf, pcm, sample_rate, num_channels)
    return buf.getvalue()
