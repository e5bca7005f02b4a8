"""The heartbeat a live call writes, so the orphan sweeper knows its worker lives."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from types import TracebackType

from voxpipe.state.background import BackgroundTask
from voxpipe.state.session import SessionStore

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    """`host:pid`: names the worker in session metadata and in the sweeper's log."""
    return f"{socket.gethostname()}:{os.getpid()}"


class SessionHeartbeat:
    """Beats for one call every `interval_s` from `start()` until `stop()` (or the `async with`).

    A beat is `SessionStore.heartbeat`: the call's liveness (worker id and time) and, once the
    call has a session, the session's heartbeat and TTL. It holds no conversation data and
    creates no session, so it runs from the first moment of a call, before consent too. A
    failed beat is logged and retried at the next one: a missed beat or two is harmless as long
    as the interval is well under the sweeper's heartbeat timeout. Timing follows the running
    event loop, so on a virtual clock the beats follow virtual time.
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        *,
        interval_s: float = 10.0,
        worker_id: str | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval must be > 0, got {interval_s}")
        self.store = store
        self.session_id = session_id
        self.interval_s = interval_s
        self.worker_id = worker_id or default_worker_id()
        self.beats = 0
        self.failures = 0
        # Made at start() and dropped at stop(): it holds this heartbeat (its ``_run``), and
        # kept after the call that cycle would wait for the cycle collector.
        self._task: BackgroundTask | None = None

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._task is not None and self._task.running

    async def start(self) -> None:
        """Beat once now (so the call is known alive from its start), then periodically."""
        if self.running:
            return
        await self.beat()
        self._task = BackgroundTask(self._run, f"voxpipe-heartbeat-{self.session_id}")
        self._task.start()

    async def stop(self) -> None:
        """Stop beating (a session still stored is then swept after the timeout)."""
        task, self._task = self._task, None
        if task is not None:
            await task.stop()

    async def beat(self) -> None:
        """One beat now; a failure is logged, never raised."""
        try:
            await self.store.heartbeat(self.session_id, self.worker_id)
            self.beats += 1
        except Exception as exc:
            self.failures += 1
            logger.warning(
                "heartbeat for call %s failed: %s",
                self.session_id,
                exc,
                extra={"call_id": self.session_id},
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.beat()

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
