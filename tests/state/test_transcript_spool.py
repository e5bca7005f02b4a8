"""SpoolingTranscriptStore: Postgres unreachable at call end, transcript spooled, none lost."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.postgres_store import PostgresTranscriptStore
from voxpipe.state.session import Turn
from voxpipe.state.spool import SpoolingTranscriptStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.transcripts import Transcript

servers = __import__("sys").modules["voxpipe_tests_vp_servers"]


def transcript(call_id: str, n_turns: int = 2) -> Transcript:
    return Transcript(
        call_id=call_id,
        started_at=1_700_000_000.0,
        ended_at=1_700_000_060.0,
        caller="+447700900123",
        locale="en-GB",
        turns=[
            Turn("user" if i % 2 == 0 else "assistant", f"{call_id} secret words {i}", i, i + 1)
            for i in range(n_turns)
        ],
    )


@pytest.fixture
async def pg_proxy() -> AsyncIterator[object]:
    """The path to Postgres, created stopped: the database is unreachable until started."""
    proxy = servers.TcpProxy("127.0.0.1", 5432)
    yield proxy
    await proxy.stop()


async def count_rows(dsn: str, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.transcripts")
        if exists is None:
            return {}
        rows = await conn.fetch(f'SELECT call_id, turn_count FROM "{schema}".transcripts')
        return {r["call_id"]: r["turn_count"] for r in rows}
    finally:
        await conn.close()


def proxied_dsn(dsn: str, port: int) -> str:
    return dsn.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


async def test_postgres_unreachable_at_call_end_then_written_when_back(
    pg_proxy,
    pg_dsn: str,
    pg_schema: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    spool_dir = tmp_path / "spool"
    inner = PostgresTranscriptStore(
        proxied_dsn(pg_dsn, pg_proxy.port), schema=pg_schema, timeout_s=2
    )
    store = SpoolingTranscriptStore(inner, spool_dir, retry_interval_s=3600)
    await store.start()  # the database is down at start: not fatal
    try:
        # Calls end while Postgres is unreachable: nothing raises, everything is spooled.
        for i in range(3):
            assert await store.write(transcript(f"CA{i}")) is True
        assert store.pending() == 3
        assert await store.flush_spool() == 0  # still down: nothing written, nothing lost
        assert store.pending() == 3
        assert await count_rows(pg_dsn, pg_schema) == {}

        await pg_proxy.start()  # Postgres is reachable again
        assert await store.flush_spool() == 3
        assert store.pending() == 0
        assert await count_rows(pg_dsn, pg_schema) == {"CA0": 2, "CA1": 2, "CA2": 2}

        # A retry of the same call (e.g. the worker's own write after a sweep) duplicates nothing.
        await store.write(transcript("CA1"))
        assert await count_rows(pg_dsn, pg_schema) == {"CA0": 2, "CA1": 2, "CA2": 2}
        back = await store.read("CA1", reader="test")
        assert back is not None and back.turns[1].text == "CA1 secret words 1"
    finally:
        await store.close()


async def test_database_lost_mid_run_is_retried_in_the_background(
    pg_proxy,
    pg_dsn: str,
    pg_schema: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    await pg_proxy.start()
    inner = PostgresTranscriptStore(
        proxied_dsn(pg_dsn, pg_proxy.port), schema=pg_schema, timeout_s=2
    )
    store = SpoolingTranscriptStore(inner, tmp_path / "spool", retry_interval_s=0.05)
    await store.start()
    try:
        await store.write(transcript("CA-before"))
        await pg_proxy.stop()  # the pool's connections are cut, the port is closed
        await store.write(transcript("CA-during"))
        assert store.pending() == 1
        await pg_proxy.start()
        assert await store.wait_drained(timeout=15), "spool was not retried"
        assert await count_rows(pg_dsn, pg_schema) == {"CA-before": 2, "CA-during": 2}
    finally:
        await store.close()


async def test_spool_survives_a_worker_restart(
    pg_proxy,
    pg_dsn: str,
    pg_schema: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    spool_dir = tmp_path / "spool"
    dsn = proxied_dsn(pg_dsn, pg_proxy.port)
    first = SpoolingTranscriptStore(
        PostgresTranscriptStore(dsn, schema=pg_schema, timeout_s=2), spool_dir
    )
    await first.start()
    await first.write(transcript("CA-crash"))
    await first.close()  # the worker goes away with the transcript only in the spool
    assert len(list(spool_dir.glob("*.json"))) == 1

    await pg_proxy.start()
    second = SpoolingTranscriptStore(
        PostgresTranscriptStore(dsn, schema=pg_schema, timeout_s=2), spool_dir, retry_interval_s=60
    )
    await second.start()  # flushes what the previous process left
    try:
        assert await second.wait_drained(timeout=15)
        assert await count_rows(pg_dsn, pg_schema) == {"CA-crash": 2}
    finally:
        await second.close()


class FailingStore(SqliteTranscriptStore):
    """A real SQLite store that can be told to fail, to test the spool on its own."""

    fail = True

    async def write(self, transcript: Transcript) -> bool:
        if self.fail:
            raise ConnectionError("database down (test)")
        return await super().write(transcript)


@pytest.fixture
async def failing(tmp_path: Path) -> AsyncIterator[FailingStore]:
    store = FailingStore(tmp_path / "db.sqlite3")
    yield store
    await store.close()


async def test_spool_files_are_atomic_private_and_sealed(
    failing: FailingStore, tmp_path: Path
) -> None:
    cipher = TranscriptCipher(os.urandom(32))
    store = SpoolingTranscriptStore(failing, tmp_path / "spool", cipher=cipher, retry_interval_s=60)
    await store.start()
    try:
        await store.write(transcript("CA/../weird id"))
        files = list((tmp_path / "spool").iterdir())
        assert len(files) == 1 and files[0].suffix == ".json"
        assert files[0].parent == tmp_path / "spool"  # a hostile call id cannot escape the dir
        assert files[0].stat().st_mode & 0o077 == 0
        data = files[0].read_bytes()
        assert b"secret words" not in data and b"+447700900123" not in data
        assert json.loads(data)["encrypted"] is True
        failing.fail = False
        assert await store.flush_spool() == 1
        back = await store.read("CA/../weird id", reader="test")
        assert back is not None and back.turns[0].text == "CA/../weird id secret words 0"
    finally:
        await store.close()


async def test_fuller_spooled_copy_is_kept(failing: FailingStore, tmp_path: Path) -> None:
    store = SpoolingTranscriptStore(failing, tmp_path / "spool", retry_interval_s=60)
    await store.start()
    try:
        await store.write(transcript("CA1", n_turns=5))
        await store.write(transcript("CA1", n_turns=2))  # e.g. a late sweep of an older copy
        await store.write(transcript("CA2", n_turns=1))
        assert store.pending() == 2
        failing.fail = False
        assert await store.flush_spool() == 2
        back = await store.read("CA1", reader="test")
        assert back is not None and len(back.turns) == 5
    finally:
        await store.close()


async def test_undecodable_spool_files_are_quarantined_not_lost(
    failing: FailingStore, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "garbage-0000.json").write_text("{not json")
    (spool / ".half-written.json.123.tmp").write_text("partial")
    store = SpoolingTranscriptStore(failing, spool, retry_interval_s=60)
    failing.fail = False
    await store.start()
    try:
        await store.flush_spool()
        assert store.pending() == 0
        assert (spool / "bad" / "garbage-0000.json").read_text() == "{not json"
        assert not (spool / ".half-written.json.123.tmp").exists()
    finally:
        await store.close()
