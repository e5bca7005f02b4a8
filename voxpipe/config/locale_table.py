"""The `locales` table in SQLite or Postgres: seeded from the shipped file, read per call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
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
    )


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
        return [LocaleRow.from_mapping(dict(zip(_COLUMNS, r, strict=True))) for r in rows]

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
        return [LocaleRow.from_mapping(dict(r)) for r in rows]

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
    """Locale rows from the database, chosen per call.

    Rows are read on every `choose()` unless `cache_ttl_s` > 0, so a row an operator adds is
    used by the next call. `start()` migrates the schema and inserts shipped seed rows that
    are missing (existing rows are never overwritten; disable a row with `enabled = false`
    rather than deleting it, or the next start re-seeds it).
    """

    def __init__(
        self,
        backend: _Backend,
        *,
        default_locale: str = "en-US",
        cache_ttl_s: float = 0.0,
        seed_rows: Iterable[LocaleRow] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self.default_locale = default_locale
        self.cache_ttl_s = cache_ttl_s
        self._seed = list(seed_rows) if seed_rows is not None else None
        self._clock = clock
        self._cache: list[LocaleRow] | None = None
        self._cached_at = 0.0

    @classmethod
    def sqlite(cls, path: str | Path | SqliteDatabase, **kwargs: Any) -> LocaleTable:
        """A table in a SQLite file (or a shared SqliteDatabase)."""
        from voxpipe.state.sqlite_store import SqliteDatabase

        db = path if isinstance(path, SqliteDatabase) else SqliteDatabase(path)
        return cls(_SqliteBackend(db), **kwargs)

    @classmethod
    def postgres(
        cls, dsn: str | PostgresDatabase, *, schema: str | None = None, **kwargs: Any
    ) -> LocaleTable:
        """A table in Postgres (or a shared PostgresDatabase)."""
        from voxpipe.state.postgres_store import PostgresDatabase

        db = dsn if isinstance(dsn, PostgresDatabase) else PostgresDatabase(dsn, schema=schema)
        return cls(_PostgresBackend(db), **kwargs)

    @classmethod
    def from_settings(cls, settings: VoxpipeSettings) -> LocaleTable:
        """Postgres when DATABASE_URL is a postgres:// URL, else the SQLite file."""
        from voxpipe.state import sqlite_path_from_url
        from voxpipe.state.postgres_url import is_postgres_url

        options: dict[str, Any] = {
            "default_locale": settings.default_locale,
            "cache_ttl_s": settings.locale_cache_ttl_s,
        }
        url = settings.database_url
        if is_postgres_url(url):
            return cls.postgres(url or "", **options)
        return cls.sqlite(sqlite_path_from_url(url) if url else settings.sqlite_path, **options)

    async def start(self) -> None:
        """Connect, migrate, and seed missing shipped rows."""
        await self._backend.connect()
        rows = self._seed if self._seed is not None else load_seed_rows()
        added = await self._backend.insert_missing(rows)
        if added:
            logger.info("seeded %d locale row(s)", added)

    async def close(self) -> None:
        await self._backend.close()

    async def rows(self) -> list[LocaleRow]:
        """Every row (enabled or not), from the database or the short-lived cache."""
        if (
            self._cache is not None
            and self.cache_ttl_s > 0
            and self._clock() - self._cached_at < self.cache_ttl_s
        ):
            return self._cache
        self._cache = await self._backend.fetch()
        self._cached_at = self._clock()
        return self._cache

    async def choose(self, hints: CallLocaleHints) -> LocaleChoice:
        """The locale row for a call (see `choose_locale` for the order of hints)."""
        return choose_locale(await self.rows(), hints, self.default_locale)

    async def upsert(self, row: LocaleRow) -> None:
        """Add or replace a row; this process sees it at once."""
        await self._backend.upsert(row)
        self._cache = None
