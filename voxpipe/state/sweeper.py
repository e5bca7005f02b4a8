"""The orphan sweeper: persists and clears sessions whose worker stopped heartbeating."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voxpipe.state.session import SessionStore
from voxpipe.state.transcripts import Transcript, TranscriptStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SweepResult:
    """What one sweep did."""

    persisted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class OrphanSweeper:
    """Every `interval_s`, writes the transcript of each orphaned session and deletes it.

    A session is orphaned when its last heartbeat is older than `heartbeat_timeout_s`: the
    worker that owned the call died (killed, crashed, lost its network) without writing the
    transcript. The transcript is built from what the session store holds, so nothing that was
    stored is lost. Several workers may sweep at once: the transcript write is idempotent on
    call id, and a session is deleted only after its transcript is written.
    """

    def __init__(
        self,
        sessions: SessionStore,
        transcripts: TranscriptStore,
        *,
        heartbeat_timeout_s: float = 60.0,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.transcripts = transcripts
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.sweeps = 0

    async def sweep_once(self) -> SweepResult:
        """Persist and clear every orphaned session now."""
        result = SweepResult()
        now = self._clock()
        for session_id in await self.sessions.stale_sessions(self.heartbeat_timeout_s, now):
            state = await self.sessions.load(session_id)
            if state is None:
                # Expired between the listing and the load: nothing left to save.
                await self.sessions.delete(session_id)
                continue
            if now - state.heartbeat_at <= self.heartbeat_timeout_s:
                continue  # the worker came back since the listing
            transcript = Transcript.from_session(state, swept=True, swept_at=now)
            try:
                await self.transcripts.write(transcript)
            except Exception:
                # Keep the session so the next sweep tries again; never drop unsaved turns.
                logger.exception(
                    "orphaned session %s: transcript write failed, kept for the next sweep",
                    session_id,
                    extra={"call_id": transcript.call_id},
                )
                result.failed.append(session_id)
                continue
            await self.sessions.delete(session_id)
            result.persisted.append(session_id)
            logger.warning(
                "orphaned session %s (no heartbeat for %.0f s, worker %s): transcript of %d "
                "turn(s) written, session cleared",
                session_id,
                now - state.heartbeat_at,
                state.meta.get("worker_id", "unknown"),
                len(state.turns),
                extra={"call_id": transcript.call_id},
            )
        self.sweeps += 1
        return result

    def start(self) -> None:
        """Sweep every `interval_s` in a background task until `stop()`."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="voxpipe-orphan-sweeper"
            )

    async def stop(self) -> None:
        """Stop the periodic sweeps."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                # One failed sweep (store unreachable) must not end sweeping for good.
                logger.exception("orphan sweep failed; will retry in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)
