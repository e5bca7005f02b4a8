"""Format conversion between wire and pipeline audio: encoding (mu-law/PCM16) and sample rate.

``to_pcm16``/``from_pcm16`` are stateless (a table lookup for mu-law). ``AudioConverter``
converts one continuous stream and keeps the resampler's filter state between chunks, so a
stream converted in 20 ms pieces sounds the same as one converted whole.
"""

from __future__ import annotations

from voxpipe.audio.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from voxpipe.audio.resample import StreamingResampler

__all__ = ["ENCODINGS", "AudioConverter", "bytes_per_sample", "convert", "from_pcm16", "to_pcm16"]

ENCODINGS = ("pcm16", "mulaw")


def _check(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(
            f"unsupported audio encoding {encoding!r}: voxpipe carries 'pcm16' (little-endian) "
            "or 'mulaw' (G.711) audio; decode other formats before they enter the pipeline"
        )
    return encoding


def bytes_per_sample(encoding: str) -> int:
    """Bytes one mono sample takes in ``encoding`` (1 for mu-law, 2 for PCM16)."""
    return 1 if _check(encoding) == "mulaw" else 2


def to_pcm16(audio: bytes | bytearray | memoryview, encoding: str) -> bytes:
    """Decode ``audio`` in ``encoding`` to PCM16 (a copy-free pass-through for PCM16)."""
    if _check(encoding) == "mulaw":
        return mulaw_to_pcm16(audio)
    return bytes(audio)


def from_pcm16(pcm: bytes | bytearray | memoryview, encoding: str) -> bytes:
    """Encode PCM16 ``pcm`` to ``encoding``."""
    if _check(encoding) == "mulaw":
        return pcm16_to_mulaw(pcm)
    return bytes(pcm)


def convert(
    audio: bytes, in_encoding: str, in_rate: int, out_encoding: str, out_rate: int
) -> bytes:
    """Convert a whole clip in one call (no state kept)."""
    conv = AudioConverter(in_encoding, in_rate, out_encoding, out_rate)
    return conv.process(audio) + conv.flush()


class AudioConverter:
    """Converts one mono stream from (encoding, rate) to (encoding, rate), chunk by chunk.

    PCM16 is the pivot: decode, resample (soxr, stateful), encode. When formats are equal the
    audio passes through untouched. ``flush()`` returns the resampler's tail at the end of a
    stream; ``reset()`` drops state after an interruption discarded the audio in flight.
    """

    def __init__(
        self,
        in_encoding: str,
        in_rate: int,
        out_encoding: str,
        out_rate: int,
        *,
        quality: str = "HQ",
    ) -> None:
        self.in_encoding = _check(in_encoding)
        self.out_encoding = _check(out_encoding)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler = (
            StreamingResampler(in_rate, out_rate, quality) if in_rate != out_rate else None
        )
        # A PCM16 byte stream cut mid-sample keeps its odd byte for the next chunk.
        self._carry = b""

    @property
    def passthrough(self) -> bool:
        """True when input and output formats are the same."""
        return self._resampler is None and self.in_encoding == self.out_encoding

    def process(self, audio: bytes | bytearray | memoryview) -> bytes:
        """Convert one chunk; returns what is ready (the resampler may hold a few samples)."""
        if self.passthrough:
            return bytes(audio)
        if self.in_encoding == "mulaw":
            pcm = mulaw_to_pcm16(audio)
        else:
            pcm = bytes(audio)
            if self._carry:
                pcm = self._carry + pcm
                self._carry = b""
            if len(pcm) % 2:
                self._carry = pcm[-1:]
                pcm = pcm[:-1]
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return from_pcm16(pcm, self.out_encoding) if pcm else b""

    def flush(self) -> bytes:
        """End of stream: the samples still inside the resampler, converted; state restarts."""
        self._carry = b""
        if self._resampler is None:
            return b""
        tail = self._resampler.flush()
        return from_pcm16(tail, self.out_encoding) if tail else b""

    def reset(self) -> None:
        """Forget buffered audio without returning it."""
        self._carry = b""
        if self._resampler is not None:
            self._resampler.reset()
