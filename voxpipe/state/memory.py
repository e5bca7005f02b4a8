"""In-process session store: the embedded default, and the fallback while Redis is away."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from voxpipe.state.session import Liveness, SessionState, Turn

_PURGE_EVERY = 1024


class MemorySessionStore:
    """Sessions in a dict, with the same TTL and turn cap as the Redis store."""

    def __init__(
        self,
        ttl_s: float = 3600.0,
        max_turns: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.ttl_s = ttl_s
        self.max_turns = max_turns
        self._clock = clock
        self._sessions: dict[str, SessionState] = {}
        self._expires_at: dict[str, float] = {}
        # Heartbeats, apart from the sessions: a call beats before it may store anything.
        self._alive: dict[str, Liveness] = {}
        self._writes = 0

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the sessions stay (a closed store is still readable)."""

    def _live(self, session_id: str) -> SessionState | None:
        state = self._sessions.get(session_id)
        if state is None:
            return None
        if self._expires_at[session_id] <= self._clock():
            self._drop(session_id)
            return None
        return state

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._expires_at.pop(session_id, None)

    def purge_expired(self) -> int:
        """Drop every expired session now; returns how many."""
        now = self._clock()
        expired = [sid for sid, at in self._expires_at.items() if at <= now]
        for sid in expired:
            self._drop(sid)
        for sid in [sid for sid, beat in self._alive.items() if beat.at + self.ttl_s <= now]:
            del self._alive[sid]
        return len(expired)

    def _activity(self, session_id: str) -> SessionState:
        """The session (created if missing) with heartbeat and TTL refreshed."""
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            # Expiry is otherwise lazy: a session nobody reads again would stay forever.
            self.purge_expired()
        now = self._clock()
        state = self._live(session_id)
        if state is None:
            state = SessionState(session_id=session_id, created_at=now)
            self._sessions[session_id] = state
        state.heartbeat_at = now
        self._expires_at[session_id] = now + self.ttl_s
        return state

    def has(self, session_id: str) -> bool:
        """True if the session exists and has not expired."""
        return self._live(session_id) is not None

    async def load(self, session_id: str) -> SessionState | None:
        state = self._live(session_id)
        # A copy: callers must not be able to change the store behind its back.
        return copy.deepcopy(state) if state is not None else None

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        state = self._activity(session_id)
        state.turns.append(copy.deepcopy(turn))
        del state.turns[: -self.max_turns]
        state.turn_count += 1

    async def set_meta(self, session_id: str, values: Mapping[str, Any]) -> None:
        state = self._activity(session_id)
        state.meta.update(copy.deepcopy(dict(values)))

    async def touch(self, session_id: str, worker_id: str | None = None) -> None:
        state = self._activity(session_id)
        if worker_id is not None:
            state.meta["worker_id"] = worker_id

    async def heartbeat(self, session_id: str, worker_id: str) -> None:
        now = self._clock()
        self._alive[session_id] = Liveness(worker_id, now)
        state = self._live(session_id)
        if state is not None:  # refreshed, never created
            state.heartbeat_at = now
            state.meta["worker_id"] = worker_id
            self._expires_at[session_id] = now + self.ttl_s

    async def liveness(self, session_id: str) -> Liveness | None:
        beat = self._alive.get(session_id)
        if beat is not None and beat.at + self.ttl_s <= self._clock():
            del self._alive[session_id]
            return None
        return beat

    async def save(self, state: SessionState) -> None:
        stored = copy.deepcopy(state)
        del stored.turns[: -self.max_turns]
        if not stored.created_at:
            stored.created_at = self._clock()
        if not stored.heartbeat_at:
            stored.heartbeat_at = self._clock()
        self._sessions[state.session_id] = stored
        self._expires_at[state.session_id] = self._clock() + self.ttl_s

    async def delete(self, session_id: str) -> None:
        self._drop(session_id)
        self._alive.pop(session_id, None)

    async def list_sessions(self) -> list[str]:
        return [sid for sid in list(self._sessions) if self._live(sid) is not None]

    async def stale_sessions(self, older_than_s: float, now: float | None = None) -> list[str]:
        cutoff = (self._clock() if now is None else now) - older_than_s
        return [
            sid for sid in await self.list_sessions() if self._sessions[sid].heartbeat_at < cutoff
        ]
