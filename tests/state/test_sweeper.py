"""The orphan sweeper: sessions of dead workers are persisted, live ones are left alone."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.session import Turn
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.sweeper import OrphanSweeper
from voxpipe.state.transcripts import Transcript

REPO = Path(__file__).resolve().parents[2]

# A worker that runs a call against Redis, says how far it got, then hangs until killed.
WORKER = r"""
import asyncio, sys
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.session import Turn

async def main(prefix):
    store = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=prefix)
    await store.set_meta("CA-killed", {"call_id": "CA-killed", "caller": "+447700900123",
                                       "locale": "en-GB", "started_at": 1700000000.0})
    for i in range(3):
        await store.append_turn("CA-killed", Turn("user" if i % 2 == 0 else "assistant",
                                                  f"stored turn {i}", 1700000001.0 + i,
                                                  1700000001.5 + i))
        await store.touch("CA-killed", worker_id="worker-pid-%d" % __import__("os").getpid())
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


async def test_session_of_a_killed_worker_is_persisted(redis_prefix: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        redis_prefix,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready", await proc.stderr.read()
    finally:
        proc.kill()  # SIGKILL: no cleanup, no transcript; the worker just vanishes
        await proc.wait()

    sessions = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    # Heartbeats are 60 s stale from the sweeper's point of view (its clock runs ahead).
    sweeper = OrphanSweeper(
        sessions, transcripts, heartbeat_timeout_s=60, clock=lambda: time.time() + 61
    )
    try:
        result = await sweeper.sweep_once()
        assert result.persisted == ["CA-killed"] and result.failed == []
        t = await transcripts.read("CA-killed", reader="test")
        assert t is not None
        assert [x.text for x in t.turns] == ["stored turn 0", "stored turn 1", "stored turn 2"]
        assert (t.caller, t.locale, t.started_at) == ("+447700900123", "en-GB", 1700000000.0)
        assert t.metadata["swept"] is True
        assert t.metadata["worker_id"] == f"worker-pid-{proc.pid}"
        assert await sessions.load("CA-killed") is None  # state flushed
        assert (await sweeper.sweep_once()).persisted == []
    finally:
        await sessions.close()
        await transcripts.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_live_sessions_are_left_alone(tmp_path: Path) -> None:
    clock = Clock()
    sessions = MemorySessionStore(clock=clock)
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    sweeper = OrphanSweeper(sessions, transcripts, heartbeat_timeout_s=30, clock=clock)
    try:
        await sessions.append_turn("dead", Turn("user", "hello", 1, 2))
        clock.now += 20
        await sessions.touch("alive")
        clock.now += 15  # dead: 35 s silent; alive: 15 s
        result = await sweeper.sweep_once()
        assert result.persisted == ["dead"]
        assert await sessions.list_sessions() == ["alive"]
        assert await transcripts.call_ids() == ["dead"]
        t = await transcripts.read("dead", reader="test")
        assert t is not None and t.ended_at == 1_800_000_000.0  # its last sign of life
    finally:
        await transcripts.close()


class BrokenTranscripts(SqliteTranscriptStore):
    async def write(self, transcript: Transcript) -> bool:
        raise ConnectionError("database down (test)")


async def test_a_failed_write_keeps_the_session_for_the_next_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    sessions = MemorySessionStore(clock=clock)
    await sessions.append_turn("dead", Turn("user", "keep me", 1, 2))
    clock.now += 100
    sweeper = OrphanSweeper(
        sessions, BrokenTranscripts(tmp_path / "t.sqlite3"), heartbeat_timeout_s=30, clock=clock
    )
    result = await sweeper.sweep_once()
    assert result.failed == ["dead"] and result.persisted == []
    state = await sessions.load("dead")
    assert state is not None and state.turns[0].text == "keep me"
    assert "kept for the next sweep" in caplog.text


async def test_turns_beyond_the_kept_window_are_reported(tmp_path: Path) -> None:
    clock = Clock()
    sessions = MemorySessionStore(max_turns=2, clock=clock)
    for i in range(5):
        await sessions.append_turn("dead", Turn("user", f"t{i}", i, i + 1))
    clock.now += 100
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    try:
        await OrphanSweeper(sessions, transcripts, heartbeat_timeout_s=30, clock=clock).sweep_once()
        t = await transcripts.read("dead", reader="test")
        assert t is not None and [x.text for x in t.turns] == ["t3", "t4"]
        assert t.metadata["turns_dropped"] == 3
    finally:
        await transcripts.close()


async def test_periodic_sweeps_run_until_stopped(tmp_path: Path) -> None:
    clock = Clock()
    sessions = MemorySessionStore(clock=clock)
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    sweeper = OrphanSweeper(
        sessions, transcripts, heartbeat_timeout_s=30, interval_s=0.01, clock=clock
    )
    sweeper.start()
    try:
        await sessions.touch("dead")
        clock.now += 31
        # Poll the outcome; the deadline only guards against a sweeper that never runs.
        deadline = time.monotonic() + 10
        while await sessions.list_sessions() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert await transcripts.call_ids() == ["dead"]
        assert sweeper.sweeps >= 1
    finally:
        await sweeper.stop()
        await transcripts.close()
