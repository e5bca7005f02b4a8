"""SessionHeartbeat keeps a live call known alive, stores no conversation, and stops with it."""

from __future__ import annotations

import asyncio

from voxpipe.pipelines.clock import VirtualClock
from voxpipe.state.errors import StoreUnavailableError
from voxpipe.state.heartbeat import SessionHeartbeat, default_worker_id
from voxpipe.state.memory import MemorySessionStore


class CountingStore(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.beats = 0
        self.fail_next = 0
        self.beat_event = asyncio.Event()

    async def heartbeat(self, session_id: str, worker_id: str) -> None:
        self.beat_event.set()
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailableError("down (test)")
        self.beats += 1
        await super().heartbeat(session_id, worker_id)


def test_beats_every_interval_until_stopped_and_creates_no_session() -> None:
    clock = VirtualClock()

    async def main() -> None:
        store = CountingStore()
        async with SessionHeartbeat(store, "CA1", interval_s=10) as hb:
            assert store.beats == 1  # the first beat is immediate
            beat = await store.liveness("CA1")
            assert beat is not None and beat.worker_id == default_worker_id()
            # No session: a call that may store nothing yet still beats.
            assert await store.load("CA1") is None and await store.list_sessions() == []
            await asyncio.sleep(95)  # virtual time: nine more beats are due in it
            assert store.beats == 10
            task = hb._task.task
        assert hb.beats == store.beats and not hb.running
        # Stopped for good: the beating task is finished, not merely paused.
        assert task is not None and task.cancelled()
        await asyncio.sleep(100)
        assert store.beats == 10

    clock.run(main())


def test_a_beat_refreshes_an_existing_session_only() -> None:
    clock = VirtualClock(start=100.0)

    async def main() -> None:
        store = MemorySessionStore(clock=clock.now)
        await store.set_meta("CA1", {"caller": "+44"})
        await asyncio.sleep(30)
        await store.heartbeat("CA1", "w1")
        state = await store.load("CA1")
        assert state is not None and state.heartbeat_at == 130.0
        assert state.meta == {"caller": "+44", "worker_id": "w1"}
        await store.delete("CA1")
        assert await store.liveness("CA1") is None  # deleted with the session

    clock.run(main())


async def test_a_failed_beat_is_retried_at_the_next_interval() -> None:
    store = CountingStore()
    store.fail_next = 2
    hb = SessionHeartbeat(store, "CA1", interval_s=0.01, worker_id="w")
    await hb.start()  # the first beat fails: logged, not raised
    try:
        while store.beats < 1:
            store.beat_event.clear()
            await store.beat_event.wait()
        assert hb.failures == 2
        beat = await store.liveness("CA1")
        assert beat is not None and beat.worker_id == "w"
    finally:
        await hb.stop()
