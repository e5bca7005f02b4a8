"""Warm transfer on Vonage over real sockets: ``VonageHandoff`` starts the ``VonageTransfer``,
whose JWT-authorised REST calls go to ``FakeVonageREST``; the fake's scripted agents answer (or
not) and its signed event and input webhooks reach the server's transfer routes; a caller
nobody took is connected to a fresh websocket of the same call, which the server accepts and
gives to the bot with the resume marker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from tests.telephony.carrier_rig import CALLED_NUMBER, CALLER_NUMBER, Rig, served
from voxpipe.server.carrier_transfer_routes import stream_url_for
from voxpipe.telephony.carrier_handoffs import VonageHandoff, VonageTransferConfig
from voxpipe.telephony.handoff import take_message
from voxpipe.telephony.vonage_calls import application_jwt
from voxpipe.telephony.warm_transfer import TransferState
from voxpipe.testing.fakes.vonage_rest import FakeVonageAgent, FakeVonageREST

pytestmark = pytest.mark.slow

CALL = "63f61863-4a51-4f6b-86e1-46edebcf9356"
A, B = "+442079460001", "+442079460002"


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, agents: dict[str, FakeVonageAgent], scale: float = 0.01
) -> AsyncIterator[tuple[FakeVonageREST, Rig, VonageHandoff]]:
    async with FakeVonageREST(agents=agents, timeout_scale=scale) as fake:
        async with served(
            tmp_path,
            vonage_signature_secret=fake.signature_secret,
            vonage_application_id=fake.application_id,
            vonage_private_key=fake.private_key_pem,
            vonage_api_base_url=fake.url,
            transfer_to=f"{A},{B}",
        ) as r:
            # The application's event URL is our route: the caller's own events reach us.
            fake.add_call(CALL, event_url=r.url + "/transfer/vonage/events")
            await r.seed(CALL)
            config = VonageTransferConfig.from_settings(r.settings)
            assert config is not None
            stream_url = stream_url_for(
                r.state, "vonage", CALL, caller=CALLER_NUMBER, called=CALLED_NUMBER
            )
            assert stream_url is not None
            handoff = VonageHandoff(
                config,
                call_id=CALL,
                called=CALLED_NUMBER,
                stream_url=stream_url,
                **r.handoff_kwargs(CALL),
            )
            yield fake, r, handoff


async def escalate(fake: FakeVonageREST, handoff: VonageHandoff) -> Any:
    await handoff("caller asked for a person", "Billing question about a double charge.")
    transfer = handoff.transfer
    assert transfer is not None
    await fake.wait_for(lambda: transfer.finished.is_set(), 10)
    await fake.settle()
    return transfer


async def test_agent_hears_the_brief_presses_1_and_joins_the_conversation(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, {A: FakeVonageAgent("answer", digits="1")}) as (fake, r, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.CONNECTED
        # The caller was moved off the bot's websocket into a conversation named after the
        # call, hearing the hold line then our hold audio; it ends when they leave.
        hold = fake.calls[CALL].transfers[0]
        assert hold[0] == {
            "action": "talk",
            "text": "Please hold.",
            "language": "en-GB",
            "bargeIn": False,
        }
        assert hold[1] == {
            "action": "conversation",
            "name": f"voxpipe-{CALL}",
            "musicOnHoldUrl": [r.url + "/transfer/hold.wav"],
            "startOnEnter": False,
            "endOnExit": True,
        }
        async with httpx.AsyncClient() as client:
            music = await client.get(hold[1]["musicOnHoldUrl"][0])
        assert music.status_code == 200 and music.headers["content-type"] == "audio/wav"
        # The agent was dialled from the number called, heard the brief, then pressed 1.
        agent = fake.dialled[0]
        assert (agent.to, agent.from_, agent.ringing_timer) == ("442079460001", "442079460000", 20)
        assert agent.said == [
            "Reason: caller asked for a person. Summary: Billing question about a double "
            "charge. Press 1 to take the call."
        ]
        conv = fake.conversations[f"voxpipe-{CALL}"]
        assert conv.started and conv.participants == [CALL, agent.uuid]
        # Every webhook was signed, and our server took them all.
        assert fake.webhooks and all(w.status in (200, 204) for w in fake.webhooks)
        inputs = [w for w in fake.webhooks if w.kind == "input"]
        assert inputs[0].answer == [
            {
                "action": "conversation",
                "name": f"voxpipe-{CALL}",
                "startOnEnter": True,
                "endOnExit": True,
            }
        ]
        await handoff.records_done.wait()
        row = await r.transcripts.read(CALL, reader="test")
        assert row is not None
        record = row.metadata["escalation"]
        assert (record["outcome"], record["connected_to"], record["carrier"]) == (
            "connected",
            A,
            "vonage",
        )
        assert [a["result"] for a in record["attempts"]] == ["connected"]
        assert record["attempts"][0]["uuid"] == agent.uuid
        assert record["hold_s"] is not None and record["hold_s"] >= 0
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(r.url + "/metrics")).text
        assert 'voxpipe_transfer_steps_total{step="callback_vonage_input"}' in metrics


async def test_declined_then_the_second_number_takes_it(tmp_path: Path) -> None:
    agents = {A: FakeVonageAgent("answer", digits="2"), B: FakeVonageAgent("answer", digits="1")}
    async with rig(tmp_path, agents) as (fake, _, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.CONNECTED
        first, second = fake.dialled
        assert first.digits_sent == ["2"] and not first.alive  # released after declining
        assert first.conversation is None and second.conversation == f"voxpipe-{CALL}"
        assert [(a["to"], a["result"]) for a in transfer.record.attempts] == [
            (A, "declined"),
            (B, "connected"),
        ]
        assert transfer.record.connected_to == B


async def test_nobody_answers_the_caller_goes_back_to_the_bot_and_leaves_a_message(
    tmp_path: Path,
) -> None:
    agents = {A: FakeVonageAgent("never"), B: FakeVonageAgent("busy")}
    async with rig(tmp_path, agents) as (fake, r, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.RETURNED
        assert transfer.record.outcome == "no_answer"
        assert [a["result"] for a in transfer.record.attempts] == ["no_answer", "busy"]
        assert [d.status for d in fake.dialled] == ["timeout", "busy"]
        # The caller was connected to a new websocket of the same call, with the resume marker.
        caller = fake.calls[CALL]
        assert caller.alive and caller.conversation is None
        endpoint = caller.websocket
        assert endpoint is not None and endpoint["type"] == "websocket"
        assert endpoint["headers"] == {"uuid": CALL, "voxpipe_resume": "transfer"}
        # Vonage opens it: the server accepts the stream token and the bot gets the call back.
        async with connect(endpoint["uri"]) as ws:
            connected = {"event": "websocket:connected", "content-type": endpoint["content-type"]}
            await ws.send(json.dumps({**connected, **endpoint["headers"]}))
            await asyncio.wait_for(r.bot_started.wait(), 10)
            call = r.bot_calls[0]
            assert (call.call_id, call.carrier) == (CALL, "vonage")
            assert call.custom_parameters["voxpipe_resume"] == "transfer"
            assert call.caller == CALLER_NUMBER
            # The session was kept for the bot, with the outcome; no row yet.
            state = await r.sessions.load(CALL)
            assert state is not None and state.meta["escalation"]["outcome"] == "no_answer"
            assert [t.text for t in state.turns] == ["I want a person."]
            assert await r.transcripts.read(CALL, reader="test") is None
            # The bot takes a message (its take_message tool).
            recorder = r.recorder(CALL)
            recorder.resume_from(state)  # as the resumed bot does (resume_conversation)
            await take_message(recorder, r.sessions, CALL, "Please call me back", "+4477009")
        await r.calls_over()
        state = await r.sessions.load(CALL)
        assert state is not None
        record = state.meta["escalation"]
        assert (record["outcome"], record["callback_number"]) == ("message_taken", "+4477009")
        assert [a["result"] for a in record["attempts"]] == ["no_answer", "busy"]


async def test_the_caller_hanging_up_on_hold_ends_the_ringing_agent_leg(tmp_path: Path) -> None:
    async with rig(tmp_path, {A: FakeVonageAgent("never")}, scale=1.0) as (fake, r, handoff):
        await handoff("caller is upset", "Angry about the outage.")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: fake.dialled and fake.dialled[0].status == "ringing")
        await fake.caller_hangs_up(CALL)
        await fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.CALLER_LEFT
        agent = fake.dialled[0]
        await fake.wait_for(lambda: agent.status == "cancelled")
        assert agent.said == []  # nobody was briefed for a caller who left
        await handoff.records_done.wait()
        row = await r.transcripts.read(CALL, reader="test")
        assert row is not None and row.metadata["escalation"]["outcome"] == "caller_hung_up"


async def test_unsigned_or_forged_callbacks_are_refused(tmp_path: Path) -> None:
    async with rig(tmp_path, {A: FakeVonageAgent("never")}, scale=1.0) as (fake, r, handoff):
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: bool(fake.dialled))
        body = json.dumps({"uuid": CALL, "status": "completed"}).encode()
        forged = jwt.encode(
            {"iat": 1, "jti": "x"}, "not-the-signature-secret-of-32-chars", algorithm="HS256"
        )
        async with httpx.AsyncClient() as client:
            for headers in ({}, {"Authorization": f"Bearer {forged}"}):
                resp = await client.post(
                    r.url + "/transfer/vonage/events", content=body, headers=headers
                )
                assert resp.status_code == 403
            digits = {"uuid": fake.dialled[0].uuid, "dtmf": {"digits": "1"}}
            resp = await client.post(f"{r.url}/transfer/vonage/{CALL}/input", json=digits)
            assert resp.status_code == 403
        assert transfer.state is TransferState.RINGING  # nothing happened
        await fake.caller_hangs_up(CALL)
        await fake.wait_for(lambda: transfer.finished.is_set())


def test_the_rest_jwt_is_the_applications() -> None:
    from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    token = application_jwt("app-1", pem, now=1_700_000_000)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token, key.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["application_id"] == "app-1"
    assert claims["exp"] - claims["iat"] == 300 and claims["jti"]


async def test_an_agent_is_not_joined_to_a_caller_who_left_unheard(tmp_path: Path) -> None:
    # The caller's "completed" goes to an event URL that is not ours: pressing 1 finds the
    # caller gone (GET /v1/calls/{uuid}) and the agent is released, not joined.
    agents = {A: FakeVonageAgent("answer", digits="1", ring_s=0.3)}
    async with rig(tmp_path, agents, scale=1.0) as (fake, r, handoff):
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: bool(fake.dialled))
        fake.calls[CALL].event_url = None
        await fake.caller_hangs_up(CALL)
        await fake.wait_for(lambda: transfer.finished.is_set())
        await fake.settle()
        assert transfer.state is TransferState.CALLER_LEFT
        agent = fake.dialled[0]
        assert agent.digits_sent == ["1"] and agent.conversation is None and not agent.alive
        assert [a["result"] for a in transfer.record.attempts] == ["caller_hung_up"]
        inputs = [w for w in fake.webhooks if w.kind == "input"]
        assert inputs[0].answer == [
            {
                "action": "talk",
                "text": "The caller has hung up.",
                "language": "en-GB",
                "bargeIn": False,
            }
        ]
