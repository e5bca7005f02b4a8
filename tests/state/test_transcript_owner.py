"""Issue 18 pt 3: a call id's transcript is written by the call start that owns it, and the
orphan sweeper writes a dead worker's call as that owner (once), which the worker's own fuller
write may still replace; a session written under another owner cannot replace the record."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.session import Turn
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.sweeper import OrphanSweeper
from voxpipe.state.transcripts import Transcript


def turns(n: int) -> list[Turn]:
    return [
        Turn(
            "user" if i % 2 == 0 else "assistant",
            f"turn {i}",
            1_700_000_001.0 + i,
            1_700_000_001.5 + i,
        )
        for i in range(n)
    ]


async def orphan(store: MemorySessionStore, call_id: str, owner: str, n: int) -> None:
    await store.set_meta(call_id, {"call_id": call_id, "caller": "+447700900123", "owner": owner})
    for turn in turns(n):
        await store.append_turn(call_id, turn)
    await store.touch(call_id, worker_id="dead-worker")


async def test_the_sweeper_writes_as_the_calls_owner_and_only_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sessions = MemorySessionStore()
    transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
    sweeper = OrphanSweeper(
        sessions, transcripts, heartbeat_timeout_s=60, clock=lambda: time.time() + 61
    )
    try:
        await orphan(sessions, "CA1", "owner-a", 3)
        assert (await sweeper.sweep_once()).persisted == ["CA1"]
        swept = await transcripts.read("CA1", reader="test")
        assert swept is not None and swept.owner == "owner-a" and len(swept.turns) == 3
        assert (await sweeper.sweep_once()).persisted == []  # the session is gone: once

        # The worker was only partitioned: its own end-of-call write (same owner) wins.
        final = Transcript("CA1", 1_700_000_000.0, 1_700_000_060.0, turns=turns(5), owner="owner-a")
        assert await transcripts.write(final) is True

        # A session under another owner with the same id (a claimed id) is swept, not stored.
        await orphan(sessions, "CA1", "owner-b", 9)
        with caplog.at_level(logging.WARNING, logger="voxpipe.security"):
            await sweeper.sweep_once()
        assert "claimed_call_id" in caplog.text
        back = await transcripts.read("CA1", reader="test")
        assert back is not None and back.owner == "owner-a" and len(back.turns) == 5
    finally:
        await transcripts.close()
