"""`voxpipe bench turns`: does the served call take turns right? Judged by what the caller hears.

One phone call on the provider fakes, built exactly as ``voxpipe bench latency`` builds it
(the same code: the served settings turned into the call's turn detection by
``turn_taking``, Smart Turn after a short VAD stop by default, a batched VAD, real sockets to
``FakeDeepgram`` / ``FakeOpenAI`` / ``FakeElevenLabs`` at ``--provider-latency``). The caller
plays a script spoken by espeak-ng (``turns_script``): complete questions, sentences with a
mid-sentence pause of 0.5, 0.7 or 1.0 s, backchannels ("uh-huh", "okay") over the bot's long
answers, and real barge-ins (a full sentence over the bot). The pipeline is the latency
bench's (transport, Deepgram, context aggregators, OpenAI, ElevenLabs), not a bot file's,
with what the served support agent places right after its STT to judge speech over the bot:
the interruption arbiter (``voxpipe.processors.turn.backchannel``, issue 13 point 4) where
this voxpipe has one (``interruption_arbiter`` in the report says whether it ran).

Every verdict comes from the audio the far end played (``MemorySink``'s playout model: audio
plays in real time after what is buffered, a clear drops the rest), placed in the replies it
came from (``turns_wire``):

* ``cut_off_pct`` (the 0.7 s row; every pause length in ``cut_off_by_pause``): paused
  sentences during which the caller heard a reply begin, from their first word until the
  earliest a reply to the whole sentence could be decided (its end plus the VAD's stop);
* ``backchannel_resumed_pct``: backchannels after which the reply being played went on, or
  stopped and came back within 0.5 s before / 0.05 s after where it stopped, and played to
  its end (``backchannel_outcomes`` counts kept / resumed / stopped / restarted / skipped);
  ``backchannel_answered`` counts those after which a new reply came (the bot took the
  backchannel for a turn and answered it);
* ``barge_in_missed``: barge-ins after which the reply was still (or again) heard once the
  caller's sentence was over: failures, counted, never retried;
* ``barge_in_p99_ms``: from the interruption decision (the end of the VAD window that
  decided it, or the moment another processor's request reached the input transport) to
  the next clear on the wire, wall time (0 where the wire was cleared between the caller's
  onset and the decision); a miss counts as infinitely late (p99 null), and so does a stop
  with no decision or clear seen (``barge_in_unmeasured``).

A case the script could not set up (no reply playing when the caller spoke over it, no answer
to a question, the previous answer still playing when the case began) is a failure too, in
``failures``; ``ok`` is false when anything failed or a reply began inside a complete
question (the ``none`` row of ``cut_off_by_pause``).
"""

from __future__ import annotations

import asyncio
import bisect
import importlib
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from voxpipe.bench.interruption import order_statistic
from voxpipe.bench.latency import (
    GC_DEFAULT,
    GC_TUNED,
    SUMMARY,
    _BenchTransport,
    _call,
    _Config,
    _Stamps,
    _TimedInput,
    _Turn,
    loop_factory,
)
from voxpipe.bench.turns_script import CHUNK_SECS, KINDS, Case, Script, Timing, build_script
from voxpipe.bench.turns_wire import Heard, ReplyBook, Verdict, follow_reply, place
from voxpipe.frames import Frame, FrameDirection, InterruptionFrame, InterruptionRequestFrame
from voxpipe.processors.base import FrameProcessor

__all__ = ["TARGETS", "run_turns", "run_turns_bench"]

SHORT_REPLY_SECS = 1.5
LONG_REPLY_SECS = 6.0
TARGETS = {
    "cut_off_pct": "<= 5 on 0.7 s pauses",
    "backchannel_resumed_pct": ">= 95",
    "barge_in_missed": "= 0",
    "barge_in_p99_ms": "<= 5 after the deciding window",
}


class _TurnsInput(_TimedInput):
    """The latency bench's input, also keeping each chunk's call-clock time and every
    interruption decision (perf_counter) however it was reached."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_clock: list[float] = []
        self.window_done = 0.0
        self.decisions: list[float] = []
        self.sweeps: list[float] = []

    async def push_wire_audio(self, audio: bytes) -> None:
        if self.started and not self.closed:
            self.chunk_clock.append(self.clock.now())
        await super().push_wire_audio(audio)

    async def _analyze(self, vad: Any, pcm: bytes) -> Any:
        events = await super()._analyze(vad, pcm)
        self.window_done = time.perf_counter()
        return events

    async def request_interruption(self, reason: str = "") -> None:
        # Asked from the VAD's window processing: the decision is that window's end.
        self.decisions.append(self.window_done)
        await super().request_interruption(reason)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionRequestFrame) and direction is FrameDirection.UPSTREAM:
            self.decisions.append(time.perf_counter())  # decided further down the pipeline
        await super().process_frame(frame, direction)

    async def _lifecycle(self, frame: Frame) -> None:
        # A sweep that reached the pipeline without a request passing here (a task-level
        # interruption): its arrival stands for the decision.
        if type(frame) is InterruptionFrame:
            self.sweeps.append(time.perf_counter())
        await super()._lifecycle(frame)


class _TurnsTransport(_BenchTransport):
    input_class = _TurnsInput


def served_after_stt(settings: Any) -> list[FrameProcessor]:
    """What the served support agent puts right after its STT to judge speech over the bot:
    the interruption arbiter with the served settings, where this voxpipe has one."""
    try:
        module = importlib.import_module("voxpipe.processors.turn.backchannel")
    except ImportError:
        return []
    arbiter: FrameProcessor = module.InterruptionArbiter(
        module.interruption_params(settings), locale="en"
    )
    return [arbiter]


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


class _Replies:
    """The fake LLM's answers: a long one when the last thing the caller said was one of the
    script's long questions, else a short one; each a new text of the ``ReplyBook``."""

    def __init__(self, book: ReplyBook, script: Script) -> None:
        self.book = book
        self.lines = {_words(t): False for c in script.cases for t, _, _ in c.parts}
        self.lines.update({_words(q): True for q in script.long_questions})
        self.requests = 0
        self.long_replies = 0

    def __call__(self, body: dict[str, Any]) -> str:
        if not body.get("stream"):
            return SUMMARY  # the context's summary of older turns (off the reply path)
        self.requests += 1
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        content = users[-1].get("content", "") if users else ""
        said = _words(content if isinstance(content, str) else str(content))
        # The message may hold earlier lines too (a turn that got no answer): the last counts.
        last = max(self.lines, key=lambda line: (said.rfind(line), len(line)))
        long = said.rfind(last) >= 0 and self.lines[last]
        self.long_replies += long
        return self.book.new(LONG_REPLY_SECS if long else SHORT_REPLY_SECS)


class _Clock:
    """Caller audio time (seconds of the script) to the call clock and to perf_counter."""

    def __init__(self, inp: _TurnsInput) -> None:
        self.clock = inp.chunk_clock
        self.perf = inp.chunk_perf

    def _at(self, values: list[float], s: float) -> float:
        if not values:
            return math.nan
        i = min(max(int(s / CHUNK_SECS), 0), len(values) - 1)
        return values[i] + (s - i * CHUNK_SECS)

    def call(self, s: float) -> float:
        return self._at(self.clock, s)

    def wall(self, s: float) -> float:
        return self._at(self.perf, s)


def _first_after(heard: list[Heard], a: float, b: float) -> float | None:
    return next((h.start for h in heard if a <= h.start < b), None)


def analyse(
    script: Script,
    heard: list[Heard],
    clock: _Clock,
    book: ReplyBook,
    *,
    vad_stop_secs: float,
    decisions: Sequence[float],
    clears: Sequence[float],
    sweeps: Sequence[float] = (),
) -> dict[str, Any]:
    """The report's metrics from the cases, what was heard, and the decision / clear times."""
    failures: dict[str, list[int]] = {}
    cut_rows: dict[str, list[bool]] = {}
    answer_ms: list[float] = []
    outcomes: dict[str, int] = {}
    resumed = 0
    backchannels = 0
    missed: list[int] = []
    latencies: list[float] = []
    stop_ms: list[float] = []
    counts = dict.fromkeys(KINDS, 0)
    decided, swept, cleared = sorted(decisions), sorted(sweeps), sorted(clears)

    log: list[str] = []
    answered = {"backchannel": 0, "barge_in": 0}

    def fail(what: str, case: Case) -> None:
        failures.setdefault(what, []).append(case.number)

    for case in script.cases:
        counts[case.kind] += 1
        start, end, until = clock.call(case.start), clock.call(case.end), clock.call(case.until)
        if any(h.start < start < h.end for h in heard):
            # The previous case's answer was still playing: the script left too little room.
            fail("bot_talking_at_start", case)
        if case.kind in ("complete", "pause"):
            row = "none" if case.pause is None else f"{case.pause:g}"
            before = {h.reply for h in heard if h.start < start}
            cut = any(
                start <= h.start < end + vad_stop_secs and h.reply not in before for h in heard
            )
            cut_rows.setdefault(row, []).append(cut)
            spoke = _first_after(heard, start, until)
            if spoke is None:
                fail("no_answer", case)  # the bot said nothing at all, early or late
            first = _first_after(heard, end, until)
            if first is not None:
                answer_ms.append(1000.0 * (first - end))
            where = "none" if spoke is None else f"{1000 * (spoke - end):+.0f} ms from its end"
            if cut and case.pause_start is not None and spoke is not None:
                where += f", {1000 * (spoke - clock.call(case.pause_start)):.0f} ms into the pause"
            log.append(f"#{case.number} {case.kind} {row}: bot heard {where}; cut off: {cut}")
            continue
        assert case.over is not None and case.over_end is not None
        onset, over_end = clock.call(case.over), clock.call(case.over_end)
        verdict = follow_reply(heard, onset, book, until=until)
        log.append(
            f"#{case.number} {case.kind} {case.over_text!r}: {verdict.outcome}"
            + (
                f" {1000 * (verdict.stopped_at - onset):.0f} ms after the onset"
                if verdict.stopped_at is not None
                else ""
            )
            + f", longest silence {1000 * verdict.silent_secs:.0f} ms, repeated "
            f"{1000 * verdict.repeated_secs:.0f} ms, skipped {1000 * verdict.skipped_secs:.0f} ms"
        )
        # A new reply after the speech over the bot: it took the speech for a turn.
        if any(h.reply not in (-1, verdict.reply) and onset < h.start < until for h in heard):
            answered[case.kind] += 1
        if case.kind == "backchannel":
            backchannels += 1
            outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
            if verdict.outcome == "no_reply":
                fail("backchannel_bot_not_speaking", case)
            elif verdict.outcome in ("kept", "resumed"):
                resumed += 1
            continue
        if verdict.outcome == "no_reply":
            fail("barge_in_bot_not_speaking", case)
            latencies.append(math.inf)
            continue
        if not _stopped(verdict, over_end):
            missed.append(case.number)
            latencies.append(math.inf)
            continue
        assert verdict.stopped_at is not None
        stop_ms.append(1000.0 * (verdict.stopped_at - onset))
        latencies.append(_flush_latency(decided, swept, cleared, clock, case))
        if not math.isfinite(latencies[-1]):
            fail("barge_in_unmeasured", case)  # stopped, but no decision or clear was seen
    for number in missed:
        failures.setdefault("barge_in_missed", []).append(number)

    def pct(flags: list[bool]) -> float | None:
        return round(100.0 * sum(flags) / len(flags), 1) if flags else None

    by_pause = {
        row: {"n": len(flags), "cut_off": sum(flags), "pct": pct(flags)}
        for row, flags in sorted(cut_rows.items())
    }
    target_row = cut_rows.get("0.7", [])
    measured = [x for x in latencies if math.isfinite(x)]
    return {
        "cut_off_pct": pct(target_row),
        "cut_off_by_pause": by_pause,
        "backchannel_resumed_pct": (
            round(100.0 * resumed / backchannels, 1) if backchannels else None
        ),
        "backchannel_outcomes": outcomes,
        "backchannel_answered": answered["backchannel"],
        "barge_in_answered": answered["barge_in"],
        "barge_in_missed": len(missed),
        "barge_in_p50_ms": _r(order_statistic(latencies, 50)),
        "barge_in_p99_ms": _r(order_statistic(latencies, 99)),
        "barge_in_max_ms": _r(order_statistic(latencies, 100)),
        "barge_in_measured_p50_ms": _r(order_statistic(measured, 50)),
        "barge_in_stop_p50_ms": _r(order_statistic(stop_ms, 50)),
        "answer_p50_ms": _r(order_statistic(answer_ms, 50)),
        "answer_p95_ms": _r(order_statistic(answer_ms, 95)),
        "cases": counts,
        "failures": {k: len(v) for k, v in failures.items()},
        "failed_cases": failures,
        "case_log": log,
        "ok": not failures and not any(cut_rows.get("none", [])),
    }


def targets_met(report: dict[str, Any]) -> dict[str, bool | None]:
    """Each of the issue's targets: met, not met, or None where the run had no such case."""
    cut, resumed = report["cut_off_pct"], report["backchannel_resumed_pct"]
    p99 = report["barge_in_p99_ms"]
    barge_ins = report["cases"].get("barge_in", 0)
    return {
        "cut_off_pct": None if cut is None else cut <= 5.0,
        "backchannel_resumed_pct": None if resumed is None else resumed >= 95.0,
        "barge_in_missed": None if not barge_ins else report["barge_in_missed"] == 0,
        "barge_in_p99_ms": None if not barge_ins else p99 is not None and p99 <= 5.0,
    }


def _stopped(verdict: Verdict, over_end: float) -> bool:
    """The reply stopped while the caller was still saying their sentence, for good."""
    return (
        verdict.outcome == "stopped"
        and verdict.stopped_at is not None
        and verdict.stopped_at <= over_end
    )


def _first_within(values: list[float], a: float, b: float) -> float | None:
    i = bisect.bisect_left(values, a)
    return values[i] if i < len(values) and values[i] <= b else None


def _flush_latency(
    decisions: list[float], sweeps: list[float], clears: list[float], clock: _Clock, case: Case
) -> float:
    """ms from the case's interruption decision to the next clear on the wire (0 when the
    wire was cleared between the caller's onset and the decision: the bot was paused)."""
    assert case.over is not None and case.over_end is not None
    onset, limit = clock.wall(case.over), clock.wall(case.over_end) + 1.0
    decided = _first_within(decisions, onset, limit)
    if decided is None:
        decided = _first_within(sweeps, onset, limit)
    if decided is None:
        return math.inf  # the bot stopped with no interruption decided: not measurable
    j = bisect.bisect_left(clears, onset)
    if j == len(clears) or clears[j] > limit:
        return math.inf
    return max(0.0, 1000.0 * (clears[j] - decided))


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None and math.isfinite(x) else None


async def run_turns_bench(
    rounds: int = 3,
    *,
    settings: Any = None,
    stt_latency: float = 0.15,
    llm_first_token: float = 0.2,
    tts_first_audio: float = 0.15,
    ms_per_char: float = 60.0,
    kinds: tuple[str, ...] = KINDS,
    pauses: tuple[float, ...] = (0.5, 0.7, 0.7, 1.0),
    tune_gc: bool = False,
) -> dict[str, Any]:
    """Run the script's ``rounds`` on one served call on the fakes; report turn-taking quality.

    Per round: a complete question, a paused sentence per entry of ``pauses``, a backchannel
    and a barge-in (``kinds`` picks which). About 80 s of call per round at the defaults.
    Keys: see the module's docstring; also ``cases`` (counts per kind), ``failures`` and
    ``failed_cases`` (case numbers), ``answer_p50_ms`` (end of a question to the answer
    heard), ``barge_in_stop_p50_ms`` (barge-in onset to the bot's audio stopping),
    ``turn_detection``, ``vad_stop_ms``, the provider latencies, ``llm_requests``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    from voxpipe.config.settings import get_settings
    from voxpipe.processors.turn.params import turn_taking

    wall0 = time.perf_counter()
    settings = settings if settings is not None else get_settings()
    vad_params, turn_cfg = turn_taking(settings)
    vad_stop = vad_params.stop_secs
    decide = max(vad_stop, turn_cfg.max_wait_secs if turn_cfg.mode == "smart" else 0.0)
    providers = stt_latency + llm_first_token + tts_first_audio
    timing = Timing(decide, providers, SHORT_REPLY_SECS + 0.2, LONG_REPLY_SECS + 0.2)
    script = build_script(rounds, timing, pauses=pauses, kinds=kinds)
    book = ReplyBook(ms_per_char)
    replies = _Replies(book, script)
    timeline = [_Turn(text, s, e) for case in script.cases for text, s, e in case.parts]
    arbiters: list[FrameProcessor] = []

    def after_stt() -> list[FrameProcessor]:
        arbiters.extend(served_after_stt(settings))
        return arbiters

    cfg = _Config(
        stt_latency, llm_first_token, tts_first_audio, vad_stop, ms_per_char, "", settings
    )
    call = await _call(
        cfg,
        script.audio,
        timeline,
        _Stamps(),
        tune_gc=tune_gc,
        transport_class=_TurnsTransport,
        replies=replies,
        after_stt=after_stt,
    )
    assert call.transport is not None
    inp = call.input
    assert isinstance(inp, _TurnsInput)
    sink = call.transport.memory_sink
    heard = place([(p.start, p.audio) for p in sink.played()], book)
    report = analyse(
        script,
        heard,
        _Clock(inp),
        book,
        vad_stop_secs=vad_stop,
        decisions=inp.decisions,
        sweeps=inp.sweeps,
        clears=[e.perf for e in sink.clears],
    )
    unknown = sum(h.end - h.start for h in heard if h.reply < 0)
    report.update(
        {
            "turn_detection": turn_cfg.mode,
            "interruption_arbiter": bool(arbiters),
            "vad_stop_ms": round(1000 * vad_stop, 3),
            "stt_latency_ms": round(1000 * stt_latency, 3),
            "llm_first_token_ms": round(1000 * llm_first_token, 3),
            "tts_first_audio_ms": round(1000 * tts_first_audio, 3),
            "rounds": rounds,
            "targets": TARGETS,
            "targets_met": targets_met(report),
            "llm_requests": call.llm_requests,
            "long_replies": replies.long_replies,
            "interruption_decisions": len(inp.decisions),
            "smart_turn_decisions": inp.turn_gate.decisions if inp.turn_gate is not None else 0,
            "smart_turn_incomplete": inp.turn_gate.incomplete if inp.turn_gate is not None else 0,
            "wire_clears": len(sink.clears),
            "heard_unplaced_secs": round(unknown, 3),
            "call_seconds": round(script.seconds, 2),
            "caller_chunk_late_p95_ms": round(float(np.percentile(call.chunk_late_ms, 95)), 3),
            "loop": call.loop,
            "gc": GC_TUNED if tune_gc else GC_DEFAULT,
            "wall_seconds": round(time.perf_counter() - wall0, 2),
        }
    )
    return report


def run_turns(
    rounds: int = 3, *, loop: str = "auto", tune_gc: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """Run ``run_turns_bench`` as ``voxpipe serve`` runs a call (uvloop when installed, the
    server's GC settings) and return its report."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(run_turns_bench(rounds, tune_gc=tune_gc, **kwargs))
