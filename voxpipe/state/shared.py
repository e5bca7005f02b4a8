"""Process-wide stores shared by every call a worker runs (one connection pool each)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voxpipe.records.runtime import records_store
from voxpipe.state import make_database, make_session_store, make_transcript_store
from voxpipe.state.consent import ConsentStore, make_consent_store
from voxpipe.state.continuity import ContinuityStore, make_continuity_store
from voxpipe.state.session import SessionStore
from voxpipe.state.transcripts import TranscriptStore

if TYPE_CHECKING:
    from voxpipe.config.locale_table import LocaleTable
    from voxpipe.config.settings import VoxpipeSettings


@dataclass(slots=True)
class Stores:
    """The session store, transcript store, locale table and consent store of this worker
    (and the resumable conversations of callers who may call back)."""

    sessions: SessionStore
    transcripts: TranscriptStore
    locales: LocaleTable
    consents: ConsentStore
    continuity: ContinuityStore

    async def close(self) -> None:
        await self.sessions.close()
        await self.transcripts.close()
        await self.locales.close()
        await self.consents.close()
        await self.continuity.close()


_stores: dict[tuple[int, int], Stores] = {}
_locks: dict[int, asyncio.Lock] = {}  # per event loop: calls starting together open once


async def shared_stores(settings: VoxpipeSettings) -> Stores:
    """The stores for ``settings`` on the running loop, started on first use."""
    from voxpipe.config.shared_locales import shared_locale_table

    loop_id = id(asyncio.get_running_loop())
    key = (id(settings), loop_id)
    found = _stores.get(key)
    if found is not None:
        return found
    async with _locks.setdefault(loop_id, asyncio.Lock()):
        found = _stores.get(key)
        if found is None:
            # Transcripts and consent choices share one pool (or SQLite connection).
            db = make_database(settings)
            stores = Stores(
                make_session_store(settings),
                # Sealed metadata, retention, audited reads, call-end webhook (issue 12).
                records_store(settings, db, make_transcript_store(settings, db)),
                # The worker's one locale table: started, and never raising for an outage.
                await shared_locale_table(settings),
                make_consent_store(settings, db),
                make_continuity_store(settings),
            )
            await stores.sessions.start()
            await stores.transcripts.start()
            await stores.consents.start()
            await stores.continuity.start()
            _stores[key] = found = stores
    return found


async def close_shared_stores() -> None:
    """Close every store opened on the running loop (server shutdown, end of a test)."""
    from voxpipe.config.shared_locales import close_shared_locale_tables

    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _stores if k[1] == loop_id]:
        await _stores.pop(key).close()
    _locks.pop(loop_id, None)
    await close_shared_locale_tables()
