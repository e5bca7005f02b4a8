"""Transcript store in a local SQLite file: the embedded default, no server needed."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import aiosqlite
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.state.sqlite_store needs the 'sqlite' extra: pip install 'voxpipe[sqlite]'"
    ) from exc

from voxpipe.state.errors import StoreUnavailableError
from voxpipe.state.migrations import migrate_sqlite
from voxpipe.state.rows import open_turns, seal_turns
from voxpipe.state.transcripts import ReadRecord, Transcript, log_refused_owner

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher

logger = logging.getLogger(__name__)

_UPSERT = """
INSERT INTO transcripts (call_id, caller, called, locale, started_at, ended_at, duration_s,
    escalated, escalation_reason, turn_count, encrypted, key_id, turns, metadata, owner,
    caller_hmac, retain_until)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    caller = excluded.caller, called = excluded.called, locale = excluded.locale,
    started_at = excluded.started_at, ended_at = excluded.ended_at,
    duration_s = excluded.duration_s, escalated = excluded.escalated,
    escalation_reason = excluded.escalation_reason, turn_count = excluded.turn_count,
    encrypted = excluded.encrypted, key_id = excluded.key_id, turns = excluded.turns,
    metadata = excluded.metadata, caller_hmac = excluded.caller_hmac,
    retain_until = COALESCE(excluded.retain_until, transcripts.retain_until),
    written_at = (julianday('now') - 2440587.5) * 86400.0
WHERE transcripts.turn_count < excluded.turn_count AND transcripts.owner IS excluded.owner
"""

_SELECT = """
SELECT call_id, caller, called, locale, started_at, ended_at, escalated, escalation_reason,
    encrypted, key_id, turns, metadata, owner
FROM transcripts WHERE call_id = ?
"""


# Connections open in this process (held strongly: their database object may be gone while the
# thread lives on). aiosqlite's thread is not a daemon: a server whose shutdown never closed
# them (a second exit signal cancels the app's shutdown halfway) would wait for those threads
# forever at exit. Autocommit, so stopping them loses nothing.
_open_connections: set[aiosqlite.Connection] = set()


def stop_connection_threads() -> int:
    """Stop the thread of every connection still open (at process exit); how many there were."""
    stopped = 0
    while _open_connections:
        # Queued behind whatever the thread still has to do: it closes, then ends.
        _open_connections.pop().stop()
        stopped += 1
    return stopped


class SqliteDatabase:
    """One aiosqlite connection in autocommit mode, with a lock so transactions don't interleave.

    Shared by the transcript store and the locale table when both use the same file.
    """

    dialect = "sqlite"  # which stores to build on it, without importing the other driver

    def __init__(self, path: str | Path, *, timeout_s: float = 5.0) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()

    async def connect(self) -> aiosqlite.Connection:
        """Open (once), set durable pragmas and migrate the schema."""
        if self._conn is not None:
            return self._conn
        async with self._connect_lock:
            if self._conn is None:
                self._conn = await self._open()
                _open_connections.add(self._conn)
            return self._conn

    async def _open(self) -> aiosqlite.Connection:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(
                f"cannot open SQLite database {self.path}: {exc}. Check the path is writable "
                "(SQLITE_PATH / DATABASE_URL)."
            ) from exc
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a transcript acknowledged as written survives power loss, not just a crash.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            await migrate_sqlite(conn)
        except sqlite3.OperationalError as exc:
            await conn.close()
            raise StoreUnavailableError(f"SQLite {self.path}: {exc}") from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on the shared connection, mapping I/O errors."""
        conn = await self.connect()
        async with self._lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite {self.path}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            try:
                await conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite {self.path}: {exc}") from exc

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only query outside any transaction of another task."""
        conn = await self.connect()
        async with self._lock:
            try:
                async with conn.execute(sql, params) as cur:
                    return [tuple(r) for r in await cur.fetchall()]
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite {self.path}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            _open_connections.discard(self._conn)
            await self._conn.close()
            self._conn = None


class SqliteTranscriptStore:
    """Transcripts and their read audit log in SQLite; turns sealed when a cipher is given."""

    def __init__(
        self,
        path: str | Path | SqliteDatabase,
        *,
        cipher: TranscriptCipher | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.db = (
            path if isinstance(path, SqliteDatabase) else SqliteDatabase(path, timeout_s=timeout_s)
        )
        self._cipher = cipher

    async def start(self) -> None:
        await self.db.connect()

    async def close(self) -> None:
        await self.db.close()

    async def write(self, transcript: Transcript) -> bool:
        payload, encrypted, key_id = seal_turns(transcript.turns, transcript.call_id, self._cipher)
        params: tuple[Any, ...] = (
            transcript.call_id,
            transcript.caller,
            transcript.called,
            transcript.locale,
            transcript.started_at,
            transcript.ended_at,
            transcript.duration_s,
            int(transcript.escalated),
            transcript.escalation_reason,
            len(transcript.turns),
            int(encrypted),
            key_id,
            payload,
            json.dumps(transcript.metadata),
            transcript.owner,
            transcript.caller_hmac,
            transcript.retain_until,
        )
        refused = False
        async with self.db.transaction() as conn:
            cursor = await conn.execute(_UPSERT, params)
            stored = cursor.rowcount > 0
            if not stored:
                async with conn.execute(
                    "SELECT owner FROM transcripts WHERE call_id = ?", (transcript.call_id,)
                ) as cur:
                    row = await cur.fetchone()
                stored_owner = row[0] if row else None
                refused = stored_owner != transcript.owner
        if refused:
            log_refused_owner(transcript.call_id, stored_owner, transcript.owner)
            return False
        logger.info(
            "transcript %s %s (%d turns)",
            transcript.call_id,
            "written" if stored else "already stored",
            len(transcript.turns),
            extra={"call_id": transcript.call_id},
        )
        return stored

    async def read(
        self, call_id: str, *, reader: str, purpose: str | None = None
    ) -> Transcript | None:
        async with self.db.transaction() as conn:
            async with conn.execute(_SELECT, (call_id,)) as cur:
                row = await cur.fetchone()
            await conn.execute(
                "INSERT INTO transcript_reads (call_id, reader, purpose, found, read_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (call_id, reader, purpose, int(row is not None), time.time()),
            )
        logger.info(
            "transcript %s read by %s (purpose: %s, found: %s)",
            call_id,
            reader,
            purpose,
            row is not None,
            extra={"call_id": call_id, "reader": reader},
        )
        if row is None:
            return None
        (
            cid,
            caller,
            called,
            locale,
            started,
            ended,
            escalated,
            reason,
            enc,
            key_id,
            turns,
            meta,
            owner,
        ) = tuple(row)
        return Transcript(
            call_id=cid,
            started_at=float(started),
            ended_at=float(ended),
            turns=open_turns(bytes(turns), bool(enc), key_id, cid, self._cipher),
            caller=caller,
            called=called,
            locale=locale,
            escalated=bool(escalated),
            escalation_reason=reason,
            metadata=json.loads(meta),
            owner=owner,
        )

    async def reads(self, call_id: str) -> list[ReadRecord]:
        rows = await self.db.fetchall(
            "SELECT call_id, reader, purpose, found, read_at FROM transcript_reads "
            "WHERE call_id = ? ORDER BY id",
            (call_id,),
        )
        return [ReadRecord(r[0], r[1], r[2], bool(r[3]), float(r[4])) for r in rows]

    async def call_ids(self, limit: int = 100) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT call_id FROM transcripts ORDER BY started_at DESC LIMIT ?", (limit,)
        )
        return [r[0] for r in rows]
