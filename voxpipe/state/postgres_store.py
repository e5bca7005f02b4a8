"""Transcript store in Postgres (asyncpg), shared by every worker; schema migrated on start."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.state.postgres_store needs the 'postgres' extra: pip install 'voxpipe[postgres]'"
    ) from exc

from voxpipe.config.settings import mask_url_password
from voxpipe.state.errors import StoreUnavailableError
from voxpipe.state.migrations import migrate_postgres
from voxpipe.state.rows import open_turns, seal_turns
from voxpipe.state.transcripts import ReadRecord, Transcript, log_refused_owner

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors meaning "the database is not reachable right now", as opposed to a bad query.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_UPSERT = """
INSERT INTO transcripts (call_id, caller, called, locale, started_at, ended_at, duration_s,
    escalated, escalation_reason, turn_count, encrypted, key_id, turns, metadata, owner,
    caller_hmac, retain_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15, $16, $17)
ON CONFLICT (call_id) DO UPDATE SET
    caller = EXCLUDED.caller, called = EXCLUDED.called, locale = EXCLUDED.locale,
    started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
    duration_s = EXCLUDED.duration_s, escalated = EXCLUDED.escalated,
    escalation_reason = EXCLUDED.escalation_reason, turn_count = EXCLUDED.turn_count,
    encrypted = EXCLUDED.encrypted, key_id = EXCLUDED.key_id, turns = EXCLUDED.turns,
    metadata = EXCLUDED.metadata, written_at = now(), caller_hmac = EXCLUDED.caller_hmac,
    retain_until = COALESCE(EXCLUDED.retain_until, transcripts.retain_until)
WHERE transcripts.turn_count < EXCLUDED.turn_count
    AND transcripts.owner IS NOT DISTINCT FROM EXCLUDED.owner
RETURNING call_id
"""


class PostgresDatabase:
    """An asyncpg pool on one schema, created lazily and re-created after an outage.

    `schema` (optional) confines every table to that schema, created if missing: handy to run
    several deployments or test runs on one database.
    """

    dialect = "postgres"  # which stores to build on it, without importing the other driver

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        timeout_s: float = 5.0,
        max_size: int = 4,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(
                f"Postgres schema name {schema!r} must be lower-case letters, digits and _"
            )
        self.dsn = dsn
        self.schema = schema
        self.timeout_s = timeout_s
        self.max_size = max_size
        self.description = f"Postgres at {mask_url_password(dsn)}"
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """The pool, connecting and migrating first if needed."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await self._guard("connect", self._create_pool)
            return self._pool

    async def _create_pool(self) -> asyncpg.Pool:
        if self.schema is not None:
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            finally:
                await conn.close()
        settings = {"search_path": self.schema} if self.schema else None
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.max_size,
            timeout=self.timeout_s,
            command_timeout=self.timeout_s,
            server_settings=settings,
        )
        try:
            async with pool.acquire() as conn:
                await migrate_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _guard(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"{self.description} unreachable during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    @asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; connection-level failures become StoreUnavailableError."""
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=self.timeout_s) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"{self.description} failed during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Close the pool (waiting at most the timeout for busy connections)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout_s)
            except _UNAVAILABLE:  # includes TimeoutError: a pool that will not close cleanly
                pool.terminate()


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class PostgresTranscriptStore:
    """Transcripts and their read audit log in Postgres; turns sealed when a cipher is given."""

    def __init__(
        self,
        dsn: str | PostgresDatabase,
        *,
        cipher: TranscriptCipher | None = None,
        schema: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.db = (
            dsn
            if isinstance(dsn, PostgresDatabase)
            else PostgresDatabase(dsn, schema=schema, timeout_s=timeout_s)
        )
        self._cipher = cipher

    async def start(self) -> None:
        await self.db.pool()

    async def close(self) -> None:
        await self.db.close()

    async def write(self, transcript: Transcript) -> bool:
        payload, encrypted, key_id = seal_turns(transcript.turns, transcript.call_id, self._cipher)
        async with self.db.connection("write") as conn:
            row = await conn.fetchrow(
                _UPSERT,
                transcript.call_id,
                transcript.caller,
                transcript.called,
                transcript.locale,
                _ts(transcript.started_at),
                _ts(transcript.ended_at),
                transcript.duration_s,
                transcript.escalated,
                transcript.escalation_reason,
                len(transcript.turns),
                encrypted,
                key_id,
                payload,
                json.dumps(transcript.metadata),
                transcript.owner,
                transcript.caller_hmac,
                None if transcript.retain_until is None else _ts(transcript.retain_until),
            )
            stored = row is not None
            stored_owner = None
            if not stored:
                stored_owner = await conn.fetchval(
                    "SELECT owner FROM transcripts WHERE call_id = $1", transcript.call_id
                )
        if not stored and stored_owner != transcript.owner:
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
        async with self.db.connection("read") as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT call_id, caller, called, locale, started_at, ended_at, escalated, "
                "escalation_reason, encrypted, key_id, turns, metadata, owner "
                "FROM transcripts WHERE call_id = $1",
                call_id,
            )
            await conn.execute(
                "INSERT INTO transcript_reads (call_id, reader, purpose, found) "
                "VALUES ($1, $2, $3, $4)",
                call_id,
                reader,
                purpose,
                row is not None,
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
        return Transcript(
            call_id=row["call_id"],
            started_at=row["started_at"].timestamp(),
            ended_at=row["ended_at"].timestamp(),
            turns=open_turns(
                bytes(row["turns"]), row["encrypted"], row["key_id"], call_id, self._cipher
            ),
            caller=row["caller"],
            called=row["called"],
            locale=row["locale"],
            escalated=row["escalated"],
            escalation_reason=row["escalation_reason"],
            metadata=json.loads(row["metadata"]),
            owner=row["owner"],
        )

    async def reads(self, call_id: str) -> list[ReadRecord]:
        async with self.db.connection("reads") as conn:
            rows = await conn.fetch(
                "SELECT call_id, reader, purpose, found, read_at FROM transcript_reads "
                "WHERE call_id = $1 ORDER BY id",
                call_id,
            )
        return [
            ReadRecord(
                r["call_id"], r["reader"], r["purpose"], r["found"], r["read_at"].timestamp()
            )
            for r in rows
        ]

    async def call_ids(self, limit: int = 100) -> list[str]:
        async with self.db.connection("call_ids") as conn:
            rows = await conn.fetch(
                "SELECT call_id FROM transcripts ORDER BY started_at DESC LIMIT $1", limit
            )
        return [r["call_id"] for r in rows]
