"""SessionHeartbeat keeps a live call's session fresh, and stops with the call."""

from __future__ import annotations

import asyncio
import time

from voxpipe.state.errors import StoreUnavailableError
from voxpipe.state.heartbeat import SessionHeartbeat, default_worker_id
from voxpipe.state.memory import MemorySessionStore


class CountingStore(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.touches = 0
        self.fail_next = 0

    async def touch(self, session_id: str, worker_id: str | None = None) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailableError("down (test)")
        self.touches += 1
        await super().touch(session_id, worker_id)


async def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    # Polls the condition; the deadline only guards against a heartbeat that never comes.
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_beats_until_stopped_and_names_the_worker() -> None:
    store = CountingStore()
    async with SessionHeartbeat(store, "CA1", interval_s=0.01) as hb:
        assert store.touches == 1  # the first beat is immediate
        state = await store.load("CA1")
        assert state is not None and state.meta["worker_id"] == default_worker_id()
        await wait_for(lambda: store.touches >= 4)
        task = hb._task
    assert hb.beats == store.touches
    # Stopped for good: the beating task is finished, not merely paused.
    assert task is not None and task.cancelled() and hb._task is None


async def test_a_failed_beat_is_retried_at_the_next_interval() -> None:
    store = CountingStore()
    store.fail_next = 2
    hb = SessionHeartbeat(store, "CA1", interval_s=0.01, worker_id="w")
    await hb.start()  # the first beat fails: logged, not raised
    try:
        await wait_for(lambda: store.touches >= 1)
        state = await store.load("CA1")
        assert state is not None and state.meta["worker_id"] == "w"
    finally:
        await hb.stop()
