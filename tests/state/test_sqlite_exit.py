"""A process whose shutdown never closed its SQLite connections still exits."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from voxpipe.state import sqlite_store
from voxpipe.state.sqlite_store import SqliteDatabase, stop_connection_threads


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


def test_connections_left_open_are_stopped_and_what_was_written_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only this test's connection: others that earlier tests left open are not stopped here.
    monkeypatch.setattr(sqlite_store, "_open_connections", set())
    path = tmp_path / "left-open.sqlite3"
    before = set(_store_threads())

    async def write_and_leave_open() -> None:
        db = SqliteDatabase(path)
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE t (x INTEGER)")
            await conn.execute("INSERT INTO t VALUES (42)")
        # No close: as when a second exit signal cancels the app's shutdown halfway.

    asyncio.run(write_and_leave_open())
    left = [t for t in _store_threads() if t not in before]
    assert left and all(t.is_alive() and not t.daemon for t in left)  # would block exit
    assert stop_connection_threads() == 1
    for t in left:
        t.join(5)
    assert not any(t.is_alive() for t in left)
    assert stop_connection_threads() == 0  # nothing left the second time

    async def read() -> list[tuple[object, ...]]:
        db = SqliteDatabase(path)
        try:
            return await db.fetchall("SELECT x FROM t")
        finally:
            await db.close()

    assert asyncio.run(read()) == [(42,)]  # autocommit: the write was on disk already
