"""The full record of a finished call, and the protocol of the stores that keep it."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from voxpipe.state.session import SessionState, Turn


@dataclass(slots=True)
class Transcript:
    """Every turn of one call plus its metadata, written once at call end."""

    call_id: str
    started_at: float
    ended_at: float
    turns: list[Turn] = field(default_factory=list)
    caller: str | None = None
    called: str | None = None
    locale: str = "en-US"
    escalated: bool = False
    escalation_reason: str | None = None
    # Anything else worth keeping (bot name, transport, swept=True ...). Stored in clear:
    # never put conversation content here, it belongs in `turns` (encrypted at rest).
    metadata: dict[str, Any] = field(default_factory=dict)
    # The call start that owns this call id (set by the server, random per call): a stored
    # transcript is replaced only by a write from the same owner. None outside the server.
    owner: str | None = None
    # Records (issue 12): keyed hash of the caller's number for look-ups, and the time (epoch
    # seconds) after which the retention purge deletes the record. Set by the records layer.
    caller_hmac: str | None = None
    retain_until: float | None = None

    @property
    def duration_s(self) -> float:
        """Call length in seconds."""
        return max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used by the spool)."""
        return {
            "call_id": self.call_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "turns": [t.to_dict() for t in self.turns],
            "caller": self.caller,
            "called": self.called,
            "locale": self.locale,
            "escalated": self.escalated,
            "escalation_reason": self.escalation_reason,
            "metadata": dict(self.metadata),
            "owner": self.owner,
            "caller_hmac": self.caller_hmac,
            "retain_until": self.retain_until,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transcript:
        """Rebuild from `to_dict()` output."""
        return cls(
            call_id=str(data["call_id"]),
            started_at=float(data["started_at"]),
            ended_at=float(data["ended_at"]),
            turns=[Turn.from_dict(t) for t in data.get("turns", [])],
            caller=data.get("caller"),
            called=data.get("called"),
            locale=str(data.get("locale") or "en-US"),
            escalated=bool(data.get("escalated", False)),
            escalation_reason=data.get("escalation_reason"),
            metadata=dict(data.get("metadata") or {}),
            owner=data.get("owner"),
            caller_hmac=data.get("caller_hmac"),
            retain_until=data.get("retain_until"),
        )

    @classmethod
    def from_session(
        cls, state: SessionState, *, ended_at: float | None = None, **metadata: Any
    ) -> Transcript:
        """The transcript of a session as its store holds it (the last N turns).

        `ended_at` defaults to the session's last activity; extra keyword arguments go into
        `metadata` (e.g. `swept=True`).
        """
        meta = state.meta
        turns = list(state.turns)
        started = (
            meta.get("started_at")
            or state.created_at
            or (turns[0].started_at if turns else time.time())
        )
        if ended_at is None:
            ended_at = max([state.heartbeat_at] + [t.ended_at for t in turns])
        extra = {k: v for k, v in meta.items() if k not in _SESSION_FIELDS}
        extra.update(metadata)
        if state.turn_count > len(turns):
            # The session store keeps only the last N turns; say so instead of hiding it.
            extra["turns_dropped"] = state.turn_count - len(turns)
        return cls(
            call_id=str(meta.get("call_id") or state.session_id),
            started_at=float(started),
            ended_at=float(ended_at),
            turns=turns,
            caller=meta.get("caller"),
            called=meta.get("called"),
            locale=str(meta.get("locale") or "en-US"),
            escalated=bool(meta.get("escalated", False)),
            escalation_reason=meta.get("escalation_reason"),
            metadata=extra,
            # The sweeper writes a dead worker's call as that call's owner: once, and the
            # worker's own final write (same owner, more turns) may still replace it.
            owner=meta.get("owner"),
        )


_SESSION_FIELDS = {
    "call_id",
    "caller",
    "called",
    "locale",
    "started_at",
    "escalated",
    "escalation_reason",
    "owner",
}


@dataclass(slots=True, frozen=True)
class ReadRecord:
    """One entry of the transcript audit log: who read which call, when."""

    call_id: str
    reader: str
    purpose: str | None
    found: bool
    read_at: float


@runtime_checkable
class TranscriptStore(Protocol):
    """Durable home of finished calls' transcripts; every read is audited."""

    async def start(self) -> None:
        """Connect and create/migrate the schema."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    async def write(self, transcript: Transcript) -> bool:
        """Store the transcript; idempotent on call id, written once per call by its owner.

        A second write of the same call id replaces the first only if it comes from the same
        ``owner`` and has more turns (the worker's own end-of-call write beats a sweeper's
        earlier one for that call). A write from another owner (a stream that claimed the id
        of another call) is refused and logged as a security event. Returns True if this write
        was stored, False if the stored copy was kept.
        """

    async def read(
        self, call_id: str, *, reader: str, purpose: str | None = None
    ) -> Transcript | None:
        """The transcript, or None; the read is recorded in the audit log either way."""

    async def reads(self, call_id: str) -> list[ReadRecord]:
        """The audit log of reads of one call, oldest first."""

    async def call_ids(self, limit: int = 100) -> list[str]:
        """Ids of the most recently started calls (metadata only, not an audited read)."""


def log_refused_owner(call_id: str, stored_owner: str | None, owner: str | None) -> None:
    """Log a write refused because another call start owns ``call_id`` (a security event)."""
    logging.getLogger("voxpipe.security").warning(
        "claimed_call_id from %s: transcript write for call %s refused: the id is stored for "
        "another call start (owner %s, this write's owner %s)",
        "-",
        call_id,
        (stored_owner or "none")[:8],
        (owner or "none")[:8],
        extra={"client": "-", "event": "claimed_call_id", "call_id": call_id},
    )
