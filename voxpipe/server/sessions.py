"""The registry of live calls: who is connected, and a sweeper that ends calls gone silent.

A media websocket normally carries audio every 20 ms. When nothing has arrived for
``silence_timeout_s`` the far end is gone without a close (a dead NAT, a crashed carrier
edge): the sweeper ends the call and closes the socket, so no pipeline outlives its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["CallSession", "SessionRegistry"]

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class CallSession:
    """One live call on this server."""

    call_id: str
    carrier: str
    last_activity: Callable[[], float]  # loop time of the last inbound message
    end: Callable[[str], Awaitable[None]]  # ends the call (closes the socket) with a reason
    started_at: float = 0.0
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""


class SessionRegistry:
    """Live calls by id, with a background sweep for silent ones."""

    def __init__(self, *, silence_timeout_s: float = 20.0, sweep_interval_s: float | None = None):
        self.silence_timeout_s = silence_timeout_s
        self.sweep_interval_s = sweep_interval_s or max(0.05, min(5.0, silence_timeout_s / 4))
        self._sessions: dict[str, CallSession] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.swept = 0
        self._changed: asyncio.Event | None = None  # set whenever a call ends (drain waits on it)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._sessions

    def get(self, call_id: str) -> CallSession | None:
        return self._sessions.get(call_id)

    @property
    def sessions(self) -> list[CallSession]:
        return list(self._sessions.values())

    def add(self, session: CallSession) -> None:
        """Register a started call (a second call with the same id gets a suffix)."""
        key = session.call_id
        n = 1
        while key in self._sessions:
            n += 1
            key = f"{session.call_id}~{n}"
        session.call_id = key
        session.started_at = asyncio.get_running_loop().time()
        self._sessions[key] = session
        self._ensure_sweeper()

    def remove(self, session: CallSession) -> None:
        """Forget a call that has ended."""
        if self._sessions.get(session.call_id) is session:
            del self._sessions[session.call_id]
        session.ended.set()
        if self._changed is not None:
            self._changed.set()

    async def wait_empty(self, timeout_s: float) -> bool:
        """Wait until no call is live, at most ``timeout_s``; True when none is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._sessions:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed = self._changed or asyncio.Event()
            self._changed.clear()
            waiter = loop.create_task(self._changed.wait())
            await asyncio.wait({waiter}, timeout=remaining)
            waiter.cancel()
        return True

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_forever(), name="voxpipe-session-sweeper"
            )

    async def _sweep_forever(self) -> None:
        while self._sessions:
            await asyncio.sleep(self.sweep_interval_s)
            await self.sweep()
        self._sweeper = None

    async def sweep(self) -> list[str]:
        """End every call silent for longer than the timeout; returns their ids."""
        now = asyncio.get_running_loop().time()
        silent = [
            s
            for s in self._sessions.values()
            if now - s.last_activity() > self.silence_timeout_s and not s.ended.is_set()
        ]
        for s in silent:
            idle = now - s.last_activity()
            logger.warning(
                "no message for %.1f s: ending the call",
                idle,
                extra={"call_id": s.call_id},
            )
            self.swept += 1
            try:
                await s.end(f"socket silent for {idle:.0f} s")
            except Exception:
                logger.exception("ending a silent call failed", extra={"call_id": s.call_id})
                self.remove(s)
        return [s.call_id for s in silent]

    async def close_all(self, reason: str = "server shutting down") -> None:
        """End every call (server shutdown) and stop the sweeper."""
        for s in list(self._sessions.values()):
            with contextlib.suppress(Exception):
                await s.end(reason)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
