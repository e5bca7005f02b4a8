"""`voxpipe bench leak`: many calls one after another in one worker, its memory should stay flat.

The server runs in its own process as in ``voxpipe bench calls`` (one worker, the shared
batched VAD, the bot). ``--lanes`` callers each dial calls back to back (a call starts when the
lane's previous one has ended on the server), ``--calls`` in all: each speaks a slice of the
test recording, hears the echo and hangs up. The server's RSS is sampled after every
``calls / 10`` calls; growth is measured from the sample after the first tenth (warm-up:
lazy imports, caches and allocator arenas fill then) to the end. A leak of a few KB per call
shows as a steady climb; a flat series is what ``growth_pct`` under 5 means.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from voxpipe.bench.server_proc import DEFAULT_BOT, caller_audio, start_server

__all__ = ["run_leak_bench"]

CALL_SPEECH_S = 1.2  # what each caller says (the echo plays it back after)
CALL_S = 2.4  # when the caller hangs up


async def _bench(
    port: int,
    server_pid: int,
    *,
    calls: int,
    lanes: int,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    import httpx
    import psutil

    from voxpipe.testing.twilio_caller import TwilioCaller

    base = f"http://127.0.0.1:{port}"
    speech, voice = caller_audio()
    server = psutil.Process(server_pid)
    step = max(1, calls // 10)
    rss: list[tuple[int, float]] = [(0, server.memory_info().rss / 2**20)]
    done = 0
    failed = 0
    heard_echo = 0
    errors: set[str] = set()
    lock = asyncio.Lock()

    async def wait_idle(http: httpx.AsyncClient) -> None:
        # The call's end on the server (pipeline gone) is seen from outside only: poll.
        while (await http.get(base + "/healthz")).json()["active_calls"]:
            await asyncio.sleep(0.02)

    async def lane(index: int, http: httpx.AsyncClient) -> None:
        nonlocal done, failed, heard_echo
        offset = index * 8000
        while True:
            async with lock:
                if done >= calls:
                    return
                done += 1
                number = done
            start = (offset + number * 4000) % max(1, len(speech) - 8000 * 2)
            audio = speech[start : start + int(CALL_SPEECH_S * 8000)]
            try:
                caller = await TwilioCaller.dial(base, audio=audio, keep_audio=False, http=http)
                log = await caller.run(hangup_after=CALL_S, timeout=CALL_S + 20)
                if log.close_code not in (1000, None):
                    failed += 1
                    errors.add(f"closed with {log.close_code} {log.close_reason}")
                heard_echo += bool(log.media_sizes)  # a slice of silence is not echoed
            except Exception as exc:  # a failed call is counted, not fatal to the bench
                failed += 1
                errors.add(f"{type(exc).__name__}: {exc}"[:200])
            if lanes == 1:
                await wait_idle(http)  # one call at a time: the next starts on an idle server
            if number % step == 0:
                rss.append((number, server.memory_info().rss / 2**20))
                if progress:
                    progress(f"  {number} calls: server RSS {rss[-1][1]:.1f} MB")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(lane(i, http) for i in range(lanes)))
        await wait_idle(http)
    rss.append((calls, server.memory_info().rss / 2**20))
    warm = rss[1][1] if len(rss) > 2 else rss[0][1]
    end = rss[-1][1]
    return {
        "ok": failed == 0 and (end - warm) / warm * 100 < 5.0,
        "calls": calls,
        "lanes": lanes,
        "voice": voice,
        "failed_calls": failed,
        "calls_echoed": heard_echo,
        "errors": sorted(errors)[:5],
        "rss_start_mb": round(rss[0][1], 1),
        "rss_after_warmup_mb": round(warm, 1),
        "rss_end_mb": round(end, 1),
        "growth_pct": round((end - warm) / warm * 100, 2),
        "kb_per_call_after_warmup": round((end - warm) * 1024 / max(1, calls - step), 2),
        "rss_series_mb": [round(mb, 1) for _, mb in rss],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def run_leak_bench(
    *,
    calls: int = 1000,
    lanes: int = 1,
    bot: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``calls`` calls back to back (``lanes`` at a time) and report the server's RSS."""
    if calls < 10 or lanes < 1:
        raise ValueError("bench leak needs --calls >= 10 and --lanes >= 1")
    proc, port = start_server(str(bot or DEFAULT_BOT))
    try:
        if progress:
            progress(f"bench leak: server pid {proc.pid}; {calls} calls, {lanes} at a time")
        return asyncio.run(_bench(port, proc.pid, calls=calls, lanes=lanes, progress=progress))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
