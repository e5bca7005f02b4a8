"""`voxpipe bench soak`: a server kept at N concurrent calls for a long time, RSS and lateness
watched for drift.

The server runs in its own process (as in ``bench calls``); this process keeps ``--calls``
Twilio callers connected for ``--minutes``: each call lasts ``--call-seconds`` and is replaced
by a new one as it ends, so calls start and end all the time, as in production, and whatever a
call leaves behind accumulates. Every ``--window`` seconds the server's RSS and CPU are sampled
and the p99 lateness of the chunks received in that window is computed.

Reported: per-window rows (minute, live calls, rss_mb, cpu_pct, p99_late_ms), the RSS growth
from the first window after warm-up (the first quarter of the run, at least 2 windows) to the
last, the spread of the windows' p99 lateness, the server's full collections after ended calls
(``gc_sweeps``: how many, their mean and the bucket bound of the longest), and every failed
call (a call that did not connect, raised, or heard nothing is a failure, never retried).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voxpipe.bench.prom import counter_total, histogram_summary
from voxpipe.bench.server_proc import (
    DEFAULT_BOT,
    caller_audio,
    cpu_s,
    rss,
    server_processes,
    start_server,
)
from voxpipe.testing.twilio_caller import CallerLog, chunk_lateness

__all__ = ["run_soak_bench", "soak_verdict"]


@dataclass(slots=True)
class _Window:
    start: float
    late: list[float] = field(default_factory=list)


def soak_verdict(
    rows: list[dict[str, float]], *, warmup: int, max_growth_pct: float = 5.0
) -> dict[str, Any]:
    """RSS growth and lateness stability over the windows after ``warmup``."""
    steady = rows[warmup:] or rows
    first, last = steady[0]["rss_mb"], steady[-1]["rss_mb"]
    growth = (last - first) / first * 100 if first else 0.0
    p99s = [r["p99_late_ms"] for r in steady]
    return {
        "rss_first_mb": round(first, 1),
        "rss_last_mb": round(last, 1),
        "rss_growth_pct": round(growth, 2),
        "rss_flat": growth < max_growth_pct,
        "p99_late_ms_min": round(min(p99s, default=0.0), 2),
        "p99_late_ms_max": round(max(p99s, default=0.0), 2),
    }


async def _soak(
    port: int,
    server_pid: int,
    *,
    calls: int,
    minutes: float,
    call_seconds: float,
    window_s: float,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    import httpx

    from voxpipe.testing.twilio_caller import TwilioCaller

    base = f"http://127.0.0.1:{port}"
    speech, voice = caller_audio()
    rng = random.Random(4321)
    server = server_processes(server_pid, 1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    end = t0 + minutes * 60
    windows = [_Window(t0)]
    live = 0
    done = 0
    failures: list[str] = []

    def window_of(t: float) -> _Window:
        index = min(int((t - t0) / window_s), len(windows) - 1)
        return windows[max(index, 0)]

    async def one_call() -> None:
        nonlocal live, done
        offset = rng.randrange(0, len(speech) // 160) * 160
        loops = int(call_seconds * 8000 / len(speech)) + 2
        audio = (speech[offset:] + speech * loops)[: int(call_seconds * 8000)]
        log: CallerLog | None = None
        connected = False
        started = 0.0  # loop time of the call's ``start``: the log's times count from it

        def on_progress(_log: CallerLog) -> bool:
            nonlocal connected, live, started
            if not connected:
                connected, live, started = True, live + 1, loop.time()
            return False

        try:
            caller = await TwilioCaller.dial(
                base, audio=audio, keep_audio=False, tail_silence_s=1.0, http=http
            )
            log = await caller.run(
                until=on_progress, hangup_after=call_seconds + 1.0, timeout=call_seconds + 30
            )
        except Exception as exc:  # counted, never retried
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            if connected:
                live -= 1
        done += 1
        if log is None:
            return
        if log.errors or log.media_seconds <= 0:
            failures.append("; ".join(e for _, e in log.errors)[:200] or "heard nothing")
            return
        heard = [i for i, t in enumerate(log.media_times) if log.stop_t is None or t < log.stop_t]
        times = [log.media_times[i] for i in heard]
        late = chunk_lateness(times, [log.media_sizes[i] for i in heard])
        # Each chunk's lateness goes to the window it arrived in.
        for t, value in zip(times, late, strict=False):
            window_of(started + t).late.append(value)

    async def lane(i: int) -> None:
        await asyncio.sleep(i * min(call_seconds, 10.0) / calls)  # stagger the lanes
        while loop.time() < end:
            await one_call()

    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20))
    lanes = [loop.create_task(lane(i)) for i in range(calls)]
    samples: list[tuple[float, int, float]] = []  # (t, rss, cpu_s) at each window's end
    cpu_prev, t_prev = cpu_s(server), loop.time()
    while loop.time() < end:
        await asyncio.sleep(window_s)
        now = loop.time()
        cpu = cpu_s(server)
        samples.append((now, rss(server), (cpu - cpu_prev) / (now - t_prev) * 100))
        cpu_prev, t_prev = cpu, now
        windows.append(_Window(now))
        if progress:
            progress(
                f"  {(now - t0) / 60:5.1f} min: {live} calls up, {done} done, "
                f"rss {samples[-1][1] / 2**20:.1f} MB, cpu {samples[-1][2]:.0f}%, "
                f"{len(failures)} failed"
            )
    await asyncio.gather(*lanes)
    sweeps = gc_sweeps((await http.get(base + "/metrics")).text)
    await http.aclose()
    rows = []
    for (t, rss_bytes, cpu_pct), window in zip(samples, windows, strict=False):
        ordered = sorted(window.late)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else 0.0
        rows.append(
            {
                "minute": round((t - t0) / 60, 2),
                "rss_mb": round(rss_bytes / 2**20, 1),
                "cpu_pct": round(cpu_pct, 1),
                "chunks": len(ordered),
                "p99_late_ms": round(p99 * 1000, 2),
            }
        )
    warmup = max(2, len(rows) // 4)
    return {
        "ok": not failures and soak_verdict(rows, warmup=warmup)["rss_flat"],
        "calls": calls,
        "minutes": minutes,
        "call_seconds": call_seconds,
        "voice": voice,
        "calls_done": done,
        "failed_calls": len(failures),
        "errors": sorted(set(failures))[:5],
        **soak_verdict(rows, warmup=warmup),
        **sweeps,
        "windows": rows,
    }


def gc_sweeps(exposition: str) -> dict[str, Any]:
    """The server's full collections after ended calls, from its ``/metrics`` text: how many,
    their mean, and the bucket bound under which the longest fell (how long one held the loop).
    """
    sweeps = histogram_summary(exposition, "voxpipe_gc_sweep_seconds")
    # None: the longest was beyond the last bucket (+Inf is no number in JSON).
    longest = sweeps.max_under
    bound = round(longest * 1000, 1) if math.isfinite(longest) else None
    count, total = sweeps.count, sweeps.total
    freed = counter_total(exposition, "voxpipe_gc_freed_objects")
    return {
        "gc_sweeps": count,
        # What the sweeps found: ended calls left to the cycle collector (0 when reference
        # counting freed them as they ended).
        "gc_freed_objects": int(freed),
        "gc_sweep_ms_mean": round(total / count * 1000, 2) if count else 0.0,
        "gc_sweep_ms_max_under": bound if count else 0.0,
    }


def run_soak_bench(
    *,
    calls: int = 100,
    minutes: float = 30.0,
    call_seconds: float = 60.0,
    window_s: float = 60.0,
    bot: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the soak (server in a subprocess on loopback) and return its numbers."""
    if calls < 1 or minutes <= 0 or call_seconds <= 0 or window_s <= 0:
        raise ValueError("bench soak needs --calls >= 1 and positive --minutes/--seconds")
    proc, port = start_server(str(bot or DEFAULT_BOT))
    try:
        if progress:
            progress(f"bench soak: server pid {proc.pid}; {calls} calls for {minutes:g} min")
        return asyncio.run(
            _soak(
                port,
                proc.pid,
                calls=calls,
                minutes=minutes,
                call_seconds=call_seconds,
                window_s=window_s,
                progress=progress,
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)
