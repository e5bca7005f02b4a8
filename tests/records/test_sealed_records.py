"""Transcripts through the records layer: metadata sealed at rest, caller found by HMAC,
retention stamped, reads audited (SQLite and Postgres)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from records_helpers import make_settings, new_key

from voxpipe.records.db import RecordsDB
from voxpipe.records.repo import CallFilter
from voxpipe.records.runtime import backend_of
from voxpipe.state.session import Turn
from voxpipe.state.shared import close_shared_stores, shared_stores
from voxpipe.state.transcripts import Transcript

CALLER = "+447700900123"
REASON = "caller disputes the bill of Mrs Example"
SUMMARY = "wants a refund for order 5512"


def transcript(call_id: str = "CA1", *, ended: float = 1_700_000_100.0, **kw: Any) -> Transcript:
    return Transcript(
        call_id=call_id,
        started_at=ended - 60,
        ended_at=ended,
        turns=[Turn("user", "my account number is 778899", ended - 50, ended - 45)],
        caller=kw.pop("caller", CALLER),
        called="+14155550100",
        escalated=kw.pop("escalated", True),
        escalation_reason=REASON,
        metadata={"escalation_summary": SUMMARY, "consent": "dtmf", "carrier": "twilio"},
        **kw,
    )


async def raw_rows(db: Any) -> str:
    rdb = RecordsDB(db)
    cast = "metadata::text" if rdb.postgres else "metadata"
    rows = await rdb.fetch(
        f"SELECT caller, called, escalation_reason, {cast}, turns, caller_hmac FROM transcripts"
    )
    return repr(rows)


async def test_metadata_is_sealed_at_rest_and_found_by_caller_hash(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    s = make_settings(tmp_path, records_kek=new_key(), retention_days=30, **db_settings)
    stores = await shared_stores(s)
    try:
        backend = backend_of(stores.transcripts)
        assert backend is not None
        assert await stores.transcripts.write(transcript())
        assert await stores.transcripts.write(
            transcript("CA2", caller="+15555550199", escalated=False)
        )
        at_rest = await raw_rows(backend.db.db)
        for clear in (CALLER, "447700900123", "4155550100", REASON, SUMMARY, "778899", "dtmf"):
            assert clear not in at_rest
        assert "vxenc:" in at_rest
        # Found by number, in any spelling, without the number being stored readable.
        page, nxt = await backend.calls.page(CallFilter(caller="+44 7700-900123"))
        assert [c["call_id"] for c in page] == ["CA1"] and nxt is None
        assert page[0]["caller"] == CALLER
        assert page[0]["retain_until"] == 1_700_000_100.0 + 30 * 86400
        record = await backend.calls.get("CA1")
        assert record is not None
        assert record["escalation"]["reason"] == REASON
        assert record["escalation"]["summary"] == SUMMARY
        assert record["consent"] == "dtmf"
        assert record["turns"][0]["text"] == "my account number is 778899"
        masked = await backend.calls.get("CA1", mask=True)
        assert masked is not None and masked["caller"] == "*********0123"
        # The store's own read path decrypts too, and is audited in the records audit log.
        back = await stores.transcripts.read("CA1", reader="desk", purpose="callback")
        assert back is not None and back.caller == CALLER and back.escalation_reason == REASON
        rows = await backend.audit.entries(call_id="CA1")
        assert [(r.actor, r.action, r.outcome) for r in rows] == [("desk", "transcript.read", "ok")]
    finally:
        await close_shared_stores()


async def test_without_a_key_metadata_stays_readable_and_lookup_still_works(
    tmp_path: Path,
) -> None:
    s = make_settings(tmp_path)
    stores = await shared_stores(s)
    try:
        backend = backend_of(stores.transcripts)
        assert backend is not None
        assert await stores.transcripts.write(transcript())
        assert CALLER in await raw_rows(backend.db.db)  # the control: clear without a KEK
        page, _ = await backend.calls.page(CallFilter(caller=CALLER))
        assert [c["call_id"] for c in page] == ["CA1"]
    finally:
        await close_shared_stores()


async def test_listing_pages_with_a_cursor_and_filters(
    tmp_path: Path, db_settings: dict[str, Any]
) -> None:
    s = make_settings(tmp_path, records_kek=new_key(), **db_settings)
    stores = await shared_stores(s)
    try:
        backend = backend_of(stores.transcripts)
        assert backend is not None
        for i in range(7):
            t = transcript(f"CA{i}", ended=1_700_000_000.0 + i * 100, escalated=i % 2 == 0)
            assert await stores.transcripts.write(t)
        seen, cursor = [], None
        while True:
            page, cursor = await backend.calls.page(CallFilter(limit=3, cursor=cursor))
            seen += [c["call_id"] for c in page]
            if cursor is None:
                break
        assert seen == [f"CA{i}" for i in reversed(range(7))]
        esc, _ = await backend.calls.page(CallFilter(escalated=True))
        assert [c["call_id"] for c in esc] == ["CA6", "CA4", "CA2", "CA0"]
        window, _ = await backend.calls.page(
            CallFilter(start=1_700_000_000.0 + 100, end=1_700_000_000.0 + 300)
        )
        assert [c["call_id"] for c in window] == ["CA3", "CA2"]
        assert json.dumps(window)  # JSON-ready
    finally:
        await close_shared_stores()
