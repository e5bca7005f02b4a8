"""Conversation state (session stores) and call records (transcript stores).

`make_session_store(settings)` and `make_transcript_store(settings)` pick the backends: Redis
and Postgres when `REDIS_URL` / `DATABASE_URL` are set, else memory and a SQLite file. Server
drivers are imported only when chosen, so the embedded defaults need no extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxpipe.state.errors import SessionDataLostError, StoreUnavailableError, TranscriptKeyError
from voxpipe.state.heartbeat import SessionHeartbeat, default_worker_id
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.session import Liveness, SessionState, SessionStore, Turn
from voxpipe.state.transcripts import ReadRecord, Transcript, TranscriptStore

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.state.crypto import TranscriptCipher
    from voxpipe.state.postgres_store import PostgresDatabase
    from voxpipe.state.sqlite_store import SqliteDatabase
    from voxpipe.state.sweeper import OrphanSweeper

__all__ = [
    "Liveness",
    "MemorySessionStore",
    "ReadRecord",
    "SessionDataLostError",
    "SessionHeartbeat",
    "SessionState",
    "SessionStore",
    "StoreUnavailableError",
    "Transcript",
    "TranscriptKeyError",
    "TranscriptStore",
    "Turn",
    "default_worker_id",
    "make_database",
    "make_session_store",
    "make_sweeper",
    "make_transcript_cipher",
    "make_transcript_store",
    "sqlite_path_from_url",
]


def make_session_store(settings: VoxpipeSettings) -> SessionStore:
    """Redis (mirrored in memory, surviving outages) when REDIS_URL is set, else memory."""
    memory = MemorySessionStore(ttl_s=settings.session_ttl_s, max_turns=settings.session_max_turns)
    if not settings.redis_url:
        return memory
    from voxpipe.state.redis_store import RedisSessionStore
    from voxpipe.state.resilient import ResilientSessionStore

    redis = RedisSessionStore.from_url(
        settings.redis_url,
        socket_timeout_s=settings.redis_socket_timeout_s,
        key_prefix=settings.redis_key_prefix,
        ttl_s=settings.session_ttl_s,
        max_turns=settings.session_max_turns,
        # Turns and metadata hold the caller's words and number: sealed when a key is set.
        cipher=make_transcript_cipher(settings),
    )
    return ResilientSessionStore(redis, memory, retry_interval_s=settings.redis_retry_interval_s)


def make_transcript_cipher(settings: VoxpipeSettings) -> TranscriptCipher | None:
    """The envelope cipher under RECORDS_KEK (else TRANSCRIPT_KEY), or None when both are unset."""
    key, previous = settings.records_keks()
    if key is None:
        return None
    from voxpipe.state.crypto import TranscriptCipher

    return TranscriptCipher(key, previous)


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///rel/path`, `sqlite:////abs/path` or a bare path -> the file path."""
    if url.startswith("sqlite://"):
        # sqlite:///x is relative "x"; sqlite:////x is absolute "/x" (SQLAlchemy's convention).
        return url[len("sqlite:///") :] if url.startswith("sqlite:///") else url[len("sqlite://") :]
    return url


def make_database(settings: VoxpipeSettings) -> PostgresDatabase | SqliteDatabase:
    """The worker's database: Postgres when DATABASE_URL is a postgres:// URL, else SQLite.

    Stores given the same object share its pool (or connection) and its one migration.
    """
    from voxpipe.state.postgres_url import is_postgres_url

    url = settings.database_url
    if is_postgres_url(url):
        from voxpipe.state.postgres_store import PostgresDatabase

        return PostgresDatabase(url or "", timeout_s=settings.db_timeout_s)
    from voxpipe.state.sqlite_store import SqliteDatabase

    path = sqlite_path_from_url(url) if url else settings.sqlite_path
    return SqliteDatabase(path, timeout_s=settings.db_timeout_s)


def make_transcript_store(
    settings: VoxpipeSettings, db: PostgresDatabase | SqliteDatabase | None = None
) -> TranscriptStore:
    """Transcripts in ``db`` (default: ``make_database``); always behind a spool."""
    from voxpipe.state.spool import SpoolingTranscriptStore

    cipher = make_transcript_cipher(settings)
    db = db if db is not None else make_database(settings)
    inner: TranscriptStore
    if db.dialect == "postgres":
        from voxpipe.state.postgres_store import PostgresTranscriptStore

        inner = PostgresTranscriptStore(db, cipher=cipher)  # type: ignore[arg-type]
    else:
        from voxpipe.state.sqlite_store import SqliteTranscriptStore

        inner = SqliteTranscriptStore(db, cipher=cipher)  # type: ignore[arg-type]
    return SpoolingTranscriptStore(
        inner,
        settings.spool_dir,
        cipher=cipher,
        retry_interval_s=settings.spool_retry_interval_s,
    )


def make_sweeper(
    settings: VoxpipeSettings, sessions: SessionStore, transcripts: TranscriptStore
) -> OrphanSweeper:
    """The orphan sweeper with HEARTBEAT_TIMEOUT_S and SWEEPER_INTERVAL_S."""
    from voxpipe.state.sweeper import OrphanSweeper

    return OrphanSweeper(
        sessions,
        transcripts,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        interval_s=settings.sweeper_interval_s,
    )
