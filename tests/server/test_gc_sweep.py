"""Ended calls are freed while the server runs: the full collection after calls end."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import weakref
from collections.abc import Callable
from typing import Any

from tests.server.conftest import serve
from voxpipe.server.garbage import GarbageSweeper
from voxpipe.testing.twilio_caller import TwilioCaller


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_sweep_runs_only_after_calls_ended_and_frees_their_cycles(no_automatic_gc: None) -> None:
    ended = 0
    seen: list[tuple[float, int]] = []
    sweeper = GarbageSweeper(lambda: ended, 10.0, observe=lambda s, n: seen.append((s, n)))
    garbage = _Cycle()
    ref = weakref.ref(garbage)
    del garbage
    assert not sweeper.sweep_if_calls_ended()  # no call ended: no walk over the heap
    assert ref() is not None and seen == []
    ended = 1
    assert sweeper.sweep_if_calls_ended()
    assert ref() is None
    assert len(seen) == 1 and seen[0][0] >= 0 and seen[0][1] >= 1
    assert not sweeper.sweep_if_calls_ended()  # the same ended call: nothing new
    assert len(seen) == 1


def _call_object_kinds() -> collections.Counter[str]:
    """Objects of the server's call pipelines (frames, queues, loggers...) by class."""
    return collections.Counter(
        type(o).__qualname__
        for o in gc.get_objects()
        if not issubclass(type(o), type) and str(type(o).__module__).startswith("voxpipe.")
    )


def _call_objects() -> int:
    """How many such objects are still in memory."""
    return sum(_call_object_kinds().values())


async def _until_no_call(st: Any) -> None:
    """Until the server's side of every call has ended (just after the callers hung up)."""
    async with asyncio.timeout(10):
        while len(st.registry):
            await asyncio.sleep(0.01)


async def _one_call(url: str, speech: bytes) -> None:
    caller = await TwilioCaller.dial(url, audio=speech[:8000], realtime=False, tail_silence_s=0.2)
    log = await caller.run(hangup_after=1.0, timeout=20)
    assert log.errors == []


async def test_an_ended_call_is_freed_by_the_servers_sweep(
    echo_app: Callable[..., Any],
    settings_factory: Callable[..., Any],
    speech_mulaw: bytes,
    no_automatic_gc: None,
) -> None:
    settings = settings_factory(gc_sweep_interval_s=0.05)
    app = echo_app(settings)
    st = app.state.voxpipe

    async def call(n: int) -> None:
        await _one_call(srv.url, speech_mulaw)
        await _until_no_call(st)
        async with asyncio.timeout(10):
            while f"voxpipe_gc_sweep_seconds_count {n}.0" not in metrics():
                await asyncio.sleep(0.01)  # the sweep's own metric says when it has run

    def metrics() -> str:
        return str(st.metrics.render().decode())

    async with serve(app, settings) as srv:
        await call(1)  # the first call loads process-wide models (Smart Turn): not garbage
        gc.collect()
        before = _call_objects()
        await call(2)
        assert _call_objects() == before, "the ended call is still in memory"


async def test_an_ended_call_is_freed_by_reference_counting_alone(
    echo_app: Callable[..., Any],
    settings_factory: Callable[..., Any],
    speech_mulaw: bytes,
    no_automatic_gc: None,
) -> None:
    # The end of a call breaks its cycles (PipelineTask._dispose): with no collection at all,
    # neither the sweep's nor Python's, the ended calls' objects are gone, so a sweep has
    # nothing of them to find.
    settings = settings_factory(gc_sweep_interval_s=0.0)
    app = echo_app(settings)
    st = app.state.voxpipe
    async with serve(app, settings) as srv:
        await _one_call(srv.url, speech_mulaw)  # loads process-wide models: not garbage
        gc.collect()
        before = _call_objects()
        kinds = _call_object_kinds()
        for _ in range(3):
            await _one_call(srv.url, speech_mulaw)
        await _until_no_call(st)
        # The server's handler returns just after the call leaves the registry.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                while _call_objects() > before:
                    await asyncio.sleep(0.05)
        left = _call_object_kinds() - kinds
        assert _call_objects() <= before, f"ended calls still in memory: {dict(left)}"
