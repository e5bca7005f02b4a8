"""Precise waits: never early, cancellable, on the default loop, on uvloop, and on virtual time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from voxpipe.pipelines.clock import VirtualClock
from voxpipe.testing import timing

# Below HANDOFF_SECS the timer thread does the whole wait; above, the loop's timer does most.
DELAYS = (0.0, 0.0003, 0.0015, timing.HANDOFF_SECS, 0.0035, 0.012, 0.031)


async def _never_early() -> None:
    for _ in range(5):
        for delay in DELAYS:
            t0 = time.perf_counter()
            await timing.sleep_until(t0 + delay)
            assert time.perf_counter() >= t0 + delay
            t1 = time.perf_counter()
            await timing.sleep(delay)
            assert time.perf_counter() >= t1 + delay


async def _cancel_in_both_phases() -> None:
    for delay in (0.0015, 10.0):  # the thread's part, the loop timer's part
        task = asyncio.get_running_loop().create_task(timing.sleep(delay))
        await asyncio.sleep(0)  # it starts, and is waiting
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The cancelled waiter's deadline passes; later waits still work.
    await timing.sleep(0.004)
    await timing.sleep(0.001)


def _run(main: Callable[[], Coroutine[Any, Any, None]], factory: Any) -> None:
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def test_never_returns_early_on_the_default_loop() -> None:
    await _never_early()


@pytest.mark.parametrize(
    "wait",
    [
        lambda: timing.sleep_until(time.perf_counter() - 1.0),
        lambda: timing.sleep(-0.5),
        lambda: timing.sleep(0.0),
    ],
    ids=["past deadline", "negative delay", "zero delay"],
)
def test_a_deadline_already_past_returns_at_once(
    monkeypatch: pytest.MonkeyPatch, wait: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    def no_thread(*args: object) -> None:
        raise AssertionError("a wait already due was handed to the timer thread")

    monkeypatch.setattr(timing._TIMER, "add", no_thread)

    async def main() -> None:
        coro = wait()
        # It finishes on its first step: no loop round trip (no sleep, no future awaited).
        with pytest.raises(StopIteration):
            coro.send(None)

    asyncio.run(main())


async def test_cancelled_waiters_raise_and_leave_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    await _cancel_in_both_phases()
    assert errors == []  # nothing went wrong in the timer thread
    assert timing._TIMER._heap == []  # no waiter left queued


async def test_many_waiters_wake_in_deadline_order() -> None:
    woke: list[int] = []
    base = time.perf_counter() + 0.001

    async def waiter(i: int) -> None:
        await timing.sleep_until(base + i * 0.0003)
        woke.append(i)

    await asyncio.gather(*(waiter(i) for i in (5, 1, 4, 0, 3, 2)))
    assert woke == [0, 1, 2, 3, 4, 5]


def test_never_returns_early_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    _run(_never_early, uvloop.new_event_loop)


def test_cancellation_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    _run(_cancel_in_both_phases, uvloop.new_event_loop)


def test_virtual_clock_uses_loop_time_and_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread(*args: object) -> None:
        raise AssertionError("the timer thread was used under the virtual clock")

    monkeypatch.setattr(timing._TIMER, "add", no_thread)
    clock = VirtualClock(start=100.0)
    seen: list[float] = []

    async def main() -> None:
        assert timing.now() == 100.0
        await timing.sleep(3600.0)  # an hour of virtual time
        seen.append(timing.now())
        await timing.sleep_until(3700.0 + 0.0015)  # a short wait too
        seen.append(timing.now())
        await timing.sleep_until(50.0)  # already past
        seen.append(timing.now())

    t0 = time.perf_counter()
    clock.run(main())
    assert seen == pytest.approx([3700.0, 3700.0015, 3700.0015], abs=1e-9)
    assert time.perf_counter() - t0 < 60.0  # not an hour: virtual time jumped
