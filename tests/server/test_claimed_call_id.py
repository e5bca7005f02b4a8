"""Issue 18 pt 3 over real sockets: a call id cannot be claimed by another stream.

A signed Twilio call leaves its transcript. Then Telnyx streams try to take its CallSid: one
whose signed webhook named another call is closed at its start; one that did get a token for
that id (a second authenticated start of the same id) runs, but its transcript write is
refused because another call start owns the id. The record keeps the Twilio caller, carrier
and turns, in SQLite and in Postgres.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import connect

from tests.server.conftest import make_settings, serve
from voxpipe.call import Call
from voxpipe.frames import DTMFFrame, Frame, FrameDirection
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.server.app import create_app
from voxpipe.state.postgres_store import PostgresTranscriptStore
from voxpipe.state.shared import shared_stores
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.state.transcripts import Transcript, TranscriptStore
from voxpipe.testing.carrier_signing import TelnyxSigner
from voxpipe.testing.twilio_caller import TwilioCaller, parse_twiml_stream

pytestmark = pytest.mark.slow

TWILIO_TOKEN = "5f3c0e1d2b4a69788796a5b4c3d2e1f0"
VICTIM = "CA0f0e0d0c0b0a09080706050403020100"
VICTIM_CALLER = "+447700900123"


class DigitTurns(FrameProcessor):
    """Each key press becomes a caller turn and a bot turn in the context (no speech stack)."""

    def __init__(self, context: LLMContext, pressed: Callable[[str], None]) -> None:
        super().__init__()
        self.context = context
        self.pressed = pressed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, DTMFFrame):
            self.context.add_user_message(f"I press {frame.digit}")
            self.context.add_assistant_message(f"You pressed {frame.digit}.")
            self.pressed(frame.digit)
        await self.push_frame(frame, direction)


class Calls:
    """The test's view of the calls the bot runs: digits seen per call id."""

    def __init__(self) -> None:
        self.digits: dict[str, list[str]] = {}
        self.changed = asyncio.Event()

    async def wait_digits(self, call_id: str, n: int) -> None:
        async with asyncio.timeout(15):
            while len(self.digits.get(call_id, [])) < n:
                self.changed.clear()
                await self.changed.wait()

    def bot(self) -> Any:
        async def recording_bot(call: Call) -> Pipeline:
            stores = await shared_stores(call.settings)
            context = LLMContext("test")
            assistant = AssistantContextAggregator(context)
            recorder = TranscriptRecorder(
                assistant,
                sessions=stores.sessions,
                transcripts=stores.transcripts,
                call_id=call.call_id,
                meta={"caller": call.caller, "carrier": call.carrier},
            )

            def pressed(digit: str) -> None:
                self.digits.setdefault(call.call_id, []).append(digit)
                self.changed.set()

            return Pipeline(
                [
                    call.transport.input(),
                    DigitTurns(context, pressed),
                    call.transport.output(),
                    assistant,
                    recorder,
                ]
            )

        return recording_bot


@pytest.fixture(params=["sqlite", "postgres"])
def where(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[dict[str, Any], Callable[[], TranscriptStore], tuple[str, str] | None]:
    """Settings naming the database, a way to open the same store, and the Postgres schema."""
    if request.param == "sqlite":
        path = str(tmp_path / "calls.sqlite3")
        return {"sqlite_path": path}, lambda: SqliteTranscriptStore(path), None
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    return (
        # A schema of its own (asyncpg passes search_path on as a server setting).
        {"database_url": f"{dsn}?search_path={schema}"},
        lambda: PostgresTranscriptStore(dsn, schema=schema),
        (dsn, schema),
    )


async def _stored(open_store: Callable[[], TranscriptStore], call_id: str) -> Transcript | None:
    store = open_store()
    await store.start()
    try:
        return await store.read(call_id, reader="test")
    finally:
        await store.close()


async def _ended(app: Any) -> None:
    # The transcript is written in the pipeline's cleanup, before the call leaves the registry.
    async with asyncio.timeout(15):
        while len(app.state.voxpipe.registry):
            await asyncio.sleep(0.02)


async def _telnyx_call(
    srv_url: str, signer: TelnyxSigner, webhook_call_id: str, start_call_id: str, calls: Calls
) -> tuple[int | None, str]:
    """A signed Telnyx webhook for ``webhook_call_id``, then a stream whose start names
    ``start_call_id`` and presses four keys. Returns the stream's close code and reason."""
    import httpx

    body = f"CallSid={webhook_call_id}&From=%2B19995550000&To=%2B18005551212".encode()
    async with httpx.AsyncClient() as c:
        texml = await c.post(
            f"{srv_url}/telnyx/voice",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded", **signer.headers(body)},
        )
    assert texml.status_code == 200, texml.text
    url, _ = parse_twiml_stream(texml.text)
    silence = base64.b64encode(b"\xff" * 160).decode()
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        start = {
            "call_control_id": start_call_id,
            "call_session_id": "sess",
            "from": "+19995550000",
            "to": "+18005551212",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        }
        await ws.send(json.dumps({"event": "start", "start": start, "stream_id": "st"}))
        for n, digit in enumerate("5678"):
            media = {"track": "inbound", "chunk": str(n), "timestamp": "0", "payload": silence}
            await ws.send(json.dumps({"event": "media", "media": media, "stream_id": "st"}))
            await ws.send(
                json.dumps({"event": "dtmf", "stream_id": "st", "dtmf": {"digit": digit}})
            )
        # Either the bot sees the four keys (then the caller hangs up) or the server refuses
        # the stream at its start and closes it.
        loop = asyncio.get_running_loop()
        pressed = loop.create_task(calls.wait_digits(start_call_id, 4))
        closed = loop.create_task(ws.wait_closed())
        await asyncio.wait({pressed, closed}, return_when=asyncio.FIRST_COMPLETED)
        if pressed.done() and not closed.done():
            pressed.result()
            await ws.send(json.dumps({"event": "stop", "stream_id": "st"}))
        pressed.cancel()
        async with asyncio.timeout(15):
            await closed
        return ws.close_code, ws.close_reason or ""


async def test_a_telnyx_stream_cannot_take_a_signed_twilio_calls_record(
    where: tuple[dict[str, Any], Callable[[], TranscriptStore], tuple[str, str] | None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db_settings, open_store, pg = where
    if pg is not None:
        conn = await asyncpg.connect(pg[0])
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{pg[1]}"')
        finally:
            await conn.close()
    signer = TelnyxSigner()
    settings = make_settings(
        allow_unsigned_webhooks=False,
        twilio_auth_token=TWILIO_TOKEN,
        telnyx_public_key=signer.public_key_b64,
        spool_dir=str(tmp_path / "spool"),
        **db_settings,
    )
    calls = Calls()
    app = create_app(calls.bot(), settings, batched_vad=None)
    caplog.set_level(logging.WARNING, logger="voxpipe.security")
    async with serve(app, settings) as srv:
        twilio = await TwilioCaller.dial(
            srv.url,
            auth_token=TWILIO_TOKEN,
            call_sid=VICTIM,
            form={"From": VICTIM_CALLER, "FromCountry": "GB"},
            audio=b"\xff" * 1600,
            dtmf=[(0.05, "1"), (0.1, "2")],
        )
        await twilio.run(until=lambda _: len(calls.digits.get(VICTIM, [])) >= 2, timeout=15)
        await _ended(app)
        before = await _stored(open_store, VICTIM)
        assert before is not None and before.caller == VICTIM_CALLER and len(before.turns) == 4
        assert before.metadata["carrier"] == "twilio"

        # 1. Signed for another call, claiming the Twilio CallSid at the stream's start.
        code, reason = await _telnyx_call(srv.url, signer, "v3:telnyx-own-id", VICTIM, calls)
        assert (code, reason) == (1008, "stream refused: call id does not match its stream token")
        claimed = [r for r in caplog.records if getattr(r, "event", "") == "claimed_call_id"]
        assert claimed and claimed[0].client.startswith("127.0.0.1:")  # type: ignore[attr-defined]

        # 2. A second authenticated start of the same id: the call runs, its write is refused.
        caplog.clear()
        code, _ = await _telnyx_call(srv.url, signer, VICTIM, VICTIM, calls)
        assert code == 1000
        await _ended(app)
        refused = [r for r in caplog.records if getattr(r, "event", "") == "claimed_call_id"]
        assert refused and "transcript write" in refused[0].getMessage()

    after = await _stored(open_store, VICTIM)
    assert after is not None
    assert (after.caller, after.metadata["carrier"]) == (VICTIM_CALLER, "twilio")
    assert after.to_dict() == before.to_dict()
    st = app.state.voxpipe
    assert st.metrics.calls_refused["telnyx", "claimed-id"] == 1
