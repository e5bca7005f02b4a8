"""Bring caller audio to the encoding and rate a recogniser takes, converting only when needed."""

from __future__ import annotations

from voxpipe.audio import StreamingResampler, mulaw_to_pcm16, pcm16_to_mulaw

__all__ = ["AudioConverter"]


class AudioConverter:
    """Converts audio chunks (``mulaw`` or ``pcm16``, any rate) to one target encoding and rate.

    Audio already in the target format is returned unchanged (phone audio reaches Deepgram as
    the wire's own mu-law bytes). A resampler per source rate keeps filter state across chunks.
    """

    def __init__(self, encoding: str, sample_rate: int) -> None:
        if encoding not in ("mulaw", "pcm16"):
            raise ValueError(f"unsupported target encoding {encoding!r}: use 'mulaw' or 'pcm16'")
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._resamplers: dict[int, StreamingResampler] = {}
        self._carry = b""  # an odd PCM16 byte waiting for its other half

    def convert(self, audio: bytes, encoding: str, sample_rate: int) -> bytes:
        """``audio`` in the target format (may be shorter while a resampler fills)."""
        if encoding == self.encoding and sample_rate == self.sample_rate:
            return audio
        if encoding == "mulaw":
            pcm = mulaw_to_pcm16(audio)
        elif encoding == "pcm16":
            pcm = self._carry + audio
            self._carry = b""
            if len(pcm) % 2:
                pcm, self._carry = pcm[:-1], pcm[-1:]
        else:
            raise ValueError(f"cannot convert audio in encoding {encoding!r}")
        if sample_rate != self.sample_rate:
            resampler = self._resamplers.get(sample_rate)
            if resampler is None:
                resampler = self._resamplers[sample_rate] = StreamingResampler(
                    sample_rate, self.sample_rate
                )
            pcm = resampler.process(pcm)
        return pcm16_to_mulaw(pcm) if self.encoding == "mulaw" else pcm
