"""One query interface over the worker's database, SQLite or Postgres, for the records modules.

Queries are written once with ``?`` placeholders (turned into ``$n`` for asyncpg). Times of the
transcripts table are TIMESTAMPTZ in Postgres and epoch seconds in SQLite: ``epoch(col)`` and
``ts_param()`` give the expressions that read and write them as epoch seconds in both.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

_PLACEHOLDER = re.compile(r"\?")


class Tx:
    """One transaction: ``fetch`` rows as tuples, ``execute`` returns the affected row count."""

    def __init__(self, conn: Any, postgres: bool) -> None:
        self._conn = conn
        self._pg = postgres

    async def lock(self, name: str) -> None:
        """Hold a Postgres advisory lock on ``name`` until this transaction ends (SQLite: no-op,
        its BEGIN IMMEDIATE already serialises writers)."""
        if self._pg:
            await self._conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1 || current_schema()))", name
            )

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._pg:
            rows = await self._conn.fetch(_pg(sql), *args)
            return [tuple(r) for r in rows]
        async with self._conn.execute(sql, tuple(args)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        if self._pg:
            status = await self._conn.execute(_pg(sql), *args)
            tail = str(status).rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        cur = await self._conn.execute(sql, tuple(args))
        return int(cur.rowcount)


def _pg(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class RecordsDB:
    """The records modules' view of a ``PostgresDatabase`` or ``SqliteDatabase``."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.postgres = db.dialect == "postgres"

    async def start(self) -> None:
        """Connect and migrate."""
        if self.postgres:
            await self.db.pool()
        else:
            await self.db.connect()

    async def close(self) -> None:
        await self.db.close()

    def epoch(self, column: str) -> str:
        """SQL reading a transcripts time column as epoch seconds."""
        return f"EXTRACT(EPOCH FROM {column})::float8" if self.postgres else column

    def ts_param(self) -> str:
        """SQL placeholder writing epoch seconds into a transcripts time column."""
        return "to_timestamp(?)" if self.postgres else "?"

    @asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[Tx]:
        """A transaction; ``lock`` names a Postgres advisory lock held until it ends.

        SQLite transactions are BEGIN IMMEDIATE on one connection, already serialised.
        """
        if self.postgres:
            async with self.db.connection("records") as conn, conn.transaction():
                tx = Tx(conn, True)
                if lock is not None:
                    await tx.lock(lock)
                yield tx
        else:
            async with self.db.transaction() as conn:
                yield Tx(conn, False)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only query."""
        if self.postgres:
            async with self.db.connection("records") as conn:
                return [tuple(r) for r in await conn.fetch(_pg(sql), *args)]
        return list(await self.db.fetchall(sql, tuple(args)))
