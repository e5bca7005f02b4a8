"""The Telnyx warm transfer (Call Control v2) against FakeTelnyxREST over real sockets: the
engine's REST commands go to the fake, the fake's scripted agents answer (or not) and post
Ed25519-signed webhooks to a local receiver, which checks the signature and feeds the engine."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from voxpipe.server.telnyx_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TelnyxSignatureError,
    verify_telnyx_signature,
)
from voxpipe.telephony.telnyx_calls import TelnyxCallControl
from voxpipe.telephony.telnyx_transfer import (
    TelnyxTransfer,
    TelnyxTransferPlan,
    event_from_webhook,
)
from voxpipe.telephony.warm_transfer import (
    EscalationRecord,
    Start,
    TransferState,
    TransferWording,
)
from voxpipe.testing.fakes.telnyx_rest import FakeTelnyxAgent, FakeTelnyxREST

CALLER = "v3:caller-leg"
A, B = "+442079460001", "+442079460002"
WORDING = TransferWording(
    brief="A caller about a billing dispute: wants a refund.",
    accept_prompt="Press 1 to take the call.",
    language="en-GB",
)


class Receiver:
    """Our side of Telnyx's webhooks: signature checked, then the transfer's event."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.transfer: TelnyxTransfer | None = None
        self.refused = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_telnyx_signature(
                self.public_key,
                body,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
            )
        except TelnyxSignatureError:
            self.refused += 1
            return web.Response(status=403)
        assert self.transfer is not None
        event = event_from_webhook(json.loads(body), self.transfer.caller_id)
        if event is not None:
            await self.transfer.handle(event)
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/telnyx/transfer", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/telnyx/transfer"


@pytest.fixture
async def setup() -> AsyncIterator[Callable[..., Any]]:
    fakes: list[FakeTelnyxREST] = []
    receivers: list[Receiver] = []

    async def make(agents: dict[str, FakeTelnyxAgent], targets: list[str]) -> Any:
        fake = FakeTelnyxREST(agents=agents, timeout_scale=0.01)
        await fake.start()
        fakes.append(fake)
        rx = Receiver(fake.public_key)
        await rx.start()
        receivers.append(rx)
        fake.add_call(CALLER, webhook_url=rx.url)
        plan = TelnyxTransferPlan(
            connection_id="conn-1",
            from_number="+442079460000",
            webhook_url=rx.url,
            hold_audio_url="https://bot.example/transfer/hold.wav",
            resume_stream_url=lambda: "wss://bot.example/telnyx/stream?t=resume-token",
            ring_timeout_s=20,
        )
        transfer = TelnyxTransfer(
            call_control_id=CALLER,
            targets=targets,
            control=TelnyxCallControl("KEYtest", base_url=fake.url),
            plan=plan,
            wording=WORDING,
            record=EscalationRecord("billing dispute", "wants a refund", "tool"),
            deadline_margin_s=5.0,
        )
        rx.transfer = transfer
        return fake, rx, transfer

    yield make
    for fake in fakes:
        await fake.stop()
    for rx in receivers:
        assert rx.runner is not None
        await rx.runner.cleanup()


async def run(fake: FakeTelnyxREST, transfer: TelnyxTransfer) -> None:
    await transfer.handle(Start())
    await asyncio.wait_for(transfer.finished.wait(), 10)
    await fake.settle()


async def test_the_agent_hears_the_brief_presses_1_and_is_bridged(setup: Any) -> None:
    fake, rx, transfer = await setup({A: FakeTelnyxAgent("answer", digits="1")}, [A])
    await run(fake, transfer)
    assert transfer.state is TransferState.CONNECTED
    caller = fake.calls[CALLER]
    # The bot's stream stopped, the caller heard hold audio until the bridge.
    assert caller.commands() == ["streaming_stop", "playback_start", "playback_stop"]
    assert caller.actions[1][1] == {
        "audio_url": "https://bot.example/transfer/hold.wav",
        "loop": "infinity",
    }
    agent = fake.dialled[0]
    assert (agent.to, agent.connection_id, agent.timeout_secs) == (A, "conn-1", 20)
    assert agent.said == [f"{WORDING.brief} {WORDING.accept_prompt}"]
    gather = dict(agent.actions)["gather_using_speak"]
    assert (gather["maximum_digits"], gather["language"]) == (1, "en-GB")
    assert agent.commands() == ["gather_using_speak", "bridge"]
    assert agent.bridged_with == CALLER and caller.bridged_with == agent.call_control_id
    record = transfer.record
    assert (record.outcome, record.connected_to) == ("connected", A)
    assert [a["result"] for a in record.attempts] == ["connected"]
    assert record.on_hold_at is not None and record.ended_at is not None
    assert rx.refused == 0
    assert all(w.status == 200 for w in fake.webhooks)


async def test_a_decline_then_the_next_number_takes_it(setup: Any) -> None:
    fake, _, transfer = await setup(
        {A: FakeTelnyxAgent("answer", digits="2"), B: FakeTelnyxAgent("answer", digits="1")},
        [A, B],
    )
    await run(fake, transfer)
    assert transfer.state is TransferState.CONNECTED
    first, second = fake.dialled
    assert first.commands() == ["gather_using_speak", "hangup"]  # pressed 2: released
    assert not first.alive and first.bridged_with is None
    assert second.bridged_with == CALLER
    assert [(a["to"], a["result"]) for a in transfer.record.attempts] == [
        (A, "declined"),
        (B, "connected"),
    ]
    assert transfer.record.connected_to == B


async def test_nobody_answers_the_caller_goes_back_to_the_bot(setup: Any) -> None:
    fake, _, transfer = await setup(
        {A: FakeTelnyxAgent("never"), B: FakeTelnyxAgent("busy")}, [A, B]
    )
    await run(fake, transfer)
    assert transfer.state is TransferState.RETURNED
    caller = fake.calls[CALLER]
    assert caller.alive
    assert caller.commands() == [
        "streaming_stop",
        "playback_start",
        "playback_stop",
        "streaming_start",
    ]
    resume = caller.actions[-1][1]
    assert resume["stream_url"] == "wss://bot.example/telnyx/stream?t=resume-token"
    # The new stream's start carries the resume marker the bot reads as a custom parameter.
    assert json.loads(base64.b64decode(resume["client_state"])) == {"voxpipe_resume": "transfer"}
    assert [a["result"] for a in transfer.record.attempts] == ["no_answer", "busy"]
    assert [d.hangup_cause for d in fake.dialled] == ["timeout", "user_busy"]
    assert transfer.record.outcome == "no_answer"


async def test_a_rejected_and_a_silent_agent_are_declines(setup: Any) -> None:
    fake, _, transfer = await setup(
        {A: FakeTelnyxAgent("reject"), B: FakeTelnyxAgent("answer", digits="")}, [A, B]
    )
    await run(fake, transfer)
    assert transfer.state is TransferState.RETURNED
    assert [a["result"] for a in transfer.record.attempts] == ["declined", "declined"]
    assert transfer.record.outcome == "declined"  # the bot then takes a message


async def test_the_caller_hanging_up_on_hold_releases_the_ringing_agent(setup: Any) -> None:
    fake, _, transfer = await setup({A: FakeTelnyxAgent("never")}, [A])
    await transfer.handle(Start())
    await fake.caller_hangs_up(CALLER)
    await asyncio.wait_for(transfer.finished.wait(), 10)
    await fake.settle()
    assert transfer.state is TransferState.CALLER_LEFT
    assert transfer.record.outcome == "caller_hung_up"
    agent = fake.dialled[0]
    assert agent.commands() == ["hangup"] and not agent.alive
    assert agent.said == []  # never briefed for a caller who left


async def test_an_unsigned_webhook_is_refused(setup: Any) -> None:
    fake, rx, transfer = await setup({A: FakeTelnyxAgent("answer")}, [A])
    import httpx

    async with httpx.AsyncClient() as client:
        body = json.dumps({"data": {"event_type": "call.hangup", "payload": {}}})
        resp = await client.post(rx.url, content=body)
    assert resp.status_code == 403 and rx.refused == 1
    assert transfer.state is TransferState.NEW
