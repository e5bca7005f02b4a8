"""The database schema, as an ordered list of migrations per dialect, and their runners.

Each database records the versions it has in `schema_version`; starting a store applies the
missing ones in one transaction. Add a migration by appending to both lists: never edit one
that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxpipe.records.schema import RECORDS_POSTGRES, RECORDS_SQLITE

if TYPE_CHECKING:
    import aiosqlite


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version number, a name, and the statements it runs."""

    version: int
    name: str
    statements: tuple[str, ...]


POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "transcripts and read audit log",
        (
            """CREATE TABLE transcripts (
                call_id TEXT PRIMARY KEY,
                caller TEXT,
                called TEXT,
                locale TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                ended_at TIMESTAMPTZ NOT NULL,
                duration_s DOUBLE PRECISION NOT NULL,
                escalated BOOLEAN NOT NULL DEFAULT FALSE,
                escalation_reason TEXT,
                turn_count INTEGER NOT NULL,
                encrypted BOOLEAN NOT NULL,
                key_id TEXT,
                turns BYTEA NOT NULL,
                metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
                written_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
            "CREATE INDEX transcripts_started_at_idx ON transcripts (started_at)",
            "CREATE INDEX transcripts_caller_idx ON transcripts (caller)",
            """CREATE TABLE transcript_reads (
                id BIGSERIAL PRIMARY KEY,
                call_id TEXT NOT NULL,
                reader TEXT NOT NULL,
                purpose TEXT,
                found BOOLEAN NOT NULL,
                read_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
            "CREATE INDEX transcript_reads_call_id_idx ON transcript_reads (call_id)",
        ),
    ),
    Migration(
        2,
        "locale table",
        (
            """CREATE TABLE locales (
                locale TEXT PRIMARY KEY,
                stt_model TEXT NOT NULL,
                stt_language TEXT NOT NULL,
                tts_voice TEXT NOT NULL,
                tts_language TEXT NOT NULL,
                greeting TEXT NOT NULL,
                countries TEXT NOT NULL DEFAULT '',
                calling_codes TEXT NOT NULL DEFAULT '',
                ivr_digit TEXT,
                enabled BOOLEAN NOT NULL DEFAULT TRUE,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
        ),
    ),
    Migration(
        3,
        "retention consent per caller",
        (
            # caller_key is an HMAC of the caller's number, never the number itself (see
            # voxpipe.state.consent): a caller who declined leaves no readable trace here.
            """CREATE TABLE retention_consent (
                caller_key TEXT PRIMARY KEY,
                granted BOOLEAN NOT NULL,
                call_id TEXT,
                decided_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
        ),
    ),
    Migration(
        4,
        "transcript owner",
        # The call start that owns a call id: writes from another owner are refused.
        ("ALTER TABLE transcripts ADD COLUMN owner TEXT",),
    ),
    Migration(
        5,
        "consent policy per locale row",
        # ivr | notice | none; NULL = the default of the row's countries (voxpipe.config.locales).
        ("ALTER TABLE locales ADD COLUMN consent TEXT",),
    ),
    Migration(
        6,
        "call records: lookup hash, retention, legal hold, audit log, API tokens",
        RECORDS_POSTGRES,
    ),
    Migration(
        7,
        "turn-taking per locale row",
        # NULL = the deployment's TURN_DETECTION / VAD_* / TURN_MAX_WAIT_S (issue 13).
        (
            "ALTER TABLE locales ADD COLUMN turn_detection TEXT",
            "ALTER TABLE locales ADD COLUMN vad_stop_s DOUBLE PRECISION",
            "ALTER TABLE locales ADD COLUMN vad_start_s DOUBLE PRECISION",
            "ALTER TABLE locales ADD COLUMN vad_confidence DOUBLE PRECISION",
            "ALTER TABLE locales ADD COLUMN vad_min_volume DOUBLE PRECISION",
            "ALTER TABLE locales ADD COLUMN turn_max_wait_s DOUBLE PRECISION",
        ),
    ),
)

SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "transcripts and read audit log",
        (
            """CREATE TABLE transcripts (
                call_id TEXT PRIMARY KEY,
                caller TEXT,
                called TEXT,
                locale TEXT NOT NULL,
                started_at REAL NOT NULL,
                ended_at REAL NOT NULL,
                duration_s REAL NOT NULL,
                escalated INTEGER NOT NULL DEFAULT 0,
                escalation_reason TEXT,
                turn_count INTEGER NOT NULL,
                encrypted INTEGER NOT NULL,
                key_id TEXT,
                turns BLOB NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{}',
                written_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
            )""",
            "CREATE INDEX transcripts_started_at_idx ON transcripts (started_at)",
            "CREATE INDEX transcripts_caller_idx ON transcripts (caller)",
            """CREATE TABLE transcript_reads (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                call_id TEXT NOT NULL,
                reader TEXT NOT NULL,
                purpose TEXT,
                found INTEGER NOT NULL,
                read_at REAL NOT NULL
            )""",
            "CREATE INDEX transcript_reads_call_id_idx ON transcript_reads (call_id)",
        ),
    ),
    Migration(
        2,
        "locale table",
        (
            """CREATE TABLE locales (
                locale TEXT PRIMARY KEY,
                stt_model TEXT NOT NULL,
                stt_language TEXT NOT NULL,
                tts_voice TEXT NOT NULL,
                tts_language TEXT NOT NULL,
                greeting TEXT NOT NULL,
                countries TEXT NOT NULL DEFAULT '',
                calling_codes TEXT NOT NULL DEFAULT '',
                ivr_digit TEXT,
                enabled INTEGER NOT NULL DEFAULT 1,
                updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
            )""",
        ),
    ),
    Migration(
        3,
        "retention consent per caller",
        (
            """CREATE TABLE retention_consent (
                caller_key TEXT PRIMARY KEY,
                granted INTEGER NOT NULL,
                call_id TEXT,
                decided_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
            )""",
        ),
    ),
    Migration(
        4,
        "transcript owner",
        ("ALTER TABLE transcripts ADD COLUMN owner TEXT",),
    ),
    Migration(
        5,
        "consent policy per locale row",
        ("ALTER TABLE locales ADD COLUMN consent TEXT",),
    ),
    Migration(
        6,
        "call records: lookup hash, retention, legal hold, audit log, API tokens",
        RECORDS_SQLITE,
    ),
    Migration(
        7,
        "turn-taking per locale row",
        # NULL = the deployment's TURN_DETECTION / VAD_* / TURN_MAX_WAIT_S (issue 13).
        (
            "ALTER TABLE locales ADD COLUMN turn_detection TEXT",
            "ALTER TABLE locales ADD COLUMN vad_stop_s REAL",
            "ALTER TABLE locales ADD COLUMN vad_start_s REAL",
            "ALTER TABLE locales ADD COLUMN vad_confidence REAL",
            "ALTER TABLE locales ADD COLUMN vad_min_volume REAL",
            "ALTER TABLE locales ADD COLUMN turn_max_wait_s REAL",
        ),
    ),
)


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer voxpipe than this one."""


def _check_not_newer(current: int, migrations: tuple[Migration, ...], where: str) -> None:
    latest = migrations[-1].version
    if current > latest:
        raise SchemaTooNewError(
            f"{where} has schema version {current}, newer than this voxpipe knows ({latest}): "
            "upgrade voxpipe or point it at another database."
        )


async def migrate_postgres(
    conn: Any, migrations: tuple[Migration, ...] = POSTGRES_MIGRATIONS
) -> int:
    """Apply missing migrations on an asyncpg connection; returns the schema version."""
    async with conn.transaction():
        # Workers starting together must not run the same migration twice; the lock is per
        # schema so separate schemas (tests, tenants) do not wait on each other.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('voxpipe-migrate:' || current_schema()))"
        )
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )"""
        )
        current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        _check_not_newer(current, migrations, "the Postgres database")
        for migration in migrations:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            current = migration.version
        return current


async def migrate_sqlite(
    conn: aiosqlite.Connection, migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS
) -> int:
    """Apply missing migrations on an aiosqlite connection in autocommit mode."""
    # IMMEDIATE takes the write lock at once, so two processes cannot both migrate.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
            )"""
        )
        async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        _check_not_newer(current, migrations, "the SQLite database")
        for migration in migrations:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
            current = migration.version
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    return current
