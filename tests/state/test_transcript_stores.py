"""SQLite and Postgres transcript stores: metadata, idempotence, encryption at rest, read audit."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.errors import TranscriptKeyError
from voxpipe.state.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, SchemaTooNewError
from voxpipe.state.postgres_store import PostgresTranscriptStore
from voxpipe.state.session import Turn
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.transcripts import Transcript, TranscriptStore

SECRET_WORDS = "my card number is four one one one"


def make_transcript(call_id: str = "CA0001", n_turns: int = 3) -> Transcript:
    turns = [
        Turn(
            role="user" if i % 2 == 0 else "assistant",
            text=SECRET_WORDS if i == 0 else f"turn {i}",
            started_at=1_700_000_000.0 + i * 4,
            ended_at=1_700_000_002.5 + i * 4,
            interrupted=i == 1,
            timings={"stt_ms": 110.0 + i, "llm_ttfb_ms": 300.0, "tts_ttfb_ms": 90.0},
            tool_calls=[{"name": "escalate_to_human", "arguments": {"reason": "asked"}}]
            if i == 2
            else [],
        )
        for i in range(n_turns)
    ]
    return Transcript(
        call_id=call_id,
        started_at=1_700_000_000.0,
        ended_at=1_700_000_095.25,
        turns=turns,
        caller="+447700900123",
        called="+18005551212",
        locale="en-GB",
        escalated=True,
        escalation_reason="caller asked for a human",
        metadata={"bot": "support_agent", "transport": "twilio"},
    )


class DB:
    """Where a store writes, plus raw access to check what is at rest."""

    def __init__(self, kind: str, where: str, schema: str | None) -> None:
        self.kind, self.where, self.schema = kind, where, schema

    def store(self, cipher: TranscriptCipher | None = None) -> TranscriptStore:
        if self.kind == "sqlite":
            return SqliteTranscriptStore(self.where, cipher=cipher)
        return PostgresTranscriptStore(self.where, schema=self.schema, cipher=cipher)

    async def fetch(self, sql: str) -> list[tuple[object, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as conn:
                return [tuple(r) for r in conn.execute(sql).fetchall()]
        conn = await asyncpg.connect(self.where, server_settings={"search_path": self.schema or ""})
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> DB:
    if request.param == "sqlite":
        return DB("sqlite", str(tmp_path / "t.sqlite3"), None)
    return DB("postgres", request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema"))


@pytest.fixture
async def store(db: DB) -> AsyncIterator[TranscriptStore]:
    s = db.store()
    await s.start()
    yield s
    await s.close()


async def test_round_trip_keeps_every_field(store: TranscriptStore) -> None:
    t = make_transcript()
    assert await store.write(t) is True
    back = await store.read("CA0001", reader="qa@example.com")
    assert back is not None
    assert back.to_dict() == t.to_dict()
    assert back.turns == t.turns
    assert back.duration_s == pytest.approx(95.25)
    assert (back.caller, back.called, back.locale) == ("+447700900123", "+18005551212", "en-GB")
    assert back.escalated and back.escalation_reason == "caller asked for a human"
    assert back.metadata == {"bot": "support_agent", "transport": "twilio"}
    assert back.turns[0].timings["stt_ms"] == 110.0 and back.turns[1].interrupted


async def test_columns_hold_the_call_metadata(store: TranscriptStore, db: DB) -> None:
    await store.write(make_transcript())
    rows = await db.fetch(
        "SELECT call_id, caller, locale, duration_s, escalated, turn_count FROM transcripts"
    )
    assert len(rows) == 1
    call_id, caller, locale, duration, escalated, turn_count = rows[0]
    assert (call_id, caller, locale, bool(escalated), turn_count) == (
        "CA0001", "+447700900123", "en-GB", True, 3,
    )  # fmt: skip
    assert duration == pytest.approx(95.25)


async def test_writes_are_idempotent_and_the_fuller_copy_wins(
    store: TranscriptStore, db: DB
) -> None:
    partial = make_transcript(n_turns=2)
    full = make_transcript(n_turns=4)
    assert await store.write(partial) is True
    assert await store.write(partial) is False  # a retry stores nothing new
    assert await store.write(full) is True  # the worker's own, fuller write replaces a sweep
    assert await store.write(partial) is False  # and is not replaced by a late partial one
    assert await db.fetch("SELECT count(*) FROM transcripts") == [(1,)]
    back = await store.read("CA0001", reader="test")
    assert back is not None and len(back.turns) == 4
    assert await store.call_ids() == ["CA0001"]


async def test_every_read_is_audited(
    store: TranscriptStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.write(make_transcript())
    with caplog.at_level(logging.INFO):
        await store.read("CA0001", reader="agent-17", purpose="complaint review")
        await store.read("CA0001", reader="auditor")
        assert await store.read("CA-missing", reader="curious") is None
    reads = await store.reads("CA0001")
    assert [(r.reader, r.purpose, r.found) for r in reads] == [
        ("agent-17", "complaint review", True),
        ("auditor", None, True),
    ]
    assert reads[0].read_at <= reads[1].read_at
    assert [(r.reader, r.found) for r in await store.reads("CA-missing")] == [("curious", False)]
    messages = [r.getMessage() for r in caplog.records if "read by" in r.getMessage()]
    assert len(messages) == 3 and "agent-17" in messages[0]


async def test_turns_are_encrypted_at_rest(db: DB) -> None:
    key = os.urandom(32)
    store = db.store(TranscriptCipher(key))
    await store.start()
    try:
        await store.write(make_transcript())
        raw = await db.fetch("SELECT turns, encrypted, key_id FROM transcripts")
        payload, encrypted, key_id = raw[0]
        assert bool(encrypted) and key_id == TranscriptCipher(key).key_id
        assert SECRET_WORDS.encode() not in bytes(payload)  # type: ignore[arg-type]
        assert b"turn 1" not in bytes(payload)  # type: ignore[arg-type]
        back = await store.read("CA0001", reader="test")
        assert back is not None and back.turns[0].text == SECRET_WORDS
    finally:
        await store.close()

    for cipher, message in (
        (None, "set TRANSCRIPT_KEY"),
        (TranscriptCipher(os.urandom(32)), "another key"),
    ):
        other = db.store(cipher)
        await other.start()
        try:
            with pytest.raises(TranscriptKeyError, match=message):
                await other.read("CA0001", reader="test")
        finally:
            await other.close()


async def test_unencrypted_rows_stay_readable_after_a_key_is_set(db: DB) -> None:
    plain = db.store()
    await plain.start()
    await plain.write(make_transcript("CA-old"))
    await plain.close()
    keyed = db.store(TranscriptCipher(os.urandom(32)))
    await keyed.start()
    try:
        back = await keyed.read("CA-old", reader="test")
        assert back is not None and back.turns[0].text == SECRET_WORDS
    finally:
        await keyed.close()


async def test_schema_is_migrated_once_and_versioned(db: DB) -> None:
    for _ in range(2):  # a second start (another worker, a restart) applies nothing
        s = db.store()
        await s.start()
        await s.close()
    expected = POSTGRES_MIGRATIONS if db.kind == "postgres" else SQLITE_MIGRATIONS
    rows = await db.fetch("SELECT version, name FROM schema_version ORDER BY version")
    assert rows == [(m.version, m.name) for m in expected]


async def test_a_newer_schema_is_refused(db: DB) -> None:
    s = db.store()
    await s.start()
    await s.close()
    if db.kind == "sqlite":
        with sqlite3.connect(db.where) as conn:
            conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    else:
        conn = await asyncpg.connect(db.where)
        await conn.execute(
            f"INSERT INTO \"{db.schema}\".schema_version (version, name) VALUES (999, 'future')"
        )
        await conn.close()
    s = db.store()
    with pytest.raises(SchemaTooNewError, match="upgrade voxpipe"):
        await s.start()
    await s.close()


async def test_a_second_owner_cannot_replace_a_call_id(
    store: TranscriptStore, db: DB, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a call id is written by the call start that owns it; another one is refused."""
    mine = make_transcript(n_turns=2)
    mine.owner = "owner-of-the-real-call"
    assert await store.write(mine) is True
    claimed = make_transcript(n_turns=6)  # more turns: the old rule let it replace the row
    claimed.owner = "someone-else"
    claimed.caller = "+19995550000"
    with caplog.at_level(logging.WARNING, logger="voxpipe.security"):
        assert await store.write(claimed) is False
    refusals = [r for r in caplog.records if r.name == "voxpipe.security"]
    assert [getattr(r, "event", None) for r in refusals] == ["claimed_call_id"]
    back = await store.read("CA0001", reader="test")
    assert back is not None and back.caller == "+447700900123" and len(back.turns) == 2
    assert back.owner == "owner-of-the-real-call"
    # An ownerless write (code outside the server) cannot replace an owned row either.
    assert await store.write(make_transcript(n_turns=8)) is False
    # The owner's own fuller write (after a sweeper's partial one) still replaces it.
    final = make_transcript(n_turns=4)
    final.owner = "owner-of-the-real-call"
    assert await store.write(final) is True
    back = await store.read("CA0001", reader="test")
    assert back is not None and len(back.turns) == 4
    assert await db.fetch("SELECT count(*) FROM transcripts") == [(1,)]
