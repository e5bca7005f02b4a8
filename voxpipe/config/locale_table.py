"""The `locales` table in SQLite or Postgres: the one source of every call's locale.

Rows are kept in memory and refreshed in the background every `LOCALE_TABLE_REFRESH_S`, so a
call start never waits on the database and a row an operator adds is used within seconds,
without a restart. When the database is unreachable the table serves the last rows it read (the
shipped rows if it never read any): calls are answered, the outage is logged once, and the rows
are reloaded when the database returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from voxpipe.config.locales import (
    CallLocaleHints,
    LocaleChoice,
    LocaleRow,
    choose_locale,
    load_seed_rows,
)

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.state.postgres_store import PostgresDatabase
    from voxpipe.state.sqlite_store import SqliteDatabase

logger = logging.getLogger(__name__)

_COLUMNS = (
    "locale",
    "stt_model",
    "stt_language",
    "tts_voice",
    "tts_language",
    "greeting",
    "countries",
    "calling_codes",
    "ivr_digit",
    "enabled",
    "consent",
    # migration 7: per-row turn-taking (NULL = the deployment's setting)
    "turn_detection",
    "vad_stop_s",
    "vad_start_s",
    "vad_confidence",
    "vad_min_volume",
    "turn_max_wait_s",
)


def _values(row: LocaleRow) -> tuple[Any, ...]:
    return (
        row.locale,
        row.stt_model,
        row.stt_language,
        row.tts_voice,
        row.tts_language,
        row.greeting,
        " ".join(row.countries),
        " ".join(row.calling_codes),
        row.ivr_digit,
        row.enabled,
        row.consent,
        row.turn_detection,
        row.vad_stop_s,
        row.vad_start_s,
        row.vad_confidence,
        row.vad_min_volume,
        row.turn_max_wait_s,
    )


_reported_bad_rows: set[str] = set()


def _parse(records: list[dict[str, Any]]) -> list[LocaleRow]:
    """Rows from database records; an invalid row (an operator's typo) is skipped and reported
    once, rather than costing every call the whole table."""
    rows = []
    for record in records:
        try:
            rows.append(LocaleRow.from_mapping(record))
        except ValueError as exc:
            message = str(exc)
            if message not in _reported_bad_rows:
                _reported_bad_rows.add(message)
                logger.error("locale table: skipping an invalid row: %s", message)
    return rows


class _Backend(Protocol):
    async def connect(self) -> None: ...
    async def fetch(self) -> list[LocaleRow]: ...
    async def insert_missing(self, rows: Sequence[LocaleRow]) -> int: ...
    async def upsert(self, row: LocaleRow) -> None: ...
    async def close(self) -> None: ...


class _SqliteBackend:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def connect(self) -> None:
        await self.db.connect()

    async def fetch(self) -> list[LocaleRow]:
        rows = await self.db.fetchall(f"SELECT {', '.join(_COLUMNS)} FROM locales")
        return _parse([dict(zip(_COLUMNS, r, strict=True)) for r in rows])

    async def insert_missing(self, rows: Sequence[LocaleRow]) -> int:
        inserted = 0
        placeholders = ", ".join("?" for _ in _COLUMNS)
        async with self.db.transaction() as conn:
            for row in rows:
                cur = await conn.execute(
                    f"INSERT INTO locales ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                    "ON CONFLICT (locale) DO NOTHING",
                    _values(row),
                )
                inserted += max(cur.rowcount, 0)
        return inserted

    async def upsert(self, row: LocaleRow) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO locales ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT (locale) DO UPDATE SET {updates}, "
                "updated_at = (julianday('now') - 2440587.5) * 86400.0",
                _values(row),
            )

    async def close(self) -> None:
        await self.db.close()


class _PostgresBackend:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def connect(self) -> None:
        await self.db.pool()

    async def fetch(self) -> list[LocaleRow]:
        async with self.db.connection("load locales") as conn:
            rows = await conn.fetch(f"SELECT {', '.join(_COLUMNS)} FROM locales")
        return _parse([dict(r) for r in rows])

    def _insert_sql(self, on_conflict: str) -> str:
        placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
        return (
            f"INSERT INTO locales ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT (locale) {on_conflict}"
        )

    async def insert_missing(self, rows: Sequence[LocaleRow]) -> int:
        inserted = 0
        sql = self._insert_sql("DO NOTHING RETURNING locale")
        async with self.db.connection("seed locales") as conn, conn.transaction():
            for row in rows:
                if await conn.fetchval(sql, *_values(row)) is not None:
                    inserted += 1
        return inserted

    async def upsert(self, row: LocaleRow) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[1:])
        sql = self._insert_sql(f"DO UPDATE SET {updates}, updated_at = now()")
        async with self.db.connection("upsert locale") as conn:
            await conn.execute(sql, *_values(row))

    async def close(self) -> None:
        await self.db.close()


class LocaleTable:
    """Locale rows from the database, held in memory and refreshed in the background.

    `start()` loads the shipped rows at once, then (waiting at most `first_load_wait_s`) the
    database's: it migrates the schema and inserts shipped seed rows that are missing (existing
    rows are never overwritten; disable a row with `enabled = false` rather than deleting it, or
    the next start re-seeds it). From then on a background task re-reads the rows every
    `refresh_s` seconds; `choose_now()` and `rows_now()` answer from memory, never waiting.
    """

    def __init__(
        self,
        backend: _Backend,
        *,
        default_locale: str = "en-US",
        refresh_s: float = 5.0,
        seed_rows: Iterable[LocaleRow] | None = None,
        first_load_wait_s: float = 5.0,
    ) -> None:
        self._backend = backend
        self.default_locale = default_locale
        self.refresh_s = refresh_s
        self.first_load_wait_s = first_load_wait_s
        self._seed = tuple(seed_rows) if seed_rows is not None else tuple(load_seed_rows())
        self._rows: tuple[LocaleRow, ...] = self._seed
        # "shipped" until the database answered once; "database" after.
        self.source = "shipped"
        self.generation = 0  # bumped on every successful read of the database
        self.attempts = 0  # reads tried, successful or not
        self.outage = False
        self._ready = False  # the schema is migrated and the seed rows are in
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def sqlite(cls, path: str | Path | SqliteDatabase, **kwargs: Any) -> LocaleTable:
        """A table in a SQLite file (or a shared SqliteDatabase)."""
        from voxpipe.state.sqlite_store import SqliteDatabase

        db = path if isinstance(path, SqliteDatabase) else SqliteDatabase(path)
        return cls(_SqliteBackend(db), **kwargs)

    @classmethod
    def postgres(
        cls,
        dsn: str | PostgresDatabase,
        *,
        schema: str | None = None,
        timeout_s: float = 5.0,
        **kwargs: Any,
    ) -> LocaleTable:
        """A table in Postgres (or a shared PostgresDatabase)."""
        from voxpipe.state.postgres_store import PostgresDatabase

        db = (
            dsn
            if isinstance(dsn, PostgresDatabase)
            else PostgresDatabase(dsn, schema=schema, timeout_s=timeout_s)
        )
        return cls(_PostgresBackend(db), **kwargs)

    @classmethod
    def from_settings(cls, settings: VoxpipeSettings) -> LocaleTable:
        """Postgres when DATABASE_URL is a postgres:// URL, else the SQLite file."""
        from voxpipe.state import sqlite_path_from_url
        from voxpipe.state.postgres_url import is_postgres_url

        options: dict[str, Any] = {
            "default_locale": settings.default_locale,
            "refresh_s": settings.locale_table_refresh_s,
            "first_load_wait_s": settings.db_timeout_s,
        }
        url = settings.database_url
        if is_postgres_url(url):
            return cls.postgres(url or "", timeout_s=settings.db_timeout_s, **options)
        return cls.sqlite(sqlite_path_from_url(url) if url else settings.sqlite_path, **options)

    async def start(self) -> None:
        """Load the database's rows (waiting at most `first_load_wait_s`; the shipped rows
        meanwhile) and start refreshing them in the background. Never raises for an outage."""
        if self._task is not None:
            return
        self._closed = False
        from voxpipe.pipelines.clock import current_clock_is_virtual

        if current_clock_is_virtual():
            # A simulated call (`voxpipe call`, replay): time jumps whenever the loop waits, so a
            # timeout or a periodic refresh would fire at once. Read once, and wait for it.
            await self.refresh()
            return
        self._task = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="locale-table-refresh"
        )
        generation = self.generation
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.first_load_wait_s):
                await self.wait_refreshed(generation, attempts=True)

    async def close(self) -> None:
        """Stop refreshing and release the database connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._backend.close()

    # --- reading ------------------------------------------------------------------------------

    def rows_now(self) -> tuple[LocaleRow, ...]:
        """Every row (enabled or not) as last read: never waits on the database."""
        return self._rows

    def choose_now(self, hints: CallLocaleHints) -> LocaleChoice:
        """The locale row for a call from the rows in memory (see `choose_locale`)."""
        rows = self._rows if any(r.enabled for r in self._rows) else self._seed
        return choose_locale(rows, hints, self.default_locale)

    async def rows(self) -> list[LocaleRow]:
        """Every row (enabled or not), as last read."""
        return list(self._rows)

    async def choose(self, hints: CallLocaleHints) -> LocaleChoice:
        """The locale row for a call (see `choose_locale` for the order of hints)."""
        return self.choose_now(hints)

    async def upsert(self, row: LocaleRow) -> None:
        """Add or replace a row; this process sees it at once."""
        await self._backend.upsert(row)
        await self.refresh()

    # --- refreshing ---------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the rows now; False (and the rows unchanged) when the database is unreachable."""
        try:
            if not self._ready:
                await self._backend.connect()
                added = await self._backend.insert_missing(self._seed)
                if added:
                    logger.info("seeded %d locale row(s)", added)
                self._ready = True
            rows = await self._backend.fetch()
        except Exception as exc:
            if not self.outage:
                self.outage = True
                logger.warning(
                    "locale table unreachable, calls use the %s rows until it returns: %s",
                    "last read" if self.source == "database" else "shipped",
                    exc,
                )
            await self._notify(advanced=False)
            return False
        if self.outage:
            self.outage = False
            logger.warning("locale table reachable again: %d row(s) reloaded", len(rows))
        if not any(r.enabled for r in rows) and any(r.enabled for r in self._rows):
            logger.warning("the locale table has no enabled rows: calls use the shipped rows")
        self._rows = tuple(rows)
        self.source = "database"
        await self._notify(advanced=True)
        return True

    async def _notify(self, *, advanced: bool) -> None:
        async with self._changed:
            if advanced:
                self.generation += 1
            self.attempts += 1
            self._changed.notify_all()

    async def wait_refreshed(self, after: int | None = None, *, attempts: bool = False) -> int:
        """Wait until the rows were read after generation `after` (default: now); returns the
        new generation. With `attempts`, a failed attempt ends the wait too."""
        start = self.generation if after is None else after
        tries = self.attempts
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.generation > start or (attempts and self.attempts > tries)
            )
        return self.generation

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)
