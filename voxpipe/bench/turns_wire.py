"""What the caller heard in `voxpipe bench turns`, read from the wire's audio bytes alone.

Every reply the fake LLM gives is a made-up text no other reply shares a four-character run
with (``ReplyBook``), so the fake TTS's audio of it (a tone per character, silence for spaces
and punctuation, ``ms_per_char`` each) can be placed: any stretch of heard audio a few
characters long occurs at exactly one position of exactly one reply. ``place`` cuts what the
far end played (after clears) into runs of continuous playout and finds each run's longest
pieces in the replies' audio, greedily; where a short piece (silence, one character) fits in
several places it takes the one that continues the piece before.

The verdicts use nothing else: no pipeline flag, no interruption frame, so they hold whatever
mechanism produces the audio (a flush and a new reply, a pause and a resume of the buffered
audio, a re-synthesis from a word).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from voxpipe.testing.fakes._synth import parse_output_format, render_chars

__all__ = ["Heard", "ReplyBook", "Verdict", "follow_reply", "place"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_GRAM = 4


class ReplyBook:
    """Reply texts no two of which share a ``_GRAM``-character run, and their expected audio."""

    def __init__(self, ms_per_char: float, *, seed: int = 13, fmt: str = "ulaw_8000") -> None:
        audio_format = parse_output_format(fmt)
        if audio_format is None:
            raise ValueError(f"unknown fake TTS format {fmt!r}")
        self.format = audio_format
        self.ms_per_char = ms_per_char
        self.texts: list[str] = []
        self.audio: list[bytes] = []
        self._rng = random.Random(seed)
        self._grams: set[str] = set()

    @property
    def bytes_per_sec(self) -> int:
        return self.format.sample_rate * self.format.bytes_per_sample

    def new(self, seconds: float) -> str:
        """A new reply about ``seconds`` long when spoken: sentences of made-up words."""
        chars = max(8, round(seconds * 1000 / self.ms_per_char))
        out: list[str] = []
        words_in_sentence = 0
        while len(out) < chars:
            size = self._rng.randint(3, 6)
            for i in range(size):
                out.append(self._letter(out, upper=words_in_sentence == 0 and i == 0))
            words_in_sentence += 1
            if len(out) + 2 >= chars or (words_in_sentence >= 6 and len(out) + 12 < chars):
                self._put(out, ".")
                words_in_sentence = 0
            if len(out) < chars:
                self._put(out, " ")
        text = "".join(out).strip()
        if not text.endswith("."):
            text += "."
        self.texts.append(text)
        # What the TTS service sends: each sentence with a space after it; one rendering of
        # the whole is byte-identical to the pieces' (whole samples per character).
        self.audio.append(render_chars(text + " ", self.format, self.ms_per_char).audio)
        return text

    def _letter(self, out: list[str], *, upper: bool) -> str:
        tail = "".join(out[-(_GRAM - 1) :]).lower()
        letters = list(_LETTERS)
        self._rng.shuffle(letters)
        for c in letters:
            gram = tail + c
            if len(gram) < _GRAM or gram not in self._grams:
                break
        self._remember(tail + c)
        return c.upper() if upper else c

    def _put(self, out: list[str], c: str) -> None:
        self._remember("".join(out[-(_GRAM - 1) :]).lower() + c)
        out.append(c)

    def _remember(self, gram: str) -> None:
        if len(gram) == _GRAM:
            self._grams.add(gram)

    def find(self, piece: bytes, near: tuple[int, int] | None) -> tuple[int, int] | None:
        """(reply, byte offset) where ``piece`` occurs: right at ``near`` if it fits there,
        else the first occurrence in any reply; None if it occurs nowhere."""
        if near is not None:
            k, pos = near
            if 0 <= k < len(self.audio) and self.audio[k][pos : pos + len(piece)] == piece:
                return near
        for k, audio in enumerate(self.audio):
            i = audio.find(piece)
            if i >= 0:
                return k, i
        return None


@dataclass(slots=True)
class Heard:
    """A stretch of one reply the caller heard: ``start``..``end`` on the call clock, bytes
    ``pos``..``pos_end`` of reply ``reply``'s audio; ``reply`` -1 for audio from no reply."""

    start: float
    end: float
    reply: int
    pos: int
    pos_end: int


def place(played: list[tuple[float, bytes]], book: ReplyBook) -> list[Heard]:
    """Cut the far end's playout (start time, bytes; in order) into pieces of known replies."""
    rate = book.bytes_per_sec
    runs: list[tuple[float, bytearray]] = []
    for start, audio in played:
        if not audio:
            continue
        if runs and abs(runs[-1][0] + len(runs[-1][1]) / rate - start) < 1e-3:
            runs[-1][1].extend(audio)
        else:
            runs.append((start, bytearray(audio)))
    out: list[Heard] = []
    near: tuple[int, int] | None = None
    for run_start, run in runs:
        data = bytes(run)
        i = 0
        while i < len(data):
            n, at = _longest(data, i, book, near)
            if at is not None and at != near and len(set(data[i : i + n])) == 1:
                at = None  # silence (a padded chunk's tail) fits anywhere: it is no reply's
            t0 = run_start + i / rate
            t1 = run_start + (i + n) / rate
            if at is None:
                out.append(Heard(t0, t1, -1, 0, 0))
                near = None
            else:
                k, pos = at
                prev = out[-1] if out else None
                if (
                    prev is not None
                    and prev.reply == k
                    and prev.pos_end == pos
                    and abs(prev.end - t0) < 1e-3
                ):
                    prev.end, prev.pos_end = t1, pos + n
                else:
                    out.append(Heard(t0, t1, k, pos, pos + n))
                near = (k, pos + n)
            i += n
    return out


def _longest(
    data: bytes, i: int, book: ReplyBook, near: tuple[int, int] | None
) -> tuple[int, tuple[int, int] | None]:
    """The longest piece of ``data`` from ``i`` found in a reply (at least one byte long)."""
    at = book.find(data[i : i + 1], near)
    if at is None:
        # Audio the replies never had (a click, another source): one 20 ms chunk at a time.
        return min(len(data) - i, book.bytes_per_sec // 50), None
    lo, hi = 1, len(data) - i
    # Continuing right where the last piece ended is the common case: take it if it all fits.
    whole = book.find(data[i:], near)
    if whole is not None:
        return hi, whole
    while lo < hi:  # the longest prefix that occurs somewhere: lo fits, hi + 1 does not
        mid = (lo + hi + 1) // 2
        found = book.find(data[i : i + mid], near)
        if found is not None:
            lo, at = mid, found
        else:
            hi = mid - 1
    return lo, at


@dataclass(slots=True)
class Verdict:
    """What became of the reply the caller talked over."""

    reply: int  # -1: no reply was playing at the onset
    outcome: str  # "no_reply" | "kept" | "resumed" | "stopped" | "restarted" | "skipped"
    # Call clock: where the reply's audio went silent after the onset (its last audio heard,
    # when it stopped for good).
    stopped_at: float | None = None
    silent_secs: float = 0.0  # longest silence within the reply after the onset
    repeated_secs: float = 0.0  # audio heard again after the stop
    skipped_secs: float = 0.0  # audio never heard, jumped over
    other_secs: float = 0.0  # audio of other replies heard before this one was over


def follow_reply(
    heard: list[Heard],
    onset: float,
    book: ReplyBook,
    *,
    until: float,
    max_repeat_secs: float = 0.5,
    max_skip_secs: float = 0.05,
    gap_secs: float = 0.06,
    tail_secs: float = 0.2,
) -> Verdict:
    """Follow the reply that was playing at ``onset`` (call clock) until ``until``.

    ``kept``: it played on to its end with no silence over ``gap_secs``; ``resumed``: it went
    silent and came back within ``max_repeat_secs`` before / ``max_skip_secs`` after where it
    stopped, and played to its end; ``restarted``/``skipped``: it came back further before /
    after; ``stopped``: it never reached its end (its last ``tail_secs`` are allowed unheard).
    """
    rate = book.bytes_per_sec
    playing = [h for h in heard if h.reply >= 0 and h.start <= onset < h.end + gap_secs]
    if not playing:
        return Verdict(-1, "no_reply")
    k = playing[-1].reply
    mine = [h for h in heard if h.reply == k and h.end > onset and h.start < until]
    verdict = Verdict(k, "kept")
    last = mine[0]
    pos, t = last.pos_end, last.end
    for h in mine[1:]:
        silent = h.start - t
        verdict.silent_secs = max(verdict.silent_secs, silent)
        if silent > gap_secs and verdict.stopped_at is None:
            verdict.stopped_at = t
        jump = (h.pos - pos) / rate
        if jump < 0:
            verdict.repeated_secs += -jump
        elif jump > 0:
            verdict.skipped_secs += jump
        pos, t = max(pos, h.pos_end), h.end
    end = len(book.audio[k])
    last_t = mine[-1].end
    verdict.other_secs = sum(
        min(h.end, last_t) - max(h.start, onset)
        for h in heard
        if h.reply != k and h.end > onset and h.start < last_t
    )
    if verdict.repeated_secs > max_repeat_secs:
        verdict.outcome = "restarted"
    elif verdict.skipped_secs > max_skip_secs:
        verdict.outcome = "skipped"
    elif pos < end - tail_secs * rate:
        verdict.outcome = "stopped"
        verdict.stopped_at = t  # for good: the last of it the caller heard
    elif verdict.stopped_at is not None:
        verdict.outcome = "resumed"
    return verdict
