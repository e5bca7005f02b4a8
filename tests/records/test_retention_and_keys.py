"""Retention purge (legal hold exempts, every deletion audited) and KEK rotation (data keys
re-wrapped, content untouched, old records still readable) on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from records_helpers import make_settings, new_key

from voxpipe.cli import main
from voxpipe.records.runtime import PURGE_ACTOR, PurgeJob, backend_of
from voxpipe.state.session import Turn
from voxpipe.state.shared import close_shared_stores, shared_stores
from voxpipe.state.transcripts import Transcript

DAY = 86400.0


def call(call_id: str, ended: float) -> Transcript:
    return Transcript(
        call_id,
        ended - 30,
        ended,
        turns=[Turn("user", f"words of {call_id}", ended - 20, ended - 10)],
        caller="+447700900123",
        escalation_reason="billing dispute",
        escalated=True,
    )


async def test_purge_deletes_expired_records_keeps_held_ones_and_audits(
    tmp_path: Path,
    db_settings: dict[str, Any],
    cli_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    s = make_settings(tmp_path, retention_days=10, **db_settings)
    stores = await shared_stores(s)
    try:
        backend = backend_of(stores.transcripts)
        assert backend is not None
        for cid, age_days in (("OLD1", 30), ("OLD2", 11), ("HELD", 40), ("NEW", 2)):
            assert await stores.transcripts.write(call(cid, now - age_days * DAY))
        # Legal hold through the command line, as an operator would.
        cli_env(**db_settings)
        assert await asyncio.to_thread(main, ["records", "hold", "HELD"]) == 0
        assert await asyncio.to_thread(main, ["records", "purge"]) == 0
        assert "purged 2 call record(s)" in capsys.readouterr().out
        page, _ = await backend.calls.page(_all())
        assert sorted(c["call_id"] for c in page) == ["HELD", "NEW"]
        held = next(c for c in page if c["call_id"] == "HELD")
        assert held["legal_hold"] is True
        purged = [
            (e.call_id, e.outcome)
            for e in await backend.audit.entries()
            if e.action == "retention.purge"
        ]
        assert ("OLD1", "deleted") in purged and ("OLD2", "deleted") in purged
        assert ("HELD", "deleted") not in purged
        summary = [e for e in await backend.audit.entries() if e.outcome == "done"]
        assert '"kept_legal_hold":["HELD"]' in summary[0].detail
        assert [e.action for e in await backend.audit.entries(call_id="HELD")] == ["call.hold"]
        # Lifting the hold makes it purgeable by the server's background job.
        assert await backend.calls.set_hold("HELD", False, PURGE_ACTOR)
        job = PurgeJob(backend.calls, interval_s=3600)
        assert await job.run_once() == ["HELD"]
        assert (await backend.audit.verify()).ok
    finally:
        await close_shared_stores()


def _all() -> Any:
    from voxpipe.records.repo import CallFilter

    return CallFilter(limit=100)


async def test_rotate_key_rewraps_data_keys_and_old_records_still_decrypt(
    tmp_path: Path,
    db_settings: dict[str, Any],
    cli_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    old, new = new_key(), new_key()
    # Written under the old key (as TRANSCRIPT_KEY, the setting that came first).
    s_old = make_settings(tmp_path, transcript_key=old, **db_settings)
    stores = await shared_stores(s_old)
    backend = backend_of(stores.transcripts)
    assert backend is not None
    await stores.transcripts.write(call("CA1", time.time()))
    before = await backend.db.fetch("SELECT turns, caller FROM transcripts")
    await close_shared_stores()

    cli_env(records_kek=new, records_kek_previous=old, **db_settings)
    assert await asyncio.to_thread(main, ["records", "rotate-key"]) == 0
    assert "re-wrapped the data keys of 1 call record(s)" in capsys.readouterr().out

    # The new KEK alone now reads everything: the old one can be retired.
    s_new = make_settings(tmp_path, records_kek=new, **db_settings)
    stores = await shared_stores(s_new)
    try:
        backend = backend_of(stores.transcripts)
        assert backend is not None
        after = await backend.db.fetch("SELECT turns, caller FROM transcripts")
        header_len = 4 + 8 + 2 + 60 + 7
        assert bytes(after[0][0])[:header_len] != bytes(before[0][0])[:header_len]
        assert bytes(after[0][0])[header_len:] == bytes(before[0][0])[header_len:]
        record = await backend.calls.get("CA1")
        assert record is not None
        assert record["turns"][0]["text"] == "words of CA1"
        assert record["caller"] == "+447700900123"
        assert record["escalation"]["reason"] == "billing dispute"
        from voxpipe.records.repo import CallFilter

        found, _ = await backend.calls.page(CallFilter(caller="+447700900123"))
        assert [c["call_id"] for c in found] == ["CA1"]  # look-up hash recomputed
        rotations = [e for e in await backend.audit.entries() if e.action == "key.rotate"]
        assert len(rotations) == 1 and '"rows_rewrapped":1' in rotations[0].detail
    finally:
        await close_shared_stores()
