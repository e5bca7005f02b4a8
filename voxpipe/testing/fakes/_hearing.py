"""FakeDeepgram's ears: where speech lies in the audio a connection receives (by its energy).

A scripted fake knows in advance at which seconds of the audio each utterance lies. A caller
that reacts to the bot (waits for the greeting, asks, waits for the answer) speaks at moments
nobody knows in advance; ``DeepgramHearing`` makes the fake transcribe what it *hears*
instead, as the real service does: a 10 ms frame whose level is above ``threshold_dbfs`` is
speech, a run of ``min_speech_s`` of it starts an utterance, and the utterance ends at its
last speech frame once the silence after it has lasted ``gap_s`` (the connection's
``endpointing``, never less than ``min_gap_s``: shorter dips are the stops between syllables),
or at once when the client sends ``Finalize``. Each utterance is transcribed as the next of
``texts`` (in turn, per connection): the fake does not recognise words, it only knows when
they were said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from voxpipe.audio.mulaw import mulaw_decode_array

__all__ = ["DeepgramHearing", "SpeechSpans"]


@dataclass(slots=True)
class DeepgramHearing:
    """How FakeDeepgram finds utterances in the audio it receives (see the module docstring)."""

    texts: list[str] = field(default_factory=lambda: ["Hello, I need some help with my order."])
    threshold_dbfs: float = -45.0
    min_speech_s: float = 0.06
    min_gap_s: float = 0.1
    frame_s: float = 0.01

    def __post_init__(self) -> None:
        if not self.texts or not all(t.strip() for t in self.texts):
            raise ValueError("DeepgramHearing needs at least one non-empty text")


class SpeechSpans:
    """Speech onsets and ends in one connection's audio, in seconds of that audio."""

    def __init__(
        self, hearing: DeepgramHearing, *, encoding: str, sample_rate: int, channels: int
    ) -> None:
        self.hearing = hearing
        self.encoding = encoding
        self.width = 1 if encoding in ("mulaw", "alaw") else 2
        self.channels = channels
        self.sample_rate = sample_rate
        self.frame_samples = max(1, round(sample_rate * hearing.frame_s))
        self.frame_bytes = self.frame_samples * self.width * channels
        # Mean square (PCM16 units) above which a frame is speech.
        self.threshold = (32768.0 * 10 ** (hearing.threshold_dbfs / 20)) ** 2
        self._pending = bytearray()
        self._frames = 0  # frames analysed so far
        self._run = 0  # consecutive speech frames (before an onset is declared)
        self.open_start: float | None = None  # the utterance being spoken: its onset
        self.last_speech_end = 0.0  # end of the latest speech frame

    @property
    def heard_to(self) -> float:
        """Seconds of audio analysed so far."""
        return self._frames * self.hearing.frame_s

    def feed(self, audio: bytes | bytearray, gap_s: float) -> list[tuple[float, float]]:
        """Take in audio; return the utterances (onset, end) that ended in it (gap ``gap_s``)."""
        self._pending += audio
        n = len(self._pending) // self.frame_bytes
        if n == 0:
            return []
        block = bytes(self._pending[: n * self.frame_bytes])
        del self._pending[: n * self.frame_bytes]
        if self.width == 1:
            samples = mulaw_decode_array(np.frombuffer(block, dtype=np.uint8))
        else:
            samples = np.frombuffer(block, dtype="<i2")
        frames = samples.astype(np.float32).reshape(n, -1)
        loud = (frames * frames).mean(axis=1) > self.threshold
        step = self.hearing.frame_s
        need = max(1, math.ceil(self.hearing.min_speech_s / step - 1e-9))
        gap = max(gap_s, self.hearing.min_gap_s)
        ended: list[tuple[float, float]] = []
        for is_speech in loud.tolist():
            start = self._frames * step
            self._frames += 1
            if is_speech:
                self._run += 1
                if self.open_start is None and self._run >= need:
                    self.open_start = start - (self._run - 1) * step
                if self.open_start is not None:
                    self.last_speech_end = start + step
            else:
                self._run = 0
                if self.open_start is not None and start + step - self.last_speech_end >= gap:
                    ended.append((self.open_start, self.last_speech_end))
                    self.open_start = None
        return ended

    def close(self) -> tuple[float, float] | None:
        """End the utterance being spoken now (Finalize): its (onset, end), if one is open."""
        if self.open_start is None:
            return None
        span = (self.open_start, max(self.last_speech_end, self.open_start + self.hearing.frame_s))
        self.open_start = None
        self._run = 0
        return span
