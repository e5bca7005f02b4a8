"""make_session_store / make_transcript_store: embedded defaults, servers when configured."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.state import (
    MemorySessionStore,
    Transcript,
    Turn,
    make_session_store,
    make_sweeper,
    make_transcript_cipher,
    make_transcript_store,
    sqlite_path_from_url,
)
from voxpipe.state.postgres_store import PostgresTranscriptStore
from voxpipe.state.resilient import ResilientSessionStore
from voxpipe.state.spool import SpoolingTranscriptStore
from voxpipe.state.sqlite_store import SqliteTranscriptStore


def settings(tmp_path: Path, **kw: object) -> VoxpipeSettings:
    base: dict[str, object] = {
        "sqlite_path": str(tmp_path / "voxpipe.sqlite3"),
        "spool_dir": str(tmp_path / "spool"),
    }
    return VoxpipeSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_embedded_defaults_need_no_server(tmp_path: Path) -> None:
    s = settings(tmp_path, session_ttl_s=99, session_max_turns=7)
    sessions = make_session_store(s)
    assert isinstance(sessions, MemorySessionStore)
    assert (sessions.ttl_s, sessions.max_turns) == (99, 7)
    transcripts = make_transcript_store(s)
    assert isinstance(transcripts, SpoolingTranscriptStore)
    assert isinstance(transcripts.inner, SqliteTranscriptStore)
    assert transcripts.inner.db.path == str(tmp_path / "voxpipe.sqlite3")
    assert VoxpipeSettings().sqlite_path == "./voxpipe.sqlite3"


def test_servers_are_used_when_configured(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        redis_url="redis://127.0.0.1:6379/0",
        database_url="postgresql://postgres@127.0.0.1:5432/test",
    )
    sessions = make_session_store(s)
    assert isinstance(sessions, ResilientSessionStore)
    assert sessions._primary._cipher is None  # type: ignore[attr-defined]
    keyed = settings(
        tmp_path,
        redis_url="redis://127.0.0.1:6379/0",
        records_kek=base64.b64encode(os.urandom(32)).decode(),
    )
    sealed = make_session_store(keyed)._primary._cipher  # type: ignore[attr-defined]
    assert sealed is not None and sealed.key_id == make_transcript_cipher(keyed).key_id  # type: ignore[union-attr]
    transcripts = make_transcript_store(s)
    assert isinstance(transcripts, SpoolingTranscriptStore)
    assert isinstance(transcripts.inner, PostgresTranscriptStore)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/calls.db", "data/calls.db"),
        ("sqlite:////var/lib/voxpipe.db", "/var/lib/voxpipe.db"),
        ("./calls.sqlite3", "./calls.sqlite3"),
    ],
)
def test_sqlite_database_url_forms(url: str, path: str) -> None:
    assert sqlite_path_from_url(url) == path


def at_rest(tmp_path: Path) -> bytes:
    """Every byte SQLite keeps on disk (main file and write-ahead log)."""
    return b"".join(p.read_bytes() for p in tmp_path.glob("voxpipe.sqlite3*"))


@pytest.mark.parametrize("encrypted", [True, False])
async def test_embedded_stack_end_to_end(tmp_path: Path, encrypted: bool) -> None:
    key = base64.b64encode(os.urandom(32)).decode() if encrypted else None
    s = settings(tmp_path, transcript_key=key)
    sessions = make_session_store(s)
    transcripts = make_transcript_store(s)
    await sessions.start()
    await transcripts.start()
    try:
        await sessions.set_meta("CA9", {"caller": "+447700900123", "locale": "en-GB"})
        await sessions.append_turn("CA9", Turn("user", "hello caller words", 1, 2))
        state = await sessions.load("CA9")
        assert state is not None
        await transcripts.write(Transcript.from_session(state, ended_at=5.0))
        back = await transcripts.read("CA9", reader="test")
        assert (
            back is not None
            and back.turns[0].text == "hello caller words"
            and back.locale == "en-GB"
        )
        sweeper = make_sweeper(s, sessions, transcripts)
        assert sweeper.heartbeat_timeout_s == s.heartbeat_timeout_s
    finally:
        await transcripts.close()
        await sessions.close()
    # With TRANSCRIPT_KEY the words are not on disk; without it they are (the control).
    assert (b"hello caller words" in at_rest(tmp_path)) is not encrypted


async def test_a_workers_transcripts_and_consent_choices_share_one_database(
    tmp_path: Path,
) -> None:
    from voxpipe.state.shared import close_shared_stores, shared_stores

    s = settings(tmp_path)
    stores = await shared_stores(s)
    try:
        transcripts = stores.transcripts
        # The records layer (issue 12) sits in front of the spool.
        spool = transcripts.inner  # type: ignore[attr-defined]
        assert isinstance(spool, SpoolingTranscriptStore)
        assert isinstance(spool.inner, SqliteTranscriptStore)
        assert stores.consents.db is spool.inner.db  # type: ignore[attr-defined]
        # Both work over the one connection.
        assert await stores.consents.record("+14155550100", True, call_id="CA1")
        assert (await stores.consents.get("+1 415 555 0100")) is not None
        assert await transcripts.write(Transcript("CA1", 0.0, 1.0, caller="+14155550100"))
        assert await transcripts.read("CA1", reader="test") is not None
    finally:
        await close_shared_stores()
