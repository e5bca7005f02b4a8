"""`voxpipe bench calls`: many simulated Twilio callers against a real echo-bot server.

The server runs in its own process on loopback (uvicorn, the shared batched Silero VAD, the
echo bot); this process dials N calls through the voice webhook and speaks a recording into
each in real time with ``TwilioCaller``, starting them over a ramp and at different points
of the recording so their speech is not in lockstep. The echo bot plays each utterance back,
so every call receives bot audio paced by the server's output transport.

Reported: the p99 (and p50, max) lateness of the 20 ms chunks the callers received against
real-time playout (see ``chunk_lateness``: how far a chunk arrived after it was due to play,
0 when the far end's buffer still held audio), and the server process's CPU and memory per
call (psutil, sampled while every call is up). Lateness is measured by the callers, so a
saturated bench process would show up in it too: its own CPU is reported as well.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxpipe.bench.server_proc import (
    DEFAULT_BOT,
    SPEECH,
    caller_audio,
    cpu_s,
    rss,
    server_processes,
    start_server,
    start_workers,
)
from voxpipe.testing.twilio_caller import CallerLog, chunk_lateness

__all__ = ["CallOutcome", "bot_needs_providers", "run_calls_bench", "summarize_calls"]


@dataclass(slots=True)
class CallOutcome:
    """One simulated call: whether its media stream opened, what the caller saw, how it failed."""

    connected: bool = False
    log: CallerLog | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Connected, ended without an error and heard the bot."""
        return (
            self.connected
            and self.log is not None
            and not self.error
            and (self.log.media_seconds > 0)
        )


def summarize_calls(
    outcomes: list[CallOutcome],
    *,
    seconds: float,
    server_cpu_pct: float,
    client_cpu_pct: float,
    live_calls: float,
    rss_peak: int,
    rss_idle: int,
    voice: str,
    wall_s: float,
) -> dict[str, Any]:
    """The report: lateness over the calls that worked, cost per call over the calls that ran.

    A call that never connected, raised, or heard nothing back is failed (``ok`` is then
    false). CPU and memory are divided by ``live_calls``, the calls up while they were
    sampled, never by the number dialled.
    """
    late: list[float] = []
    echo_s = 0.0
    worked = [o for o in outcomes if o.ok]
    for o in worked:
        log = o.log
        assert log is not None
        # Chunks still arriving after the caller hung up are heard by no one.
        heard = [i for i, t in enumerate(log.media_times) if log.stop_t is None or t < log.stop_t]
        late += chunk_lateness(
            [log.media_times[i] for i in heard], [log.media_sizes[i] for i in heard]
        )
        echo_s += log.media_seconds
    failed = len(outcomes) - len(worked)
    never_connected = sum(1 for o in outcomes if not o.connected)
    ran = live_calls if live_calls > 0 else None
    errors = sorted({o.error for o in outcomes if o.error})
    return {
        "ok": failed == 0,
        "calls": len(outcomes),
        "seconds": seconds,
        "voice": voice,
        "failed_calls": failed,
        "never_connected": never_connected,
        "calls_measured": round(live_calls, 1),
        "errors": errors[:5],
        "chunks": len(late),
        "p50_late_ms": round(_percentile(late, 50) * 1000, 2),
        "p99_late_ms": round(_percentile(late, 99) * 1000, 2),
        "p999_late_ms": round(_percentile(late, 99.9) * 1000, 2),
        "max_late_ms": round(max(late, default=0.0) * 1000, 2),
        "echo_s_per_call": round(echo_s / len(worked), 2) if worked else 0.0,
        "server_cpu_pct": round(server_cpu_pct, 1),
        "cpu_pct_per_call": round(server_cpu_pct / ran, 3) if ran else None,
        "server_rss_mb": round(rss_peak / 2**20, 1),
        "rss_mb_per_call": round((rss_peak - rss_idle) / 2**20 / ran, 3) if ran else None,
        "client_cpu_pct": round(client_cpu_pct, 1),
        "wall_s": round(wall_s, 1),
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _bench(
    port: int,
    server_pid: int,
    *,
    workers: int = 1,
    calls: int,
    seconds: float,
    ramp_s: float,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    import httpx
    import psutil

    from voxpipe.testing.twilio_caller import TwilioCaller

    base = f"http://127.0.0.1:{port}"
    speech, voice = caller_audio()
    if voice != "recording" and progress:
        progress(f"  {SPEECH} not found: the callers speak a synthetic voice (reported)")
    rng = random.Random(1234)
    server = server_processes(server_pid, workers)
    me = psutil.Process()
    rss_idle = rss(server)
    loop = asyncio.get_running_loop()
    all_settled = asyncio.Event()  # every call connected or failed
    outcomes = [CallOutcome() for _ in range(calls)]
    settled = 0
    live = 0  # calls whose media stream is open now

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == calls:
            all_settled.set()

    async def one_call(i: int) -> None:
        nonlocal live
        outcome = outcomes[i]

        def on_progress(_log: CallerLog) -> bool:
            # ``run`` calls this first right after the stream opened and ``start`` went out.
            nonlocal live
            if not outcome.connected:
                outcome.connected = True
                live += 1
                settle()
            return False

        await asyncio.sleep(ramp_s * i / max(1, calls))
        offset = rng.randrange(0, len(speech) // 160) * 160
        loops = int(seconds * 8000 / len(speech)) + 2
        audio = (speech[offset:] + speech * loops)[: int(seconds * 8000)]
        try:
            caller = await TwilioCaller.dial(
                base, audio=audio, keep_audio=False, tail_silence_s=1.5, http=http
            )
            outcome.log = await caller.run(
                until=on_progress, hangup_after=seconds + 1.5, timeout=seconds + 30
            )
        except Exception as exc:  # a failed call is counted, not fatal to the bench
            outcome.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if outcome.connected:
                live -= 1
            else:
                settle()

    t0 = time.perf_counter()
    # One HTTP client for every dial: building one per call would stall this loop.
    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20))
    runs = [loop.create_task(one_call(i)) for i in range(calls)]
    # Sample CPU and memory once every call is up (or has failed), for most of a call's length.
    try:
        async with asyncio.timeout(ramp_s + 60):
            await all_settled.wait()
    except TimeoutError:
        pass
    await asyncio.sleep(min(2.0, seconds / 4))  # let the calls settle into speaking
    window = max(1.0, seconds / 2)
    cpu0, mine0, w0 = cpu_s(server), me.cpu_times(), time.perf_counter()
    rss_peak = rss(server)
    if progress:
        progress(f"  {live} of {calls} calls up; measuring for {window:.0f} s")
    steps = max(1, int(window))
    live_samples = [live]
    for _ in range(steps):
        await asyncio.sleep(window / steps)
        rss_peak = max(rss_peak, rss(server))
        live_samples.append(live)
    cpu1, mine1, w1 = cpu_s(server), me.cpu_times(), time.perf_counter()
    await asyncio.gather(*runs)
    await http.aclose()
    elapsed = w1 - w0
    calls_by_worker = Counter(o.log.worker for o in outcomes if o.log is not None and o.log.worker)
    return {
        **summarize_calls(
            outcomes,
            seconds=seconds,
            server_cpu_pct=(cpu1 - cpu0) / elapsed * 100,
            client_cpu_pct=(mine1.user + mine1.system - mine0.user - mine0.system) / elapsed * 100,
            live_calls=sum(live_samples) / len(live_samples),
            rss_peak=rss_peak,
            rss_idle=rss_idle,
            voice=voice,
            wall_s=time.perf_counter() - t0,
        ),
        "workers": workers,
        # How the kernel spread the calls: calls per worker pid (x-voxpipe-worker).
        "calls_per_worker": sorted(calls_by_worker.values(), reverse=True),
    }


_PROVIDER_HINTS = ("stt_from_settings", "llm_from_settings", "tts_from_settings")


def bot_needs_providers(bot: str | Path) -> bool:
    """Whether a bot file builds provider services from settings (STT, LLM or TTS)."""
    try:
        source = Path(bot).read_text(encoding="utf-8")
    except OSError:
        return False
    return any(hint in source for hint in _PROVIDER_HINTS)


def run_calls_bench(
    *,
    calls: int = 200,
    seconds: float = 20.0,
    bot: str | None = None,
    ramp_s: float = 5.0,
    workers: int = 1,
    providers: str = "auto",
    provider_latency: dict[str, float] | None = None,
    pipecat: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (server in a subprocess on loopback) and return its numbers.

    ``workers`` > 1 serves with `voxpipe serve --workers N`: CPU and memory are the workers'.
    ``providers``: "fakes" runs full conversations against a bot whose providers are the
    stand-ins of ``provider_fakes`` (see ``agent_calls``; ``provider_latency`` in seconds by
    "stt"/"llm"/"tts", ``pipecat`` None: Pipecat side by side where installed); "none" the
    echo-style calls; "auto" chooses "fakes" for a bot that builds provider services.
    """
    if calls < 1 or seconds <= 0 or workers < 1:
        raise ValueError("bench calls needs --calls >= 1, --seconds > 0 and --workers >= 1")
    bot_file = str(bot or DEFAULT_BOT)
    if providers == "auto":
        providers = "fakes" if bot_needs_providers(bot_file) else "none"
    if providers == "fakes":
        if workers != 1:
            raise ValueError("bench calls --bot with provider stand-ins serves one worker")
        from voxpipe.bench.agent_calls import run_agent_calls_bench
        from voxpipe.bench.provider_fakes import ProviderLatency

        return run_agent_calls_bench(
            bot=bot_file,
            calls=calls,
            ramp_s=ramp_s,
            latency=ProviderLatency(**(provider_latency or {})),
            pipecat=pipecat,
            progress=progress,
        )
    if providers != "none":
        raise ValueError(f"bench calls: --providers must be auto, fakes or none, not {providers!r}")
    proc, port = start_server(bot_file) if workers == 1 else start_workers(bot_file, workers)
    try:
        if progress:
            progress(f"bench calls: server pid {proc.pid} on port {port}; dialling {calls} calls")
        return asyncio.run(
            _bench(
                port,
                proc.pid,
                workers=workers,
                calls=calls,
                seconds=seconds,
                ramp_s=ramp_s,
                progress=progress,
            )
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
