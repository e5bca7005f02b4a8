"""The orphan sweeper: persists and clears sessions whose worker stopped heartbeating."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voxpipe.state.background import BackgroundTask
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
    transcript. Every live call beats every `HEARTBEAT_INTERVAL_S` from its start to its end
    (`SessionHeartbeat`), however long nothing is said, so only a dead worker's call goes stale. The transcript is built from what the session store holds, so nothing that was
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
        self._task = BackgroundTask(self._run, "voxpipe-orphan-sweeper")
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
            last_beat = state.heartbeat_at
            liveness = await self.sessions.liveness(session_id)
            if liveness is not None:
                last_beat = max(last_beat, liveness.at)
            if now - last_beat <= self.heartbeat_timeout_s:
                continue  # the call is alive (or its worker came back since the listing)
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
                now - last_beat,
                state.meta.get("worker_id", "unknown"),
                len(state.turns),
                extra={"call_id": transcript.call_id},
            )
        self.sweeps += 1
        return result

    def start(self) -> None:
        """Sweep every `interval_s` in a background task until `stop()`."""
        self._task.start()

    async def stop(self) -> None:
        """Stop the periodic sweeps."""
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                # One failed sweep (store unreachable) must not end sweeping for good.
                logger.exception("orphan sweep failed; will retry in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)
