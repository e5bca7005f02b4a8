"""`voxpipe bench calls --bot BOT`: full agent calls under load, and Pipecat side by side.

Three kinds of process on loopback: the provider stand-ins (``provider_fakes``: Deepgram,
OpenAI and ElevenLabs at fixed latencies), the server under test (``voxpipe serve``'s app for
BOT, its provider settings pointed at the stand-ins; then, where Pipecat is installed,
Pipecat's own Twilio bot, ``pipecat_bot``, on the same stand-ins), and this process, where N
simulated Twilio callers hold a conversation each (``Conversation``: greeting, two questions,
two answers), started over a ramp.

Reported per server: ``calls``, ``failed_calls`` (a call that did not connect, got no greeting
within 30 s or no answer within 15 s), ``server_cpu_pct`` and ``cpu_pct_per_call`` (the
server's CPU while every call was up, divided by the calls up: sampled from the moment the last
call connected to the moment the first one that held its whole conversation hung up),
``rss_mb_per_call`` (peak RSS then, minus the idle server's, per call), ``p99_late_ms``
(lateness of the bot audio the callers received against real-time playout, see
``chunk_lateness``), ``v2v_p50_ms`` / ``v2v_p95_ms`` (per question, from the moment the chunk
holding the end of the caller's speech went out to the first bot audio received; a question the
bot started answering before it was finished counts in ``talked_over_turns`` instead), and,
apart, the stand-ins' CPU (``fakes_cpu_pct``) and the callers' own (``client_cpu_pct``): a
saturated caller process shows up in lateness and latency too; ``greeting_p50_ms`` is stream
start to the greeting's first audio, and ``cpu_pct_per_call_whole_run`` the server's CPU over
the whole run divided by the seconds of call it served (it holds when a busy machine kept the
server from the CPU it needed while the calls were up). With one call, ``stages_ms`` breaks
each turn down by the stand-ins' stamps (Finalize received, final transcript sent, chat request
received, first token sent, text received by the TTS, first audio sent; ms after the end of
speech).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.bench.conversation import Conversation, Question
from voxpipe.bench.prom import counter_total, histogram_summary
from voxpipe.bench.provider_fakes import (
    STAMP_KINDS,
    ProviderLatency,
    provider_env,
    start_provider_fakes,
)
from voxpipe.testing.twilio_caller import chunk_lateness

__all__ = ["AgentCall", "run_agent_calls_bench", "summarize_agent_calls"]

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech_16k.wav"
_STAMP_SLACK_S = 0.05
REPORT_KEYS = (
    "calls",
    "failed_calls",
    "server_cpu_pct",
    "cpu_pct_per_call",
    "rss_mb_per_call",
    "p99_late_ms",
    "v2v_p50_ms",
    "v2v_p95_ms",
)


@dataclass(slots=True)
class AgentCall:
    """One simulated conversation: whether it connected, its turns, how it failed."""

    connected: bool = False
    ended: bool = False
    v2v_s: list[float] = field(default_factory=list)
    talked_over: int = 0  # questions the bot answered before they were finished
    greeting_s: float | None = None  # stream start to the greeting's first audio
    late_s: list[float] = field(default_factory=list)
    # Per answered question: (end of speech, first bot audio) on time.perf_counter.
    turns_at: list[tuple[float, float]] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.connected and not self.error


def questions(speech: Path = SPEECH) -> list[Question]:
    """The caller's two questions: the recording's first two utterances, 8 kHz mu-law."""
    from voxpipe.bench.latency import _utterances

    clips = _utterances(speech, pad=0.1)[:2]
    return [Question(clip, round(end * 8000)) for clip, _start, end, _text in clips]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 1)


def summarize_agent_calls(
    calls: list[AgentCall],
    *,
    server_cpu_pct: float,
    live_calls: float,
    rss_peak: int,
    rss_idle: int,
    fakes_cpu_pct: float,
    client_cpu_pct: float,
) -> dict[str, Any]:
    """One server's report (the keys of ``REPORT_KEYS`` and a few more)."""
    worked = [c for c in calls if c.ok]
    v2v = [x for c in worked for x in c.v2v_s]
    late = [x for c in worked for x in c.late_s]
    greet = [c.greeting_s for c in calls if c.greeting_s is not None]
    ran = live_calls if live_calls > 0 else None
    return {
        "calls": len(calls),
        "failed_calls": len(calls) - len(worked),
        "server_cpu_pct": round(server_cpu_pct, 1),
        "cpu_pct_per_call": round(server_cpu_pct / ran, 3) if ran else None,
        "rss_mb_per_call": round((rss_peak - rss_idle) / 2**20 / ran, 3) if ran else None,
        "p99_late_ms": _ms(_pct(late, 99)) if late else 0.0,
        "v2v_p50_ms": _ms(_pct(v2v, 50)),
        "v2v_p95_ms": _ms(_pct(v2v, 95)),
        "v2v_max_ms": _ms(max(v2v, default=None)),
        "turns": len(v2v),
        "greeting_p50_ms": _ms(_pct(greet, 50)),
        "greeting_max_ms": _ms(max(greet, default=None)),
        # Answers that started before the question was finished (not in v2v).
        "talked_over_turns": sum(c.talked_over for c in worked),
        "calls_measured": round(live_calls, 1),
        "server_rss_mb": round(rss_peak / 2**20, 1),
        "fakes_cpu_pct": round(fakes_cpu_pct, 1),
        "client_cpu_pct": round(client_cpu_pct, 1),
        "call_s_mean": round(sum(c.seconds for c in worked) / len(worked), 1) if worked else None,
        "errors": sorted({c.error for c in calls if c.error})[:5],
    }


def _cpu_s(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _drive(
    port: int,
    server_pid: int,
    fakes_pid: int,
    *,
    calls: int,
    ramp_s: float,
    progress: Callable[[str], None] | None,
    voxpipe_metrics: bool = False,
) -> dict[str, Any]:
    import httpx
    import psutil

    from voxpipe.testing.twilio_caller import TwilioCaller

    base = f"http://127.0.0.1:{port}"
    asks = questions()
    server, fakes, me = psutil.Process(server_pid), psutil.Process(fakes_pid), psutil.Process()
    rss_idle = int(server.memory_info().rss)
    results = [AgentCall() for _ in range(calls)]
    state = {"connected": 0, "settled": 0, "ended": 0, "live": 0}
    all_up = asyncio.Event()  # every call connected (or failed)
    # The window ends when a call that held its whole conversation hangs up, or when half the
    # calls are gone (calls failing early do not cut it short: the calls up are averaged).
    first_end = asyncio.Event()
    rng = random.Random(1234)
    jitter = [rng.uniform(0.0, 0.5) for _ in range(calls)]

    def settle() -> None:
        state["settled"] += 1
        if state["settled"] == calls:
            all_up.set()

    async def one_call(i: int) -> None:
        res = results[i]
        await asyncio.sleep(ramp_s * i / max(1, calls) + jitter[i] * (ramp_s > 0))
        convo: Conversation | None = None
        caller: TwilioCaller | None = None
        try:
            caller = await TwilioCaller.dial(base, keep_audio=False, http=http)
            convo = Conversation(caller, asks)
            convo_ref = convo

            def until(log: Any) -> bool:
                if not res.connected:
                    res.connected = True
                    state["live"] += 1
                    settle()
                return convo_ref(log)

            log = await caller.run(until=until, timeout=90.0)
            if not convo.done and not convo.error:
                convo.error = "hung up before the conversation ended (timeout or closed)"
            res.error = convo.error
            res.v2v_s = [t.v2v_s for t in convo.turns if t.v2v_s is not None and not t.talked_over]
            res.talked_over = sum(t.talked_over for t in convo.turns)
            res.greeting_s = log.media_times[0] if log.media_times else None
            # The log's clock (the loop's, CLOCK_MONOTONIC) on perf_counter's (the same clock
            # on Linux, other processes' stamps included).
            shift = time.perf_counter() - caller.elapsed
            res.turns_at = [
                (shift + t.speech_end, shift + t.first_reply)
                for t in convo.turns
                if t.first_reply is not None and not t.talked_over
            ]
            heard = [
                k for k, t in enumerate(log.media_times) if log.stop_t is None or t < log.stop_t
            ]
            res.late_s = chunk_lateness(
                [log.media_times[k] for k in heard], [log.media_sizes[k] for k in heard]
            )
            res.seconds = log.stop_t or caller.elapsed
        except Exception as exc:  # a failed call is counted, not fatal to the bench
            res.error = f"{type(exc).__name__}: {exc}"[:200]
            if res.connected and caller is not None:
                res.seconds = caller.elapsed
        finally:
            if res.connected:
                state["live"] -= 1
                state["ended"] += 1
                if not res.error or 2 * state["ended"] >= calls:
                    first_end.set()
            else:
                settle()

    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20))
    loop = asyncio.get_running_loop()
    t0, cpu_start = time.perf_counter(), _cpu_s(server)
    runs = [loop.create_task(one_call(i)) for i in range(calls)]
    try:
        async with asyncio.timeout(ramp_s + 60):
            await all_up.wait()
    except TimeoutError:
        pass
    # Every call is up: measure until ``first_end`` (at least a second).
    c0, f0, m0, w0 = _cpu_s(server), _cpu_s(fakes), _cpu_s(me), time.perf_counter()
    if progress:
        progress(f"  {state['live']} of {calls} calls up; measuring until one ends")
    rss_peak = int(server.memory_info().rss)
    samples = [state["live"]]
    while not first_end.is_set() or time.perf_counter() - w0 < 1.0:
        waiter = loop.create_task(first_end.wait())
        await asyncio.wait({waiter}, timeout=0.5)
        waiter.cancel()
        rss_peak = max(rss_peak, int(server.memory_info().rss))
        samples.append(state["live"])
        if all(r.done() for r in runs):
            break
    c1, f1, m1, w1 = _cpu_s(server), _cpu_s(fakes), _cpu_s(me), time.perf_counter()
    await asyncio.gather(*runs)
    cpu_total = _cpu_s(server) - cpu_start
    decisions = await _turn_decisions(http, base) if voxpipe_metrics else None
    await http.aclose()
    span = max(w1 - w0, 1e-6)
    report = summarize_agent_calls(
        results,
        server_cpu_pct=(c1 - c0) / span * 100,
        live_calls=sum(samples) / len(samples),
        rss_peak=rss_peak,
        rss_idle=rss_idle,
        fakes_cpu_pct=(f1 - f0) / span * 100,
        client_cpu_pct=(m1 - m0) / span * 100,
    )
    report["window_s"] = round(span, 1)
    if decisions is not None:
        report.update(decisions)
    # The whole run's server CPU over the seconds of call it served: a figure that holds when
    # the server could not get the CPU it needed while the calls were up (a busy machine).
    call_s = sum(c.seconds for c in results if c.connected)
    report["server_cpu_s"] = round(cpu_total, 1)
    report["cpu_pct_per_call_whole_run"] = round(100 * cpu_total / call_s, 3) if call_s else None
    # The machine's load (1-minute average) as the window ended: other work competes for it.
    report["load_avg_1m"] = round(os.getloadavg()[0], 2)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    report["v2v_ms"] = sorted(round(1000 * x, 1) for c in results if c.ok for x in c.v2v_s)[:50]
    report["_turns_at"] = [t for c in results if c.ok for t in c.turns_at]
    return report


async def _turn_decisions(http: Any, base: str) -> dict[str, Any]:
    """Smart Turn decisions from the server's /metrics: how many, their mean wall time (the
    wait for the worker's inference thread included) and a bound on the longest."""
    text = (await http.get(base + "/metrics")).text
    found = histogram_summary(text, "voxpipe_stage_latency_seconds", {"metric": "turn_decision"})
    bound = found.max_under
    shed = counter_total(text, "voxpipe_turn_decisions_shed")
    return {
        "turn_decisions": found.count,
        # Skipped under overload (TURN_SHED_AFTER_S): those turns ended on the VAD's silence.
        "turn_decisions_shed": int(shed),
        "turn_decision_ms_mean": round(found.mean * 1000, 1),
        # None: beyond the last bucket (+Inf is no number in JSON).
        "turn_decision_ms_max_under": round(bound * 1000, 1) if math.isfinite(bound) else None,
    }


def _start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, cwd=str(ROOT), env={**env, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints its port once it listens
    try:
        return proc, int(json.loads(line)["port"])
    except (ValueError, KeyError, TypeError):
        proc.kill()
        raise RuntimeError(f"{cmd[2]} did not start (said {line!r})") from None


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _side(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    fakes_pid: int,
    *,
    calls: int,
    ramp_s: float,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    proc, port = _start(cmd, env)
    try:
        if progress:
            progress(f"bench calls --bot: {name} pid {proc.pid} on port {port}; {calls} calls")
        return asyncio.run(
            _drive(
                port,
                proc.pid,
                fakes_pid,
                calls=calls,
                ramp_s=ramp_s,
                progress=progress,
                voxpipe_metrics=name == "voxpipe",
            )
        )
    finally:
        _stop(proc)


def pipecat_available() -> bool:
    """Pipecat (the `bench` extra) with the modules its Twilio bot needs is importable."""
    from voxpipe.bench.pipecat_engine import pipecat_available as found

    return found()


def run_agent_calls_bench(
    *,
    bot: str,
    calls: int = 20,
    ramp_s: float = 5.0,
    providers: str = "fakes",
    latency: ProviderLatency | None = None,
    pipecat: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the conversations against voxpipe serving ``bot`` (and Pipecat); return the report.

    ``pipecat``: None runs Pipecat's side where it is installed, True requires it, False skips.
    """
    if calls < 1 or ramp_s < 0:
        raise ValueError("bench calls --bot needs --calls >= 1 and --ramp >= 0")
    if providers != "fakes":
        raise ValueError("bench calls --bot: --providers fakes is the only choice")
    latency = latency or ProviderLatency()
    with_pipecat = pipecat_available() if pipecat is None else pipecat
    if with_pipecat and not pipecat_available():
        raise ValueError("Pipecat is not installed: pip install 'voxpipe[bench]'")
    tmpdir = tempfile.TemporaryDirectory(prefix="voxpipe-bench-calls-")
    tmp = tmpdir.name
    # One call: the stand-ins stamp what they receive and send, for a per-stage breakdown.
    stamps_file = Path(tmp) / "stamps.json" if calls == 1 else None
    fakes, urls = start_provider_fakes(latency, stamps=stamps_file, log=progress)
    theirs: dict[str, Any] | None = None
    try:
        env = {
            **os.environ,
            **provider_env(urls),
            "CONSENT_MODE": "off",  # no recording notice before the greeting
            "SQLITE_PATH": str(Path(tmp) / "bench.sqlite3"),
            "LOG_LEVEL": "ERROR",
        }
        voxpipe_cmd = [sys.executable, "-m", "voxpipe.bench.server_proc", "--serve", bot]
        side = {"calls": calls, "ramp_s": ramp_s, "progress": progress}
        ours = _side("voxpipe", voxpipe_cmd, env, fakes.pid, **side)  # type: ignore[arg-type]
        if with_pipecat:
            pipecat_cmd = [
                sys.executable,
                "-W",
                "ignore::DeprecationWarning",  # Pipecat 1.x's own renames, at every call
                "-m",
                "voxpipe.bench.pipecat_bot",
                "--deepgram",
                urls["deepgram"],
                "--openai",
                urls["openai"],
                "--elevenlabs",
                urls["elevenlabs"],
            ]
            theirs = _side("pipecat", pipecat_cmd, env, fakes.pid, **side)  # type: ignore[arg-type]
    finally:
        _stop(fakes)
        stamps = _read_stamps(stamps_file)
        tmpdir.cleanup()
    for side_report in (ours, theirs):
        if side_report is not None:
            turns_at = side_report.pop("_turns_at")
            if stamps:
                side_report["stages_ms"] = stage_breakdown(turns_at, stamps)
    report: dict[str, Any] = {
        **ours,
        "bot": bot,
        "providers": providers,
        "provider_latency_ms": latency.as_ms(),
        "ok": ours["failed_calls"] == 0,
    }
    if theirs is not None:
        report["pipecat"] = theirs
        report["pipecat_vs_voxpipe"] = _ratios(ours, theirs)
    else:
        report["pipecat"] = None
        report["pipecat_note"] = "Pipecat not run (not installed, or --no-pipecat)"
    return report


def _read_stamps(path: Path | None) -> list[tuple[float, str]]:
    if path is None or not path.is_file():
        return []
    return [(float(t), str(kind)) for t, kind in json.loads(path.read_text())]


def stage_breakdown(
    turns_at: list[tuple[float, float]], stamps: list[tuple[float, str]]
) -> dict[str, Any]:
    """ms from the end of the caller's speech to each stand-in stamp, and to the answer.

    A stamp counts for a turn when it is the first of its kind between the end of speech and
    the first bot audio the caller received (one call at a time: the stamps are unambiguous;
    ``tts_audio_sent`` is stamped once the send returned, up to ``_STAMP_SLACK_S`` later).
    Returns the medians and each turn's figures (``turns``).
    """
    turns: list[dict[str, float | None]] = []
    for end, reply in turns_at:
        turn: dict[str, float | None] = {}
        for kind in STAMP_KINDS:
            t = next(
                (t for t, k in stamps if k == kind and end <= t <= reply + _STAMP_SLACK_S), None
            )
            turn[kind] = None if t is None else _ms(t - end)
        turn["caller_heard"] = _ms(reply - end)
        turns.append(turn)
    out: dict[str, Any] = {}
    for kind in (*STAMP_KINDS, "caller_heard"):
        values = [v for turn in turns if (v := turn[kind]) is not None]
        out[kind] = _pct(values, 50)
    out["turns"] = turns
    return out


def _ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """Pipecat's figure over voxpipe's: > 1 means voxpipe uses less (or answers sooner)."""

    def ratio(key: str) -> float | None:
        a, b = ours.get(key), theirs.get(key)
        if not isinstance(a, int | float) or not isinstance(b, int | float) or a <= 0:
            return None
        return round(b / a, 2)

    return {
        "cpu_per_call": ratio("cpu_pct_per_call"),
        "rss_per_call": ratio("rss_mb_per_call"),
        "v2v_p50": ratio("v2v_p50_ms"),
        "v2v_p95": ratio("v2v_p95_ms"),
    }
