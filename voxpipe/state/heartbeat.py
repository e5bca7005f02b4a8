"""The heartbeat a live call writes to its session, so the orphan sweeper knows its worker lives."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from types import TracebackType

from voxpipe.state.session import SessionStore

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    """`host:pid`: names the worker in session metadata and in the sweeper's log."""
    return f"{socket.gethostname()}:{os.getpid()}"


class SessionHeartbeat:
    """Touches one session every `interval_s` from `start()` until `stop()` (or the `async with`).

    A failed touch is logged and retried at the next beat: a missed beat or two is harmless as
    long as the interval is well under the sweeper's heartbeat timeout.
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        *,
        interval_s: float = 10.0,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.interval_s = interval_s
        self.worker_id = worker_id or default_worker_id()
        self.beats = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Beat once now (so the session exists with its worker id), then periodically."""
        await self._beat()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"voxpipe-heartbeat-{self.session_id}"
            )

    async def stop(self) -> None:
        """Stop beating (the session is then swept after the timeout unless deleted)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _beat(self) -> None:
        try:
            await self.store.touch(self.session_id, worker_id=self.worker_id)
            self.beats += 1
        except Exception as exc:
            logger.warning(
                "heartbeat for session %s failed: %s",
                self.session_id,
                exc,
                extra={"call_id": self.session_id},
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._beat()

    async def __aenter__(self) -> SessionHeartbeat:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
