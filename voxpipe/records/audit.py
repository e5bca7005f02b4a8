"""The records audit log: one hash-chained row per access, append-only.

Each row's ``hash`` is SHA-256 over its own fields and the previous row's hash, and rows are
numbered without gaps, so editing or deleting a row (done behind the append-only triggers, by
someone with the database owner's rights) breaks the chain at that row; ``verify`` names it.
Appends take a lock (a Postgres advisory lock; SQLite's write lock) so two workers appending at
once cannot fork the chain. Removing rows from the end leaves a valid shorter chain: compare
the head ``verify`` reports with one kept elsewhere (a log line, a ticket) to detect that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from voxpipe.records.db import RecordsDB, Tx

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "AuditVerdict"]

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
_LOCK = "voxpipe-records-audit:"
_COLUMNS = "seq, at, actor, role, action, call_id, outcome, client, detail, prev_hash, hash"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One access: who (actor, role), what (action, call id), outcome, when, from where."""

    seq: int
    at: float
    actor: str
    role: str
    action: str
    call_id: str | None
    outcome: str
    client: str
    detail: str
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "call_id": self.call_id,
            "outcome": self.outcome,
            "client": self.client,
            "detail": json.loads(self.detail),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def row_hash(
    seq: int,
    at: float,
    actor: str,
    role: str,
    action: str,
    call_id: str | None,
    outcome: str,
    client: str,
    detail: str,
    prev_hash: str,
) -> str:
    """The chained hash of one row (canonical JSON of its fields, the previous hash included)."""
    body = json.dumps(
        [seq, repr(float(at)), actor, role, action, call_id, outcome, client, detail, prev_hash],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """What ``verify`` found: rows checked, the head hash, and the first bad row if any."""

    rows: int
    head: str
    bad_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_seq is None


class AuditLog:
    """Appends to and reads the ``records_audit`` table."""

    def __init__(self, db: RecordsDB) -> None:
        self.db = db

    async def append(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        outcome: str,
        client: str = "-",
        call_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one row in its own transaction."""
        async with self.db.transaction() as tx:
            return await self.append_in(
                tx,
                actor=actor,
                role=role,
                action=action,
                outcome=outcome,
                client=client,
                call_id=call_id,
                detail=detail,
            )

    async def append_in(
        self,
        tx: Tx,
        *,
        actor: str,
        role: str,
        action: str,
        outcome: str,
        client: str = "-",
        call_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one row inside ``tx`` (so that, e.g., a deletion and its row commit together)."""
        await tx.lock(_LOCK)
        last = await tx.fetch("SELECT seq, hash FROM records_audit ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(last[0][0]) + 1, str(last[0][1])) if last else (1, GENESIS)
        at = time.time()
        text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), default=str)
        digest = row_hash(seq, at, actor, role, action, call_id, outcome, client, text, prev)
        await tx.execute(
            f"INSERT INTO records_audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, at, actor, role, action, call_id, outcome, client, text, prev, digest),
        )
        logger.info(
            "audit #%d: %s (%s) %s %s -> %s from %s",
            seq,
            actor,
            role,
            action,
            call_id or "-",
            outcome,
            client,
            extra={"call_id": call_id or "-", "client": client},
        )
        return AuditEntry(
            seq, at, actor, role, action, call_id, outcome, client, text, prev, digest
        )

    async def entries(
        self,
        *,
        call_id: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Rows matching the filters, oldest first."""
        where: list[str] = ["seq > ?"]
        args: list[Any] = [after_seq]
        if call_id is not None:
            where.append("call_id = ?")
            args.append(call_id)
        if actor is not None:
            where.append("actor = ?")
            args.append(actor)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM records_audit WHERE {' AND '.join(where)} "
            "ORDER BY seq LIMIT ?",
            (*args, limit),
        )
        return [_entry(r) for r in rows]

    async def verify(self, batch: int = 5000) -> AuditVerdict:
        """Walk the whole chain; the first row whose number, link or hash is wrong is reported."""
        prev, expected, count = GENESIS, 1, 0
        while True:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM records_audit WHERE seq >= ? ORDER BY seq LIMIT ?",
                (expected, batch),
            )
            if not rows:
                return AuditVerdict(count, prev)
            for row in rows:
                e = _entry(row)
                if e.seq != expected:
                    return AuditVerdict(count, prev, expected, f"row {expected} is missing")
                if e.prev_hash != prev:
                    return AuditVerdict(
                        count, prev, e.seq, f"row {e.seq} does not link to row {e.seq - 1}"
                    )
                recomputed = row_hash(
                    e.seq,
                    e.at,
                    e.actor,
                    e.role,
                    e.action,
                    e.call_id,
                    e.outcome,
                    e.client,
                    e.detail,
                    e.prev_hash,
                )
                if recomputed != e.hash:
                    return AuditVerdict(count, prev, e.seq, f"row {e.seq} was altered")
                prev, expected, count = e.hash, e.seq + 1, count + 1


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, at, actor, role, action, call_id, outcome, client, detail, prev_hash, digest = row
    return AuditEntry(
        int(seq),
        float(at),
        str(actor),
        str(role),
        str(action),
        call_id,
        str(outcome),
        str(client),
        str(detail),
        str(prev_hash),
        str(digest),
    )
