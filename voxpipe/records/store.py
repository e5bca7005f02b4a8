"""The records layer in front of the transcript store: seal metadata, stamp retention, audit
reads, and tell the call-end webhook (``on_stored``) about each call newly stored."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from voxpipe.records.audit import AuditLog
from voxpipe.records.fields import RecordSealer
from voxpipe.state.transcripts import ReadRecord, Transcript, TranscriptStore

__all__ = ["RecordsTranscriptStore"]

logger = logging.getLogger(__name__)

OnStored = Callable[[Transcript], Awaitable[None]]
DAY_S = 86400.0


class RecordsTranscriptStore:
    """Wraps the (spooling) transcript store; what it writes is sealed before the spool too."""

    def __init__(
        self,
        inner: TranscriptStore,
        sealer: RecordSealer,
        *,
        retention_days: int,
        audit: AuditLog | None = None,
        on_stored: list[OnStored] | None = None,
        webhook: Any = None,
        backend: Any = None,
    ) -> None:
        self.inner = inner
        self.sealer = sealer
        self.retention_days = retention_days
        self.audit = audit
        self.on_stored = list(on_stored or [])
        self.webhook = webhook  # a CallEndWebhook: its sender runs while the store is open
        self.backend = backend  # the RecordsBackend the records API uses on the same database

    async def start(self) -> None:
        await self.inner.start()
        if self.webhook is not None:
            self.webhook.start()

    async def close(self) -> None:
        if self.webhook is not None:
            await self.webhook.close()
        await self.inner.close()

    async def write(self, transcript: Transcript) -> bool:
        retain = transcript.retain_until
        if retain is None:
            retain = transcript.ended_at + self.retention_days * DAY_S
        sealed = dataclasses.replace(self.sealer.seal_transcript(transcript), retain_until=retain)
        stored = await self.inner.write(sealed)
        if stored:
            clear = dataclasses.replace(transcript, retain_until=retain)
            for hook in self.on_stored:
                try:
                    await hook(clear)
                except Exception:  # a webhook's trouble never loses or fails the transcript
                    logger.exception("call-end hook failed for call %s", transcript.call_id)
        return stored

    async def read(
        self, call_id: str, *, reader: str, purpose: str | None = None
    ) -> Transcript | None:
        found = await self.inner.read(call_id, reader=reader, purpose=purpose)
        if self.audit is not None:
            await self.audit.append(
                actor=reader,
                role="internal",
                action="transcript.read",
                call_id=call_id,
                outcome="ok" if found is not None else "not_found",
                detail={"purpose": purpose} if purpose else None,
            )
        return None if found is None else self.sealer.open_transcript(found)

    async def reads(self, call_id: str) -> list[ReadRecord]:
        return await self.inner.reads(call_id)

    async def call_ids(self, limit: int = 100) -> list[str]:
        return await self.inner.call_ids(limit)
