"""Precise waits for test rigs and provider fakes: to a tenth of a millisecond, not a whole one.

An event loop's own timers are coarse: the default loop waits in ``epoll`` with a timeout
rounded up to whole milliseconds (timers fire 0-1 ms late), uvloop keeps time in whole
milliseconds (timers fire up to a millisecond early or late). A fake that should answer
150 ms after a message, or a caller that should send a chunk every 20 ms, then adds that
slop to whatever a benchmark measures. Here a wait sleeps on the loop until shortly before
its deadline, then hands the rest to one process-wide timer thread, which wakes on time
(thread wake-ups are about 0.1 ms precise) and resolves the waiter's future through
``loop.call_soon_threadsafe``. The event loop is never busy-waited.

Deadlines are on ``now()``: ``time.perf_counter()`` on a real loop. Under voxpipe's
``VirtualClock`` a thread would break virtual time (the loop jumps to its next timer when
idle, and knows nothing of the thread), so there ``now()`` is the loop's time and a wait is a
plain ``asyncio.sleep``. The thread needs the GIL to fire: a loop that runs Python code
without pause delays it up to the interpreter's switch interval (5 ms), like any timer.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass

from voxpipe.pipelines.clock import current_clock_is_virtual

__all__ = ["HANDOFF_SECS", "now", "sleep", "sleep_until"]

# How long before the deadline the loop's own timer hands over to the thread: more than a
# loop timer's error (a millisecond either way), so the thread always gets the last stretch.
HANDOFF_SECS = 0.002


def now() -> float:
    """The time ``sleep_until`` deadlines are on: perf_counter, or the loop's virtual time."""
    if current_clock_is_virtual():
        return asyncio.get_running_loop().time()
    return time.perf_counter()


async def sleep(delay: float) -> None:
    """Wait ``delay`` seconds, precisely (see the module docs); never returns early."""
    await sleep_until(now() + delay)


async def sleep_until(deadline: float) -> None:
    """Wait until ``now()`` reaches ``deadline``; returns at once if it already has."""
    loop = asyncio.get_running_loop()
    if current_clock_is_virtual():
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > HANDOFF_SECS:
            # The loop's timer may fire a little early (uvloop) or late: go round again.
            await asyncio.sleep(remaining - HANDOFF_SECS)
            continue
        fut: asyncio.Future[None] = loop.create_future()
        entry = _TIMER.add(deadline, loop, fut)
        try:
            await fut
        finally:
            entry.cancelled = True  # a cancelled waiter: the thread skips it


@dataclass(slots=True)
class _Entry:
    """One waiter handed to the timer thread."""

    deadline: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    cancelled: bool = False


def _resolve(fut: asyncio.Future[None]) -> None:
    # Runs in the waiter's loop; the waiter may have been cancelled meanwhile.
    if not fut.done():
        fut.set_result(None)


class _TimerThread:
    """One daemon thread firing waiters' futures at their deadlines (a heap and a condition)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(
        self, deadline: float, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]
    ) -> _Entry:
        entry = _Entry(deadline, loop, fut)
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))
            if self._heap[0][2] is entry:
                self._cond.notify()  # the thread sleeps towards a later deadline: wake it
        return entry

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="voxpipe-precise-timer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _tighten_timer_slack()
        while True:
            due: list[_Entry] = []
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                t = time.perf_counter()
                while self._heap and self._heap[0][0] <= t:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    self._cond.wait(self._heap[0][0] - t)
                    continue
            for entry in due:  # outside the lock: waiters may add meanwhile
                if entry.cancelled:
                    continue
                try:
                    entry.loop.call_soon_threadsafe(_resolve, entry.future)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits any more

    def _after_fork(self) -> None:
        # The child has no timer thread, and the lock may have been held by it at the fork.
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._thread = None


def _tighten_timer_slack() -> None:
    """Ask Linux to wake this thread within 1 us of its timeouts (default slack: 50 us)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # per thread: only this one
    except (OSError, AttributeError):
        pass  # best effort: the waits stay correct, a little less tight


_PR_SET_TIMERSLACK = 29
_TIMER = _TimerThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TIMER._after_fork)
