"""Wiring of the records layer into a worker: the transcript store wrapper, the retention purge
job, and the objects the records API works with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxpipe.records.audit import AuditLog
from voxpipe.records.db import RecordsDB
from voxpipe.records.fields import RecordSealer
from voxpipe.records.repo import CallRecords
from voxpipe.records.store import RecordsTranscriptStore
from voxpipe.records.tokens import Principal, TokenStore
from voxpipe.records.webhook import CallEndWebhook

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.state.transcripts import TranscriptStore

__all__ = ["PURGE_ACTOR", "PurgeJob", "RecordsBackend", "backend_of", "records_store"]

logger = logging.getLogger(__name__)

PURGE_ACTOR = Principal("retention-purge", "system")


@dataclass(slots=True)
class RecordsBackend:
    """What the records API and commands need: queries, audit log, tokens."""

    db: RecordsDB
    calls: CallRecords
    audit: AuditLog
    tokens: TokenStore
    jwt: Any = None  # a JwtVerifier when RECORDS_JWKS_URL is set

    @classmethod
    def build(cls, settings: VoxpipeSettings, db: Any) -> RecordsBackend:
        from voxpipe.records.oidc import JwtVerifier
        from voxpipe.state import make_transcript_cipher

        rdb = RecordsDB(db)
        audit = AuditLog(rdb)
        calls = CallRecords(rdb, make_transcript_cipher(settings), audit)
        from voxpipe.records.storage import recording_store

        calls.recordings = recording_store(settings)
        return cls(rdb, calls, audit, TokenStore(rdb), JwtVerifier.from_settings(settings))


def records_store(
    settings: VoxpipeSettings, db: Any, inner: TranscriptStore
) -> RecordsTranscriptStore:
    """``inner`` (the spooling transcript store on ``db``) behind the records layer: metadata
    sealed, retention stamped, reads audited, the call-end webhook told of each stored call."""
    from voxpipe.state import make_transcript_cipher

    backend = RecordsBackend.build(settings, db)
    cipher = make_transcript_cipher(settings)
    webhook = CallEndWebhook.from_settings(settings, cipher)
    store = RecordsTranscriptStore(
        inner,
        RecordSealer(cipher),
        retention_days=settings.retention_days,
        audit=backend.audit,
        on_stored=[webhook.enqueue] if webhook is not None else [],
        webhook=webhook,
        backend=backend,
    )
    return store


def backend_of(transcripts: object) -> RecordsBackend | None:
    """The records backend of a shared transcript store (None if it has no records layer)."""
    backend = getattr(transcripts, "backend", None)
    return backend if isinstance(backend, RecordsBackend) else None


class PurgeJob:
    """Runs the retention purge now and then every ``interval_s``, in the background.

    ``calls`` may be a coroutine function that opens the records (the server's shared stores):
    a database that is down at start delays the purge, never the server.
    """

    def __init__(
        self, calls: CallRecords | Callable[[], Awaitable[CallRecords | None]], interval_s: float
    ) -> None:
        self._calls = calls
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="voxpipe-retention-purge"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run_once(self) -> list[str]:
        """One purge; the call ids deleted."""
        calls = self._calls if isinstance(self._calls, CallRecords) else await self._calls()
        if calls is None:
            return []
        deleted = await calls.purge(PURGE_ACTOR)
        if deleted:
            logger.warning("retention purge deleted %d call record(s)", len(deleted))
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # an unreachable database is retried at the next interval
                logger.exception("retention purge failed; retrying in %.0f s", self.interval_s)
            self.runs += 1
            await asyncio.sleep(self.interval_s)


def start_background(settings: VoxpipeSettings) -> PurgeJob:
    """The server's records jobs: the retention purge on the shared stores (opening them also
    starts the call-end webhook sender, so messages spooled by a previous run go out)."""

    async def calls() -> CallRecords | None:
        from voxpipe.state.shared import shared_stores

        backend = backend_of((await shared_stores(settings)).transcripts)
        return None if backend is None else backend.calls

    job = PurgeJob(calls, settings.purge_interval_s)
    job.start()
    if settings.recording == "on":
        from voxpipe.records.storage import recording_store

        # Recordings a previous run left in the spool (the object store was down) go out now.
        recording_store(settings).start()
    return job
