"""Retention consent per caller: whether a caller agreed that their calls may be kept.

A caller's choice is stored once (``record``) and read at the start of each of their calls
(``get``), so a known caller is not asked again. Stores: in memory (tests), SQLite (the embedded
default, in the transcript database) and Postgres (production, shared by every worker); the
table comes from migration 3 (``voxpipe.state.migrations``).

Caller ids are not stored as given: the key is ``caller_key(caller)``, an HMAC-SHA256 of the
normalised number under a key derived from ``TRANSCRIPT_KEY``. The table only has to answer
"what did this number choose", which a keyed hash does, and a caller who *declined* retention
then leaves no readable phone number behind (a plain SHA-256 of a phone number is reversed by
trying every number, so the key matters). Without ``TRANSCRIPT_KEY`` the hash is unkeyed: still
not the number in clear, but only a weak pseudonym. Changing the key makes known callers
unknown, so they are asked again: the safe way to fail.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.state.postgres_store import PostgresDatabase
    from voxpipe.state.sqlite_store import SqliteDatabase

__all__ = [
    "ConsentRecord",
    "ConsentStore",
    "MemoryConsentStore",
    "PostgresConsentStore",
    "SqliteConsentStore",
    "caller_key",
    "consent_secret",
    "identifiable_caller",
    "make_consent_store",
]

# What carriers send when the caller withheld their number: textual values, and Twilio's
# keypad spellings of ANONYMOUS, RESTRICTED, UNAVAILABLE and BLOCKED. Every withheld caller
# shares one such "number", so a choice stored under it would apply to strangers.
WITHHELD_CALLER_IDS = frozenset(
    {
        "",
        "anonymous",
        "restricted",
        "unknown",
        "unavailable",
        "private",
        "blocked",
        "withheld",
        "+266696687",
        "+7378742833",
        "+86282452253",
        "+2562533",
    }
)
logger = logging.getLogger(__name__)
_SEPARATORS = re.compile(r"[\s().\-]")
_KEY_CONTEXT = b"voxpipe retention consent caller key v1"


@dataclass(slots=True, frozen=True)
class ConsentRecord:
    """A caller's stored choice: ``granted`` or not, made on call ``call_id`` at ``decided_at``."""

    granted: bool
    call_id: str | None
    decided_at: float


def identifiable_caller(caller: str | None) -> str | None:
    """The caller id normalised (``+44 7700-900123`` -> ``+447700900123``), or None when the
    number was withheld or is not a number: such callers are asked on every call."""
    if caller is None:
        return None
    number = _SEPARATORS.sub("", caller.strip())
    if number.lower() in WITHHELD_CALLER_IDS:
        return None
    digits = number[1:] if number.startswith("+") else number
    if len(digits) < 5 or not digits.isdigit():
        return None
    return number


def caller_key(caller: str, secret: bytes | None = None) -> str:
    """The stored key for a (normalised) caller id: HMAC-SHA256 under ``secret``, hex."""
    if secret is None:
        return hashlib.sha256(_KEY_CONTEXT + b":" + caller.encode()).hexdigest()
    return hmac.new(secret, caller.encode(), hashlib.sha256).hexdigest()


def consent_secret(settings: VoxpipeSettings) -> bytes | None:
    """The HMAC key for caller ids, derived from TRANSCRIPT_KEY (None when it is unset)."""
    key = settings.transcript_key_bytes()
    if key is None:
        return None
    # A key of its own (not TRANSCRIPT_KEY itself): one secret, two unrelated uses.
    return hmac.new(key, _KEY_CONTEXT, hashlib.sha256).digest()


@runtime_checkable
class ConsentStore(Protocol):
    """Where callers' retention choices live, keyed by (a hash of) the caller id."""

    async def start(self) -> None:
        """Connect and create/migrate the schema."""

    async def close(self) -> None:
        """Release connections."""

    async def get(self, caller: str) -> ConsentRecord | None:
        """The stored choice of ``caller``, or None if they never chose (or are unidentifiable)."""

    async def record(self, caller: str, granted: bool, *, call_id: str | None = None) -> bool:
        """Store ``caller``'s choice (replacing an earlier one); False if not stored because the
        caller cannot be identified (withheld number)."""


class _KeyedStore:
    """Turns caller ids into keys for the concrete stores."""

    def __init__(self, secret: bytes | None) -> None:
        self._secret = secret

    def _key(self, caller: str) -> str | None:
        number = identifiable_caller(caller)
        return None if number is None else caller_key(number, self._secret)


class MemoryConsentStore(_KeyedStore):
    """Choices in a dict: for tests and single-process trials (forgotten on restart)."""

    def __init__(self, secret: bytes | None = None) -> None:
        super().__init__(secret)
        self.records: dict[str, ConsentRecord] = {}

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def get(self, caller: str) -> ConsentRecord | None:
        key = self._key(caller)
        return None if key is None else self.records.get(key)

    async def record(self, caller: str, granted: bool, *, call_id: str | None = None) -> bool:
        key = self._key(caller)
        if key is None:
            return False
        self.records[key] = ConsentRecord(granted, call_id, time.time())
        return True


class SqliteConsentStore(_KeyedStore):
    """Choices in the SQLite database (shared with the transcripts when given the same file)."""

    def __init__(self, db: str | SqliteDatabase, *, secret: bytes | None = None) -> None:
        super().__init__(secret)
        from voxpipe.state.sqlite_store import SqliteDatabase

        self.db = db if isinstance(db, SqliteDatabase) else SqliteDatabase(db)

    async def start(self) -> None:
        await self.db.connect()

    async def close(self) -> None:
        await self.db.close()

    async def get(self, caller: str) -> ConsentRecord | None:
        key = self._key(caller)
        if key is None:
            return None
        rows = await self.db.fetchall(
            "SELECT granted, call_id, decided_at FROM retention_consent WHERE caller_key = ?",
            (key,),
        )
        if not rows:
            return None
        granted, call_id, decided_at = rows[0]
        return ConsentRecord(bool(granted), call_id, float(decided_at))

    async def record(self, caller: str, granted: bool, *, call_id: str | None = None) -> bool:
        key = self._key(caller)
        if key is None:
            return False
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO retention_consent (caller_key, granted, call_id, decided_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (caller_key) DO UPDATE SET "
                "granted = excluded.granted, call_id = excluded.call_id, "
                "decided_at = excluded.decided_at",
                (key, int(granted), call_id, time.time()),
            )
        return True


class PostgresConsentStore(_KeyedStore):
    """Choices in Postgres, shared by every worker."""

    def __init__(
        self, db: str | PostgresDatabase, *, secret: bytes | None = None, schema: str | None = None
    ) -> None:
        super().__init__(secret)
        from voxpipe.state.postgres_store import PostgresDatabase

        self.db = db if isinstance(db, PostgresDatabase) else PostgresDatabase(db, schema=schema)

    async def start(self) -> None:
        """Connect; a database that is down is not an error here (each read and write retries
        it, and a caller whose choice cannot be read is asked again)."""
        try:
            await self.db.pool()
        except Exception as exc:
            logger.warning("consent store not reachable at start (%s): callers will be asked", exc)

    async def close(self) -> None:
        await self.db.close()

    async def get(self, caller: str) -> ConsentRecord | None:
        key = self._key(caller)
        if key is None:
            return None
        async with self.db.connection("read consent") as conn:
            row = await conn.fetchrow(
                "SELECT granted, call_id, decided_at FROM retention_consent WHERE caller_key = $1",
                key,
            )
        if row is None:
            return None
        return ConsentRecord(row["granted"], row["call_id"], row["decided_at"].timestamp())

    async def record(self, caller: str, granted: bool, *, call_id: str | None = None) -> bool:
        key = self._key(caller)
        if key is None:
            return False
        async with self.db.connection("record consent") as conn:
            await conn.execute(
                "INSERT INTO retention_consent (caller_key, granted, call_id, decided_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (caller_key) DO UPDATE SET "
                "granted = EXCLUDED.granted, call_id = EXCLUDED.call_id, "
                "decided_at = EXCLUDED.decided_at",
                key,
                granted,
                call_id,
                datetime.fromtimestamp(time.time(), tz=UTC),
            )
        return True


def make_consent_store(
    settings: VoxpipeSettings, db: PostgresDatabase | SqliteDatabase | None = None
) -> ConsentStore:
    """Choices in ``db`` (default: ``make_database``, where the transcripts are)."""
    from voxpipe.state import make_database

    secret = consent_secret(settings)
    db = db if db is not None else make_database(settings)
    if db.dialect == "postgres":
        return PostgresConsentStore(db, secret=secret)  # type: ignore[arg-type]
    return SqliteConsentStore(db, secret=secret)  # type: ignore[arg-type]
