"""Retention consent per caller: memory, SQLite and the real Postgres, keyed by a caller hash."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.state.consent import (
    ConsentStore,
    MemoryConsentStore,
    PostgresConsentStore,
    SqliteConsentStore,
    caller_key,
    consent_secret,
    identifiable_caller,
    make_consent_store,
)

CALLER = "+447700900123"
SECRET = b"k" * 32


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def unstarted(request: pytest.FixtureRequest, tmp_path: Path) -> ConsentStore:
    s: ConsentStore
    if request.param == "memory":
        s = MemoryConsentStore(SECRET)
    elif request.param == "sqlite":
        s = SqliteConsentStore(str(tmp_path / "c.sqlite3"), secret=SECRET)
    else:
        s = PostgresConsentStore(
            request.getfixturevalue("pg_dsn"),
            schema=request.getfixturevalue("pg_schema"),
            secret=SECRET,
        )
    return s


@pytest.fixture
async def store(unstarted: ConsentStore) -> Any:
    await unstarted.start()
    yield unstarted
    await unstarted.close()


async def test_a_choice_is_stored_per_caller_and_replaced_by_a_later_one(store: Any) -> None:
    assert await store.get(CALLER) is None
    assert await store.record(CALLER, True, call_id="CA1")
    rec = await store.get("+44 7700-900123")  # the same number, formatted
    assert rec is not None and rec.granted and rec.call_id == "CA1"
    assert await store.get("+447700900124") is None  # another caller
    assert await store.record(CALLER, False, call_id="CA2")
    rec = await store.get(CALLER)
    assert rec is not None and not rec.granted and rec.call_id == "CA2"


@pytest.mark.parametrize("withheld", ["", "anonymous", "Restricted", "+266696687", "12"])
async def test_withheld_numbers_are_never_stored(store: Any, withheld: str) -> None:
    # Every withheld caller shares one "number": a choice stored under it would bind strangers.
    assert not await store.record(withheld, True)
    assert await store.get(withheld) is None


async def test_sqlite_keeps_a_keyed_hash_not_the_number(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    s = SqliteConsentStore(str(path), secret=SECRET)
    await s.start()
    await s.record(CALLER, False, call_id="CA1")
    await s.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT caller_key, granted FROM retention_consent").fetchall()
        dump = "\n".join(conn.iterdump())
    assert rows == [(caller_key(CALLER, SECRET), 0)]
    assert "7700900123" not in dump
    # Another key gives another hash: a leaked table cannot be matched without the key.
    assert caller_key(CALLER, SECRET) != caller_key(CALLER, b"x" * 32) != caller_key(CALLER)


async def test_postgres_keeps_a_keyed_hash_not_the_number(pg_dsn: str, pg_schema: str) -> None:
    s = PostgresConsentStore(pg_dsn, schema=pg_schema, secret=SECRET)
    await s.start()
    await s.record(CALLER, True)
    await s.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(f'SELECT caller_key, granted FROM "{pg_schema}".retention_consent')
    finally:
        await conn.close()
    assert [(r["caller_key"], r["granted"]) for r in rows] == [(caller_key(CALLER, SECRET), True)]


def test_identifiable_caller() -> None:
    assert identifiable_caller(" +1 (415) 555-2671 ") == "+14155552671"
    assert identifiable_caller("anonymous") is None
    assert identifiable_caller("client:alice") is None
    assert identifiable_caller(None) is None


def test_factory_and_key_from_settings(tmp_path: Path) -> None:
    key = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="  # base64 of 32 bytes
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, sqlite_path=str(tmp_path / "x.sqlite3"), transcript_key=key
    )
    assert isinstance(make_consent_store(settings), SqliteConsentStore)
    secret = consent_secret(settings)
    assert secret is not None and secret != settings.transcript_key_bytes()
    pg = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, database_url="postgresql://postgres@127.0.0.1:5432/test"
    )
    assert isinstance(make_consent_store(pg), PostgresConsentStore)
    assert consent_secret(pg) is None
