"""The conversation of a live call: turns, metadata and the worker's heartbeat, keyed by session id.

Times are wall-clock seconds since the epoch (`time.time()`), because several workers compare
them (the orphan sweeper reads heartbeats written by other processes).

Metadata keys voxpipe itself uses (any JSON value may be stored under other keys):
`call_id`, `caller`, `called`, `locale`, `started_at`, `escalated`, `escalation_reason`,
`worker_id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


def _new_turn_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Turn:
    """One completed utterance of the conversation (user, assistant, tool or system)."""

    role: str
    text: str
    started_at: float
    ended_at: float
    interrupted: bool = False
    # Per-turn latencies in milliseconds, e.g. {"stt_ms": 120, "llm_ttfb_ms": 310}.
    timings: dict[str, float] = field(default_factory=dict)
    # Tool calls made during the turn: [{"name": ..., "arguments": {...}, "result": ...}].
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Unique id so a write replayed after a lost reply is recognised and not stored twice.
    turn_id: str = field(default_factory=_new_turn_id)

    def to_dict(self) -> dict[str, Any]:
        """The turn as JSON-ready data."""
        return {
            "role": self.role,
            "text": self.text,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "interrupted": self.interrupted,
            "timings": dict(self.timings),
            "tool_calls": list(self.tool_calls),
            "turn_id": self.turn_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        """Rebuild a turn from `to_dict()` output."""
        return cls(
            role=str(data["role"]),
            text=str(data["text"]),
            started_at=float(data["started_at"]),
            ended_at=float(data["ended_at"]),
            interrupted=bool(data.get("interrupted", False)),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            tool_calls=list(data.get("tool_calls") or []),
            turn_id=str(data.get("turn_id") or _new_turn_id()),
        )


@dataclass(slots=True, frozen=True)
class Liveness:
    """A call's last heartbeat: which worker owns it and when it last said it was alive."""

    worker_id: str
    at: float


@dataclass(slots=True)
class SessionState:
    """A snapshot of one session: its metadata, its last turns and its heartbeat."""

    session_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    # The most recent turns, oldest first (at most the store's max_turns).
    turns: list[Turn] = field(default_factory=list)
    # Turns ever appended, including ones trimmed away.
    turn_count: int = 0
    created_at: float = 0.0
    # Last activity of the worker that owns the call (append, set_meta or touch).
    heartbeat_at: float = 0.0


@runtime_checkable
class SessionStore(Protocol):
    """Where a live call keeps its conversation so another worker can pick it up."""

    async def start(self) -> None:
        """Connect; a no-op for stores with nothing to connect to."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    async def load(self, session_id: str) -> SessionState | None:
        """The session, or None if it does not exist (never created, deleted or expired)."""

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        """Store a completed turn (creating the session if needed) and extend its TTL."""

    async def set_meta(self, session_id: str, values: Mapping[str, Any]) -> None:
        """Merge metadata into the session (creating it if needed) and extend its TTL."""

    async def touch(self, session_id: str, worker_id: str | None = None) -> None:
        """Activity: the owning worker is alive; creates the session if needed, extends the TTL."""

    async def heartbeat(self, session_id: str, worker_id: str) -> None:
        """Liveness of a live call, with no conversation data: records the call's last beat and
        worker, and refreshes the session's heartbeat and TTL when the session exists. Never
        creates a session (a call that may not be stored yet beats too)."""

    async def liveness(self, session_id: str) -> Liveness | None:
        """The call's last heartbeat, or None if it never beat (or was deleted)."""

    async def save(self, state: SessionState) -> None:
        """Replace the whole session with `state` (used to reconcile after an outage)."""

    async def delete(self, session_id: str) -> None:
        """Remove the session and its liveness; deleting a missing session is not an error."""

    async def list_sessions(self) -> list[str]:
        """Ids of every live session."""

    async def stale_sessions(self, older_than_s: float, now: float | None = None) -> list[str]:
        """Ids of sessions whose last heartbeat is more than `older_than_s` before `now`."""


def merge_states(older: SessionState, newer: SessionState, max_turns: int) -> SessionState:
    """Combine a stored session with turns and metadata written elsewhere since.

    Turns are unioned by turn id (older first), so a write that reached both sides once is kept
    once; metadata from `newer` wins.
    """
    seen = {t.turn_id for t in older.turns}
    added = [t for t in newer.turns if t.turn_id not in seen]
    duplicates = len(newer.turns) - len(added)
    created = [x for x in (older.created_at, newer.created_at) if x]
    return SessionState(
        session_id=older.session_id,
        meta={**older.meta, **newer.meta},
        turns=(older.turns + added)[-max_turns:],
        turn_count=older.turn_count + newer.turn_count - duplicates,
        created_at=min(created) if created else 0.0,
        heartbeat_at=max(older.heartbeat_at, newer.heartbeat_at),
    )
