"""The call-end webhook: Standard Webhooks signature (checked with the `standardwebhooks`
package), retried from the durable spool until a 2xx, never delivered twice."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from records_helpers import make_settings, new_key
from standardwebhooks import Webhook

from voxpipe.records.fields import RecordSealer
from voxpipe.records.webhook import CallEndWebhook
from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.session import Turn
from voxpipe.state.shared import close_shared_stores, shared_stores
from voxpipe.state.transcripts import Transcript

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Receiver:
    """A real HTTP receiver that answers the statuses it is given, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.accepted.set()
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    async def make(statuses: list[int]) -> Receiver:
        rec = Receiver(statuses)
        app = web.Application()
        app.router.add_post("/hook", rec.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        rec.url = f"http://127.0.0.1:{port}/hook"
        runners.append(runner)
        return rec

    runners: list[web.AppRunner] = []
    yield make
    for runner in runners:
        await runner.cleanup()


def finished_call(call_id: str = "CA7") -> Transcript:
    return Transcript(
        call_id,
        1_700_000_000.0,
        1_700_000_095.5,
        turns=[Turn("user", "hi", 1, 2), Turn("assistant", "hello", 2, 3)],
        caller="+447700900123",
        locale="en-GB",
        escalated=True,
        escalation_reason="billing dispute",
        metadata={"escalation_summary": "wants a refund", "consent": "dtmf"},
    )


def hook(
    url: str, spool: Path, cipher: TranscriptCipher | None, mode: str = "hmac"
) -> CallEndWebhook:
    from voxpipe.records.webhook import decode_secret

    return CallEndWebhook(
        url,
        decode_secret(SECRET),
        spool,
        sealer=RecordSealer(cipher),
        caller_mode=mode,
        base_backoff_s=2.0,
        max_backoff_s=30.0,
    )


async def test_signed_retried_until_2xx_and_delivered_once(tmp_path: Path, receiver: Any) -> None:
    rec = await receiver([500, 503])
    cipher = TranscriptCipher(base64.b64decode(new_key()))
    sender = hook(rec.url, tmp_path / "webhooks", cipher)
    await sender.enqueue(finished_call())
    # Spooled durably before any attempt, sealed like the rest of the records.
    spooled = list((tmp_path / "webhooks").glob("msg_*.json"))
    assert len(spooled) == 1 and b"refund" not in spooled[0].read_bytes()
    now = time.time()
    assert await sender.deliver_due(now) == 0  # 500
    assert await sender.deliver_due(now + 0.5) == 0  # backing off: no attempt yet
    assert len(rec.requests) == 1
    assert await sender.deliver_due(now + 2.5) == 0  # 503
    assert len(rec.requests) == 2
    # A restarted worker (a new sender on the same spool) picks the message up.
    restarted = hook(rec.url, tmp_path / "webhooks", cipher)
    assert await restarted.deliver_due(now + 10) == 1
    assert rec.accepted.is_set() and restarted.pending() == 0
    ids = {h["webhook-id"] for h, _ in rec.requests}
    assert len(ids) == 1  # the same webhook-id on every attempt: the receiver can dedup
    # The independent oracle accepts every attempt's signature.
    for headers, body in rec.requests:
        payload = Webhook(SECRET).verify(body, headers)
        assert payload["type"] == "call.ended"
    data = json.loads(rec.requests[-1][1])["data"]
    assert data["call_id"] == "CA7" and data["turns"] == 2 and data["duration_s"] == 95.5
    assert data["caller"] == RecordSealer(cipher).caller_hash("+447700900123")
    assert {k: data["escalation"][k] for k in ("escalated", "reason", "summary")} == {
        "escalated": True,
        "reason": "billing dispute",
        "summary": "wants a refund",
    }
    assert (data["outcome"], data["consent"], data["locale"]) == ("escalated", "dtmf", "en-GB")
    # Stored again (the sweeper, then the worker): not delivered a second time.
    await restarted.enqueue(finished_call())
    assert await restarted.deliver_due(now + 100) == 0
    assert len(rec.requests) == 3 and restarted.delivered("CA7")
    # A forged or altered body fails the oracle.
    headers, body = rec.requests[-1]
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(body.replace(b"CA7", b"CA8"), headers)
    await sender.close()
    await restarted.close()


async def test_masked_caller_setting(tmp_path: Path, receiver: Any) -> None:
    rec = await receiver([])
    sender = hook(rec.url, tmp_path / "w", None, mode="masked")
    await sender.enqueue(finished_call())
    assert await sender.deliver_due() == 1
    assert json.loads(rec.requests[0][1])["data"]["caller"] == "*********0123"
    await sender.close()


async def test_a_stored_transcript_reaches_the_webhook_through_the_shared_stores(
    tmp_path: Path, receiver: Any
) -> None:
    rec = await receiver([502])
    s = make_settings(
        tmp_path,
        records_kek=new_key(),
        call_end_webhook_url=rec.url,
        call_end_webhook_secret=SECRET,
    )
    stores = await shared_stores(s)
    try:
        sender = stores.transcripts.webhook  # type: ignore[attr-defined]
        sender.base_backoff_s = 0.01  # the background sender retries soon after the 502
        assert await stores.transcripts.write(finished_call("CA9"))
        async with asyncio.timeout(10):
            await rec.accepted.wait()
        assert len(rec.requests) == 2
        Webhook(SECRET).verify(rec.requests[1][1], rec.requests[1][0])
    finally:
        await close_shared_stores()


async def test_an_unreachable_receiver_backs_off_and_keeps_the_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = hook(f"http://127.0.0.1:{port}/hook", tmp_path / "w", None)
    await sender.enqueue(finished_call())
    now = time.time()
    assert await sender.deliver_due(now) == 0
    first = sender.next_due()
    assert first is not None and first > now  # backing off, not retrying in a loop
    assert await sender.deliver_due(now + 100) == 0
    second = sender.next_due()
    assert second is not None and second - (now + 100) > first - now  # growing backoff
    assert sender.pending() == 1 and not sender.delivered("CA7")
    bad = hook("not a url", tmp_path / "w2", None)
    await bad.enqueue(finished_call())
    assert await bad.deliver_due(now) == 0 and bad.pending() == 1
    await sender.close()
    await bad.close()


async def test_the_escalation_record_reaches_the_webhook_from_the_database(
    tmp_path: Path, receiver: Any, db_settings: dict[str, Any]
) -> None:
    """Issue 11 point 4: reason, summary, trigger, outcome, connected number and timings are
    stored with the transcript row and sent in the call-end data (SQLite and real Postgres)."""
    from voxpipe.telephony.twilio_transfer import EscalationRecord

    rec = await receiver([])
    s = make_settings(
        tmp_path,
        records_kek=new_key(),
        call_end_webhook_url=rec.url,
        call_end_webhook_secret=SECRET,
        **db_settings,
    )
    record = EscalationRecord(reason="billing dispute", summary="wants a refund", trigger="tool")
    record.on_hold_at = record.started_at + 1.0
    record.attempts = [
        {"to": "+15550001111", "call_sid": "CA1", "result": "declined", "seconds": 4.2},
        {"to": "+15550002222", "call_sid": "CA2", "result": "connected", "seconds": 6.0},
    ]
    record.outcome, record.connected_to = "connected", "+15550002222"
    record.ended_at = record.on_hold_at + 12.5
    connected = finished_call("CA11")
    connected.metadata["escalation"] = record.to_dict()
    taken = finished_call("CA12")
    taken.metadata["escalation"] = {
        "reason": "caller asked for a person",
        "summary": "",
        "trigger": "policy",
        "outcome": "message_taken",
        "message": "please call me about the invoice",
        "callback_number": "+447700900999",
        "started_at": 1_700_000_010.0,
        "message_at": 1_700_000_050.0,
    }
    plain = finished_call("CA13")
    plain.escalated, plain.escalation_reason, plain.metadata = False, None, {}
    stores = await shared_stores(s)
    try:
        for t in (connected, taken, plain):
            assert await stores.transcripts.write(t)
        # Stored with the transcript row: read back from the database.
        row = await stores.transcripts.read("CA11", reader="test")
        assert row is not None and row.metadata["escalation"]["connected_to"] == "+15550002222"
        expected_hash = stores.transcripts.webhook.sealer.caller_hash(  # type: ignore[attr-defined]
            "+447700900999"
        )
        async with asyncio.timeout(10):
            while len(rec.requests) < 3:
                await rec.accepted.wait()
                rec.accepted.clear()
    finally:
        await close_shared_stores()
    sent = {}
    for headers, body in rec.requests:
        data = Webhook(SECRET).verify(body, headers)["data"]
        sent[data["call_id"]] = data["escalation"]
    esc = sent["CA11"]
    assert (esc["reason"], esc["summary"], esc["trigger"]) == (
        "billing dispute",
        "wants a refund",
        "tool",
    )
    assert (esc["outcome"], esc["connected_to"]) == ("connected", "+15550002222")
    assert [a["result"] for a in esc["attempts"]] == ["declined", "connected"]
    assert esc["hold_s"] == 12.5 and esc["started_at"] == record.started_at
    assert esc["ended_at"] == record.ended_at
    msg = sent["CA12"]
    assert (msg["outcome"], msg["message"]) == ("message_taken", "please call me about the invoice")
    # The callback number is never sent in clear: the caller format (HMAC by default) applies.
    assert msg["callback_number"] and "+447700900999" not in json.dumps(msg)
    assert msg["callback_number"] == expected_hash
    assert sent["CA13"] is None
