"""Call records in the database: list, read, erase, legal hold, retention purge, key rotation.

Every operation that touches a record appends its audit row in the same transaction, so a
deletion never commits without its row (and vice versa).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxpipe.records.audit import AuditLog
from voxpipe.records.db import RecordsDB
from voxpipe.records.fields import RecordSealer, mask_number
from voxpipe.state.rows import open_turns

if TYPE_CHECKING:
    from voxpipe.records.tokens import Principal
    from voxpipe.state.crypto import TranscriptCipher

__all__ = ["CallFilter", "CallRecords", "LegalHoldError"]


class LegalHoldError(RuntimeError):
    """The call is under legal hold: it may not be erased or purged."""


@dataclass(slots=True)
class CallFilter:
    """``GET /api/calls`` query: time range (epoch s), caller number, escalated, page."""

    start: float | None = None
    end: float | None = None
    caller: str | None = None
    escalated: bool | None = None
    limit: int = 50
    cursor: str | None = None


def _cursor(started: float, call_id: str) -> str:
    raw = json.dumps([started, call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, call_id = json.loads(raw)
        return float(started), str(call_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("cursor is not one this server gave") from exc


class CallRecords:
    """Queries of the transcripts table for the API and the ``voxpipe records`` commands."""

    def __init__(self, db: RecordsDB, cipher: TranscriptCipher | None, audit: AuditLog) -> None:
        self.db = db
        self.cipher = cipher
        self.sealer = RecordSealer(cipher)
        self.audit = audit
        # The call recordings (voxpipe.records.storage.RecordingStore): erased and purged with
        # their call. A store that cannot delete fails the transaction, so no row goes without.
        self.recordings: Any = None

    async def _delete_recording(self, call_id: str) -> bool:
        if self.recordings is None:
            return False
        return bool(await self.recordings.delete(call_id))

    def _meta_columns(self) -> str:
        e = self.db.epoch
        return (
            f"call_id, caller, called, locale, {e('started_at')}, {e('ended_at')}, duration_s, "
            f"escalated, turn_count, {e('retain_until')}, legal_hold"
        )

    def _summary(self, row: tuple[Any, ...], mask: bool) -> dict[str, Any]:
        cid, caller, called, locale, started, ended, duration, esc, n, retain, hold = row[:11]
        caller = self.sealer.open_text(caller, cid, "caller")
        return {
            "call_id": cid,
            "caller": mask_number(caller) if mask else caller,
            "called": self.sealer.open_text(called, cid, "called"),
            "locale": locale,
            "started_at": float(started),
            "ended_at": float(ended),
            "duration_s": float(duration),
            "escalated": bool(esc),
            "turn_count": int(n),
            "retain_until": None if retain is None else float(retain),
            "legal_hold": bool(hold),
            "has_recording": False,
        }

    async def page(
        self, f: CallFilter, *, escalated_only: bool = False, mask: bool = False
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of calls, newest first, and the cursor of the next page (None at the end)."""
        started = self.db.epoch("started_at")
        where: list[str] = []
        args: list[Any] = []
        if f.start is not None:
            where.append(f"{started} >= ?")
            args.append(f.start)
        if f.end is not None:
            where.append(f"{started} < ?")
            args.append(f.end)
        if f.caller:
            where.append("caller_hmac = ?")
            args.append(self.sealer.caller_hash(f.caller))
        if escalated_only or f.escalated is not None:
            where.append("escalated = ?")
            args.append(True if escalated_only else bool(f.escalated))
        if f.cursor:
            t, cid = _parse_cursor(f.cursor)
            where.append(f"({started} < ? OR ({started} = ? AND call_id < ?))")
            args += [t, t, cid]
        limit = max(1, min(f.limit, 500))
        sql = f"SELECT {self._meta_columns()} FROM transcripts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, call_id DESC LIMIT ?"
        rows = await self.db.fetch(sql, (*args, limit + 1))
        page = [self._summary(r, mask) for r in rows[:limit]]
        more = len(rows) > limit
        nxt = _cursor(page[-1]["started_at"], page[-1]["call_id"]) if more and page else None
        return page, nxt

    async def get(self, call_id: str, *, mask: bool = False) -> dict[str, Any] | None:
        """Metadata, turns, escalation record, consent and payment pauses of one call."""
        rows = await self.db.fetch(
            f"SELECT {self._meta_columns()}, escalation_reason, encrypted, key_id, turns, "
            "metadata FROM transcripts WHERE call_id = ?",
            (call_id,),
        )
        if not rows:
            return None
        row = rows[0]
        out = self._summary(row, mask)
        reason, encrypted, key_id, turns, metadata = row[11:]
        meta = metadata if isinstance(metadata, dict) else json.loads(metadata or "{}")
        meta = self.sealer.open_meta(meta, call_id)
        out["turns"] = [
            t.to_dict()
            for t in open_turns(bytes(turns), bool(encrypted), key_id, call_id, self.cipher)
        ]
        escalated = out["escalated"]
        out["escalation"] = (
            {
                "reason": self.sealer.open_text(reason, call_id, "escalation_reason"),
                "summary": meta.pop("escalation_summary", None),
                "record": meta.pop("escalation", None),
            }
            if escalated
            else None
        )
        out["consent"] = meta.pop("consent", None)
        out["payment_pauses"] = meta.pop("payment_pauses", [])
        out["metadata"] = meta
        return out

    async def is_escalated(self, call_id: str) -> bool | None:
        """Whether the call escalated; None when there is no such call."""
        rows = await self.db.fetch(
            "SELECT escalated FROM transcripts WHERE call_id = ?", (call_id,)
        )
        return None if not rows else bool(rows[0][0])

    async def erase(self, call_id: str, who: Principal, client: str) -> bool:
        """Delete one call's record and recording (an erasure request); LegalHoldError when on
        hold."""
        recording = False
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT legal_hold FROM transcripts WHERE call_id = ?", (call_id,)
            )
            if rows and bool(rows[0][0]):
                await self.audit.append_in(
                    tx,
                    actor=who.name,
                    role=who.role,
                    action="call.delete",
                    call_id=call_id,
                    outcome="refused_legal_hold",
                    client=client,
                )
                held = True
            else:
                held = False
                recording = await self._delete_recording(call_id)
                n = await tx.execute("DELETE FROM transcripts WHERE call_id = ?", (call_id,))
                await self.audit.append_in(
                    tx,
                    actor=who.name,
                    role=who.role,
                    action="call.delete",
                    call_id=call_id,
                    outcome="deleted" if n or recording else "not_found",
                    client=client,
                    detail={"recording_deleted": recording},
                )
        if held:
            raise LegalHoldError(f"call {call_id} is under legal hold")
        return bool(rows) or recording

    async def set_hold(self, call_id: str, on: bool, who: Principal, client: str = "-") -> bool:
        """Set or clear the legal hold of one call; False when there is no such call."""
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE transcripts SET legal_hold = ? WHERE call_id = ?", (on, call_id)
            )
            await self.audit.append_in(
                tx,
                actor=who.name,
                role=who.role,
                action="call.hold" if on else "call.release",
                call_id=call_id,
                outcome="ok" if n else "not_found",
                client=client,
            )
        return n > 0

    async def purge(self, who: Principal, now: float | None = None) -> list[str]:
        """Delete every record past its ``retain_until`` that is not under legal hold."""
        now = time.time() if now is None else now
        retain = self.db.epoch("retain_until")
        async with self.db.transaction() as tx:
            # Workers purging at once: the second waits, then finds nothing left to delete.
            await tx.lock("voxpipe-records-audit:")
            due = await tx.fetch(
                f"SELECT call_id, legal_hold FROM transcripts WHERE {retain} < ? ORDER BY call_id",
                (now,),
            )
            deleted = [str(r[0]) for r in due if not bool(r[1])]
            held = [str(r[0]) for r in due if bool(r[1])]
            for call_id in deleted:
                recording = await self._delete_recording(call_id)
                await tx.execute("DELETE FROM transcripts WHERE call_id = ?", (call_id,))
                await self.audit.append_in(
                    tx,
                    actor=who.name,
                    role=who.role,
                    action="retention.purge",
                    call_id=call_id,
                    outcome="deleted",
                    detail={"recording_deleted": recording},
                )
            if deleted or held:
                await self.audit.append_in(
                    tx,
                    actor=who.name,
                    role=who.role,
                    action="retention.purge",
                    outcome="done",
                    detail={"deleted": len(deleted), "kept_legal_hold": held},
                )
        return deleted

    async def rotate(self, who: Principal, batch: int = 200) -> int:
        """Re-wrap every data key under the current KEK (content untouched); rows changed."""
        if self.cipher is None:
            raise ValueError("no KEK is set: set RECORDS_KEK (and RECORDS_KEK_PREVIOUS)")
        meta_param = "CAST(? AS jsonb)" if self.db.postgres else "?"
        changed, last = 0, ""
        while True:
            rows = await self.db.fetch(
                "SELECT call_id, caller, called, escalation_reason, encrypted, turns, metadata "
                "FROM transcripts WHERE call_id > ? ORDER BY call_id LIMIT ?",
                (last, batch),
            )
            if not rows:
                break
            for cid, caller, called, reason, encrypted, turns, metadata in rows:
                last = cid
                meta = metadata if isinstance(metadata, dict) else json.loads(metadata or "{}")
                s = self.sealer
                new_turns = self.cipher.rewrap(bytes(turns), cid) if encrypted else None
                new = (
                    s.rewrap_text(caller, cid, "caller"),
                    s.rewrap_text(called, cid, "called"),
                    s.rewrap_text(reason, cid, "escalation_reason"),
                    s.rewrap_meta(meta, cid),
                )
                if new_turns is None and all(v is None for v in new):
                    continue
                async with self.db.transaction() as tx:
                    await tx.execute(
                        "UPDATE transcripts SET turns = ?, key_id = ?, caller = ?, called = ?, "
                        f"escalation_reason = ?, metadata = {meta_param}, caller_hmac = ? "
                        "WHERE call_id = ?",
                        (
                            new_turns if new_turns is not None else bytes(turns),
                            self.cipher.key_id if encrypted else None,
                            new[0] or caller,
                            new[1] or called,
                            new[2] or reason,
                            json.dumps(new[3] or meta),
                            s.caller_hash(s.open_text(caller, cid, "caller")),
                            cid,
                        ),
                    )
                changed += 1
        await self.audit.append(
            actor=who.name,
            role=who.role,
            action="key.rotate",
            outcome="ok",
            detail={"rows_rewrapped": changed, "kek_id": self.cipher.ring.key_id},
        )
        return changed
