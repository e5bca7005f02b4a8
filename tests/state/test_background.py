"""BackgroundTask: one start/stop for the state's background loops; a cancelled caller stays
cancelled (the four loops that used to swallow it are checked one by one)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from voxpipe.state.background import BackgroundTask
from voxpipe.state.heartbeat import SessionHeartbeat
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.resilient import ResilientSessionStore
from voxpipe.state.spool import SpoolingTranscriptStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.sweeper import OrphanSweeper

servers = __import__("sys").modules["voxpipe_tests_vp_servers"]


async def test_start_stop_restart() -> None:
    runs: list[str] = []
    stopped = asyncio.Event()

    async def loop() -> None:
        runs.append("run")
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    bg = BackgroundTask(loop, "test-loop")
    assert bg.start() and not bg.start()  # a second start while running is a no-op
    await asyncio.sleep(0)  # one loop step: the task runs up to its wait
    assert bg.running and runs == ["run"]
    await bg.stop()
    assert stopped.is_set() and not bg.running and bg.task is None
    await bg.stop()  # stopping twice is harmless
    assert bg.start()
    await asyncio.sleep(0)
    await bg.stop()
    assert runs == ["run", "run"]


async def test_a_task_that_failed_is_stopped_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("bug (test)")

    bg = BackgroundTask(broken, "broken-loop")
    bg.start()
    await asyncio.sleep(0)
    await bg.stop()
    assert "broken-loop had failed" in caplog.text


async def test_the_callers_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # cleanup that takes a while: stop() is waiting on it

    bg = BackgroundTask(slow_to_stop, "slow")
    bg.start()
    after_stop: list[bool] = []

    async def caller() -> None:
        await bg.stop()
        after_stop.append(True)  # a swallowed cancellation would carry on to here

    await asyncio.sleep(0)
    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # the caller is now waiting inside stop()
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after_stop == [] and task.cancelled()


async def _cancel_while_stopping(stop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """Run ``stop()`` in a task, cancel that task while it waits, and return it (finished)."""
    reached: list[bool] = []

    async def caller() -> None:
        await stop()
        reached.append(True)

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # caller runs until it waits for the background task to end
    task.cancel()
    # The timeout only turns a stop() that never returns (a swallowed cancel) into a failure.
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert reached == [], "stop() swallowed its caller's cancellation"
    return task


async def test_heartbeat_stop_propagates_the_callers_cancellation() -> None:
    hb = SessionHeartbeat(MemorySessionStore(), "CA1", interval_s=3600)
    await hb.start()
    task = await _cancel_while_stopping(hb.stop)
    assert task.cancelled() and not hb.running


async def test_sweeper_stop_propagates_the_callers_cancellation(tmp_path: Path) -> None:
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    sweeper = OrphanSweeper(MemorySessionStore(), transcripts, interval_s=3600)
    sweeper.start()
    await asyncio.sleep(0)  # the first sweep runs, then it waits for the next
    try:
        task = await _cancel_while_stopping(sweeper.stop)
        assert task.cancelled()
    finally:
        await transcripts.close()


async def test_spool_close_propagates_the_callers_cancellation(tmp_path: Path) -> None:
    spool = SpoolingTranscriptStore(
        SqliteTranscriptStore(tmp_path / "t.sqlite3"), tmp_path / "spool", retry_interval_s=3600
    )
    await spool.start()
    task = await _cancel_while_stopping(spool.close)
    assert task.cancelled()
    await spool.inner.close()


async def test_resilient_store_close_propagates_the_callers_cancellation() -> None:
    closed_port = servers.free_port()  # nothing listens: the store starts degraded, recovering
    store = ResilientSessionStore(
        RedisSessionStore.from_url(f"redis://127.0.0.1:{closed_port}/0"), retry_interval_s=3600
    )
    await store.start()
    assert not store.healthy
    task = await _cancel_while_stopping(store.close)
    assert task.cancelled()
