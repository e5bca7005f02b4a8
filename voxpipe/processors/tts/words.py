"""Word timings of synthesized speech: from character alignment, or spread over the audio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CharAligner", "TimedWord", "proportional_words"]


@dataclass(slots=True)
class TimedWord:
    """A word of the spoken text and when it is heard, in seconds on the reply's audio."""

    word: str
    start: float
    end: float


class CharAligner:
    """Builds words from per-character timings that arrive in pieces (a word may span two).

    ``add`` returns the words completed so far (a word completes at the whitespace after it);
    ``flush`` returns the last, unterminated one.
    """

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._start = 0.0
        self._end = 0.0
        self.chars_seen = 0

    def add(
        self,
        chars: Sequence[str],
        start_ms: Sequence[float],
        duration_ms: Sequence[float],
        offset: float = 0.0,
    ) -> list[TimedWord]:
        """Characters with start and duration (ms) from ``offset`` seconds; completed words."""
        out: list[TimedWord] = []
        for ch, start, dur in zip(chars, start_ms, duration_ms, strict=False):
            self.chars_seen += 1
            t0 = offset + float(start) / 1000.0
            if ch.isspace():
                word = self._take()
                if word is not None:
                    out.append(word)
                continue
            if not self._chars:
                self._start = t0
            self._chars.append(ch)
            self._end = max(self._end, t0 + float(dur) / 1000.0)
        return out

    def flush(self) -> list[TimedWord]:
        word = self._take()
        return [word] if word is not None else []

    def _take(self) -> TimedWord | None:
        if not self._chars:
            return None
        word = TimedWord("".join(self._chars), self._start, self._end)
        self._chars = []
        return word


def proportional_words(text: str, start: float, end: float) -> list[TimedWord]:
    """The words of ``text`` spread over ``start``..``end`` by their length (no real timings)."""
    words = text.split()
    if not words:
        return []
    # Each word is weighted by its characters plus one for the gap after it.
    weights = [len(w) + 1 for w in words]
    total = sum(weights)
    span = max(end - start, 0.0)
    out = []
    t = start
    for word, weight in zip(words, weights, strict=True):
        dt = span * weight / total
        out.append(TimedWord(word, t, t + dt))
        t += dt
    out[-1].end = end
    return out
