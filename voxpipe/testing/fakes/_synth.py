"""Deterministic synthetic "speech" for the TTS fakes: a tone per character, in a wire format."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxpipe.audio.mulaw import pcm16_to_mulaw

__all__ = ["AudioFormat", "RenderedChars", "parse_output_format", "render_chars"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An output format the fakes can produce: G.711 mu-law or PCM16 little-endian, mono."""

    name: str
    encoding: str  # "mulaw" or "pcm16"
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.encoding == "mulaw" else 2

    @property
    def content_type(self) -> str:
        return "audio/basic" if self.encoding == "mulaw" else "audio/pcm"


_PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
FORMATS: dict[str, AudioFormat] = {"ulaw_8000": AudioFormat("ulaw_8000", "mulaw", 8000)}
FORMATS.update({f"pcm_{r}": AudioFormat(f"pcm_{r}", "pcm16", r) for r in _PCM_RATES})


def parse_output_format(name: str) -> AudioFormat | None:
    """The fake's format for an ElevenLabs `output_format` name, or None if it cannot make it."""
    return FORMATS.get(name)


@dataclass(frozen=True, slots=True)
class RenderedChars:
    """Audio for a run of characters and each character's timing within it (ms from its start)."""

    audio: bytes
    chars: list[str]
    start_ms: list[int]
    duration_ms: list[int]
    fmt: AudioFormat
    bounds: list[int]  # sample index where each character starts, then the end

    def slice(self, start: int, stop: int) -> RenderedChars:
        """Characters start..stop with their audio, timings from the slice's own start.

        Slicing one rendering (rather than rendering pieces) keeps the total exact when a
        character is not a whole number of samples.
        """
        stop = min(stop, len(self.chars))
        width = self.fmt.bytes_per_sample
        first, rate = self.bounds[start], self.fmt.sample_rate
        rel_ms = [round((b - first) * 1000 / rate) for b in self.bounds[start : stop + 1]]
        return RenderedChars(
            audio=self.audio[first * width : self.bounds[stop] * width],
            chars=self.chars[start:stop],
            start_ms=rel_ms[:-1],
            duration_ms=[rel_ms[i + 1] - rel_ms[i] for i in range(len(rel_ms) - 1)],
            fmt=self.fmt,
            bounds=[b - first for b in self.bounds[start : stop + 1]],
        )


def _char_tone(char: str, n: int, rate: int) -> np.ndarray:
    # Letters and digits get a tone whose pitch depends on the character, so the audio is
    # deterministic yet not constant; spaces and punctuation are silence (pauses).
    if n <= 0 or not char.isalnum():
        return np.zeros(max(n, 0), dtype=np.float64)
    freq = 180.0 + (ord(char.lower()) % 26) * 15.0
    t = np.arange(n, dtype=np.float64) / rate
    tone = 0.3 * np.sin(2 * np.pi * freq * t)
    ramp = min(n // 8, int(rate * 0.004))  # short fades avoid clicks between characters
    if ramp > 0:
        fade = np.linspace(0.0, 1.0, ramp)
        tone[:ramp] *= fade
        tone[-ramp:] *= fade[::-1]
    return tone


def render_chars(text: str, fmt: AudioFormat, ms_per_char: float) -> RenderedChars:
    """Render `text` as `ms_per_char` of audio per character, with consistent char timings."""
    rate = fmt.sample_rate
    per_char = rate * ms_per_char / 1000.0
    # Cumulative rounding keeps the total exact and every timing within one sample of ideal.
    bounds = [round(i * per_char) for i in range(len(text) + 1)]
    pieces = [_char_tone(c, bounds[i + 1] - bounds[i], rate) for i, c in enumerate(text)]
    signal = np.concatenate(pieces) if pieces else np.zeros(0)
    pcm = np.round(signal * 32767).astype("<i2").tobytes()
    audio = pcm16_to_mulaw(pcm) if fmt.encoding == "mulaw" else pcm
    bounds_ms = [round(b * 1000 / rate) for b in bounds]
    return RenderedChars(
        audio=audio,
        chars=list(text),
        start_ms=bounds_ms[:-1],
        duration_ms=[bounds_ms[i + 1] - bounds_ms[i] for i in range(len(text))],
        fmt=fmt,
        bounds=bounds,
    )
