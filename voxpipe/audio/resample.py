"""Streaming PCM16 resampling that keeps filter state across chunks (soxr).

Deterministic: the same input always gives the same output, chunked or not (to rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["StreamingResampler", "resample_pcm16"]


def _import_soxr() -> Any:
    try:
        import soxr  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "voxpipe.audio.resample needs the 'audio' extra: pip install 'voxpipe[audio]'"
        ) from exc
    return soxr


class StreamingResampler:
    """Resamples a continuous mono PCM16 stream chunk by chunk without clicks at chunk edges.

    One instance per stream: soxr keeps the filter history between calls, so the output of
    many small chunks matches resampling the whole stream at once. Output lags input by the
    filter delay; call ``flush()`` at the end of the stream to get the tail.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._stream = None
        self._carry = b""  # an odd trailing byte waits for its other half
        if in_rate != out_rate:
            soxr = _import_soxr()
            # float32 inside, rounded by us: soxr's int16 output adds random dither, which would
            # make the same input resample differently on each run (and break replays).
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=quality
            )

    @property
    def passthrough(self) -> bool:
        """True when the rates are equal and audio is returned unchanged."""
        return self._stream is None

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Resample one chunk of little-endian PCM16 and return what is ready so far."""
        if self._carry:
            pcm = self._carry + bytes(pcm)
            self._carry = b""
        if len(pcm) % 2:
            self._carry = bytes(pcm[-1:])
            pcm = pcm[:-1]
        if self._stream is None:
            return bytes(pcm)
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        return _to_pcm16(self._stream.resample_chunk(samples, last=False))

    def flush(self) -> bytes:
        """End the stream: return the samples still inside the filter, then start afresh."""
        if self._stream is None:
            return b""
        tail = _to_pcm16(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        self._stream.clear()
        self._carry = b""
        return tail

    def reset(self) -> None:
        """Drop buffered state (e.g. after an interruption discards the audio in flight)."""
        self._carry = b""
        if self._stream is not None:
            self._stream.clear()


def resample_pcm16(pcm: bytes, in_rate: int, out_rate: int, quality: str = "HQ") -> bytes:
    """Resample a whole PCM16 clip in one call."""
    if in_rate == out_rate:
        return bytes(pcm)
    soxr = _import_soxr()
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return _to_pcm16(soxr.resample(samples, in_rate, out_rate, quality=quality))


def _to_pcm16(x: np.ndarray) -> bytes:
    # Round to nearest and saturate: the filter can overshoot full scale slightly.
    out: bytes = np.rint(x).clip(-32768, 32767).astype("<i2").tobytes()
    return out
