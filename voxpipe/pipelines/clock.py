"""Clocks: real time, and a virtual clock that lets a whole call run faster than real time.

Everything time-based in the engine (timestamps, timeouts, pacing) asks a ``Clock``.
The virtual clock is an asyncio event loop whose notion of time only moves when
nothing is ready to run: it then jumps straight to the next timer. Code that uses
``asyncio.sleep``, ``asyncio.timeout`` or ``loop.call_later`` therefore runs on
simulated time unchanged, deterministically and as fast as the CPU allows.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import time
from asyncio import _get_running_loop
from collections.abc import Awaitable, Callable, Coroutine
from threading import get_ident
from typing import Any, TypeVar

T = TypeVar("T")

# The loop last found running, and in which thread. Asking asyncio for the running loop costs
# a getpid() system call on Python 3.11 (it guards against a fork); a loop that is still
# running in the thread that found it is still that thread's running loop (a thread runs one
# loop at a time), so only a loop that stopped and then runs in another thread could fool
# this, and the engine never moves a loop between threads. Reset in a forked child.
_running: tuple[Any, int] = (None, 0)


def _forget_running() -> None:
    global _running
    _running = (None, 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_running)


def loop_time() -> float:
    """The running loop's time (``time.monotonic()`` when no loop runs in this thread)."""
    global _running
    loop, tid = _running
    ident = get_ident()
    if tid == ident and loop.is_running():
        t: float = loop.time()
        return t
    loop = _get_running_loop()
    if loop is None:
        return time.monotonic()
    _running = (loop, ident)
    return loop.time()


class Clock:
    """Real time: ``now`` is the event loop's monotonic time, ``sleep`` is ``asyncio.sleep``."""

    def now(self) -> float:
        return loop_time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until(self, when: float) -> None:
        delay = when - self.now()
        if delay > 0:
            await self.sleep(delay)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        # asyncio.timeout around the await, not asyncio.wait_for: on Python 3.11 wait_for runs
        # the awaitable in a task of its own, which costs every wake-up two more turns of the
        # event loop (the output's sender waits like this for each chunk).
        if timeout is None:
            return await aw
        async with asyncio.timeout(timeout):
            return await aw

    @property
    def is_virtual(self) -> bool:
        return False


RealClock = Clock


class _VirtualSelector(selectors.BaseSelector):
    """Wraps the real selector: polls real I/O without blocking, and advances time instead."""

    def __init__(self, clock: VirtualClock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing is scheduled: only outside I/O (or a signal) can wake us, so really wait.
            return self._real.select(None)
        # Nothing to do until the next timer: jump there instead of waiting.
        self._clock._advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self._vclock = clock
        super().__init__(_VirtualSelector(clock))

    def time(self) -> float:
        return self._vclock._now


class VirtualClock(Clock):
    """Simulated time: starts at ``start`` and jumps to the next timer whenever the loop is idle.

    Use ``clock.run(main())`` in place of ``asyncio.run(main())``. Real sockets still work,
    but a peer's reply that is not already waiting is not waited for while timers are
    pending, so drive provider fakes on the real clock.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def _advance(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds

    def now(self) -> float:
        return self._now

    @property
    def is_virtual(self) -> bool:
        return True

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to completion on a fresh event loop that keeps this clock's time."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)


def current_clock_is_virtual() -> bool:
    """True when the running event loop keeps virtual time."""
    try:
        return isinstance(asyncio.get_running_loop(), _VirtualLoop)
    except RuntimeError:
        return False


def clock_for_running_loop() -> Clock:
    """The clock matching the running loop: its VirtualClock, or a real clock."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return Clock()
    if isinstance(loop, _VirtualLoop):
        return loop._vclock
    return Clock()
