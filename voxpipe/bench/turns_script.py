"""The caller's side of `voxpipe bench turns`: its lines spoken by espeak-ng, laid on one timeline.

Four kinds of case, each with room for the bot's answer before the next one starts:

* ``complete``: a whole question;
* ``pause``: a sentence with a mid-sentence pause of ``pause`` seconds between its two parts
  ("I'd like to check my order, the number is" ... "four five six seven");
* ``backchannel``: a question asking for a long answer, then, while the bot gives it, a
  short "uh-huh" / "okay" / "mm-hmm" over it;
* ``barge_in``: a question asking for a long answer, then a full sentence over the bot
  ("Wait, stop, that is not what I asked about at all.").

The lines live in ``data/turns_script.json``. espeak-ng is deterministic, so the same
script gives the same audio on every run; it is synthesized at bench time (a few ms a line)
and kept in memory, never committed. Speech boundaries are measured on the synthesized
audio itself (first and last sample above a small level), so the truth is exact.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxpipe.audio.mulaw import pcm16_to_mulaw
from voxpipe.audio.resample import resample_pcm16
from voxpipe.transports.wire import AudioFormat

__all__ = ["KINDS", "Case", "Script", "Timing", "build_script", "load_lines"]

PHONE = AudioFormat("mulaw", 8000)
RATE = 8000
CHUNK_SECS = 0.02
_SCRIPT = Path(__file__).resolve().parent / "data" / "turns_script.json"
KINDS = ("complete", "pause", "backchannel", "barge_in")
_LEVEL = 300  # PCM16 amplitude above which a sample is speech (espeak's silence is 0)


@dataclass(slots=True)
class Case:
    """One case on the call's audio timeline (seconds of caller audio from the first chunk)."""

    number: int
    kind: str  # one of KINDS
    start: float  # the caller's first word
    end: float  # the end of the caller's turn (the question, or the paused sentence)
    until: float  # the case's window ends here (the next case begins)
    pause: float | None = None  # pause: seconds of silence between the two parts
    pause_start: float | None = None  # pause: end of the first part
    over: float | None = None  # backchannel / barge-in: onset of the speech over the bot
    over_end: float | None = None
    over_text: str = ""
    # What the caller says, as the fake STT transcribes it: (text, start, end) per stretch.
    parts: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Timing:
    """How long the bot may take, which sets the room each case leaves for the answer."""

    decide_secs: float  # longest wait from end of speech to the turn decided
    providers_secs: float  # STT + LLM + TTS latencies
    short_reply_secs: float  # an answer to a question or a paused sentence, played
    long_reply_secs: float  # the answer a backchannel or a barge-in is spoken over
    margin_secs: float = 1.5

    @property
    def answer_secs(self) -> float:
        """From the end of a turn until a short answer has surely played out."""
        return self.decide_secs + self.providers_secs + self.short_reply_secs + self.margin_secs

    @property
    def over_at_secs(self) -> float:
        """From the end of a long question to the speech over the bot's answer: the answer has
        begun however long the turn took to decide, and has most of its length left."""
        return self.decide_secs + self.providers_secs + 0.7


@dataclass(slots=True)
class Script:
    """The caller's whole side of the call in 8 kHz mu-law, and its cases."""

    audio: bytes
    cases: list[Case]
    long_questions: tuple[str, ...]  # questions whose answer is the long one

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


def load_lines(path: Path = _SCRIPT) -> dict[str, list[object]]:
    """The script's lines (questions, paused sentences, backchannels, barge-ins)."""
    data: dict[str, list[object]] = json.loads(path.read_text())
    return data


@functools.lru_cache(maxsize=256)
def _speak(text: str, voice: str, rate_wpm: int) -> bytes:
    """``text`` as 8 kHz PCM16 by espeak-ng, leading and trailing silence cut off."""
    from voxpipe.processors.tts.espeak import EspeakEngine  # the 'offline' extra

    syn = EspeakEngine.get().synthesize(text, voice, rate_wpm, None)
    pcm = np.frombuffer(resample_pcm16(syn.pcm, syn.sample_rate, RATE), dtype="<i2")
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > _LEVEL)
    if len(loud) == 0:
        raise ValueError(f"espeak-ng produced no audible speech for {text!r}")
    clip: bytes = pcm[loud[0] : loud[-1] + 1].tobytes()
    return clip


class _Builder:
    """Appends speech and silence to the timeline, in whole 20 ms chunks at the end."""

    def __init__(self, voice: str, rate_wpm: int) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pcm = bytearray()

    @property
    def t(self) -> float:
        return len(self.pcm) / 2 / RATE

    def say(self, text: str) -> tuple[float, float]:
        start = self.t
        self.pcm += _speak(text, self.voice, self.rate_wpm)
        return start, self.t

    def wait(self, seconds: float) -> None:
        self.pcm += bytes(2 * round(seconds * RATE))

    def wait_until(self, t: float) -> None:
        self.wait(max(0.0, t - self.t))

    def align(self) -> None:
        step = round(CHUNK_SECS * RATE) * 2
        self.pcm += bytes(-len(self.pcm) % step)


def build_script(
    rounds: int,
    timing: Timing,
    *,
    pauses: tuple[float, ...] = (0.5, 0.7, 0.7, 1.0),
    kinds: tuple[str, ...] = KINDS,
    lead_secs: float = 0.6,
    voice: str = "en-us",
    rate_wpm: int = 160,
) -> Script:
    """``rounds`` rounds of cases: per round one complete question, a paused sentence per entry
    of ``pauses`` (0.7 s twice by default: the target row), one backchannel and one barge-in
    (only the ``kinds`` asked for)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown case kind {kind!r}: choose from {', '.join(KINDS)}")
    lines = load_lines()
    questions = [str(q) for q in lines["questions"]]
    paused: list[tuple[str, str]] = []
    for pair in lines["paused"]:
        assert isinstance(pair, list) and len(pair) == 2, pair
        paused.append((str(pair[0]), str(pair[1])))
    long_q = [str(q) for q in lines["long_questions"]]
    backchannels = [str(b) for b in lines["backchannels"]]
    barge_ins = [str(b) for b in lines["barge_ins"]]
    b = _Builder(voice, rate_wpm)
    b.wait(lead_secs)
    cases: list[Case] = []
    counters = dict.fromkeys((*KINDS, "long"), 0)

    def take(kind: str, pool: list[str] | list[tuple[str, str]]) -> int:
        i = counters[kind] % len(pool)
        counters[kind] += 1
        return i

    plan: list[tuple[str, float | None]] = []
    plan.append(("complete", None))
    plan.extend(("pause", p) for p in pauses[: len(pauses) // 2])
    plan.append(("backchannel", None))
    plan.extend(("pause", p) for p in pauses[len(pauses) // 2 :])
    plan.append(("barge_in", None))
    plan = [(k, p) for k, p in plan if k in kinds]
    for _ in range(rounds):
        for kind, pause in plan:
            n = len(cases)
            if kind == "complete":
                text = questions[take(kind, questions)]
                s, e = b.say(text)
                case = Case(n, kind, s, e, 0.0, parts=[(text, s, e)])
                b.wait(timing.answer_secs)
            elif kind == "pause":
                assert pause is not None
                first, second = paused[take(kind, paused)]
                s, a_end = b.say(first)
                b.wait(pause)
                b_start, e = b.say(second)
                case = Case(
                    n,
                    kind,
                    s,
                    e,
                    0.0,
                    pause=pause,
                    pause_start=a_end,
                    parts=[(first, s, a_end), (second, b_start, e)],
                )
                b.wait(timing.answer_secs)
            else:
                question = long_q[take("long", long_q)]
                s, e = b.say(question)
                b.wait(timing.over_at_secs)
                pool = backchannels if kind == "backchannel" else barge_ins
                over_text = pool[take(kind, pool)]
                o_start, o_end = b.say(over_text)
                case = Case(
                    n,
                    kind,
                    s,
                    e,
                    0.0,
                    over=o_start,
                    over_end=o_end,
                    over_text=over_text,
                    parts=[(question, s, e), (over_text, o_start, o_end)],
                )
                # The rest of the long answer, or an answer to what was said over it.
                b.wait(max(timing.long_reply_secs, timing.answer_secs) + timing.margin_secs)
            b.align()
            case.until = b.t
            cases.append(case)
    pcm = bytes(b.pcm)
    return Script(pcm16_to_mulaw(pcm), cases, tuple(long_q))
