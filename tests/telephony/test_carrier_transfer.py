"""Warm transfer on Telnyx and Vonage through the server, over real sockets, one harness for
both (the carriers are adapters in transfer_carriers.py): the handoff starts the carrier's
transfer, whose REST calls go to the carrier's fake; the fake's scripted agents answer (or not)
and its signed webhooks reach the server's transfer routes; a caller nobody took is sent to a
fresh stream of the same call, which the server accepts and gives to the bot with the resume
marker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from tests.telephony.carrier_rig import CALLER_NUMBER
from tests.telephony.transfer_carriers import BRIEF, CARRIERS, A, B, Carrier
from voxpipe.telephony.handoff import take_message
from voxpipe.telephony.vonage_calls import application_jwt
from voxpipe.telephony.warm_transfer import TransferState

pytestmark = pytest.mark.slow

carriers = pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.name)


async def escalate(fake: Any, handoff: Any) -> Any:
    await handoff("caller asked for a person", "Billing question about a double charge.")
    transfer = handoff.transfer
    assert transfer is not None
    await fake.wait_for(lambda: transfer.finished.is_set(), 10)
    await fake.settle()
    return transfer


@carriers
async def test_agent_hears_the_brief_presses_1_and_is_connected(
    carrier: Carrier, tmp_path: Path
) -> None:
    agents = {A: carrier.agent("answer", digits="1")}
    async with carrier.rig(tmp_path, agents) as (fake, r, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.CONNECTED
        agent = fake.dialled[0]
        assert agent.said == [BRIEF]  # briefed, then asked to press 1
        # Every webhook was signed, and our server took them all.
        assert fake.webhooks
        await handoff.records_done.wait()
        row = await r.transcripts.read(carrier.call, reader="test")
        assert row is not None
        record = row.metadata["escalation"]
        assert (record["outcome"], record["connected_to"], record["carrier"]) == (
            "connected",
            A,
            carrier.name,
        )
        assert [a["result"] for a in record["attempts"]] == ["connected"]
        assert record["hold_s"] is not None and record["hold_s"] >= 0
        await carrier.check_connected(fake, r, agent, record)
        assert [(t.role, t.text) for t in row.turns] == [("user", "I want a person.")]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(r.url + "/metrics")).text
        assert f'voxpipe_transfer_steps_total{{step="{carrier.callback_step}"}}' in metrics


@carriers
async def test_declined_then_the_second_number_takes_it(carrier: Carrier, tmp_path: Path) -> None:
    agents = {A: carrier.agent("answer", digits="2"), B: carrier.agent("answer", digits="1")}
    async with carrier.rig(tmp_path, agents) as (fake, _, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.CONNECTED
        first, second = fake.dialled
        assert not first.alive  # released after declining
        carrier.check_declined_then_connected(first, second)
        assert [(a["to"], a["result"]) for a in transfer.record.attempts] == [
            (A, "declined"),
            (B, "connected"),
        ]
        assert transfer.record.connected_to == B


@carriers
async def test_nobody_answers_the_caller_goes_back_to_the_bot_and_leaves_a_message(
    carrier: Carrier, tmp_path: Path
) -> None:
    agents = {A: carrier.agent("never"), B: carrier.agent(carrier.second_unanswered)}
    async with carrier.rig(tmp_path, agents) as (fake, r, handoff):
        call_id = carrier.call
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.RETURNED
        assert transfer.record.outcome == carrier.unanswered_outcome
        assert [a["result"] for a in transfer.record.attempts] == carrier.unanswered_results
        endpoint = carrier.check_returned(fake, r)
        hello = carrier.hello(fake, endpoint)
        async with connect(carrier.stream_uri(endpoint)) as ws:
            for message in hello:
                await ws.send(json.dumps(message))
            await asyncio.wait_for(r.bot_started.wait(), 10)
            call = r.bot_calls[0]
            assert (call.call_id, call.carrier) == (call_id, carrier.name)
            assert call.custom_parameters["voxpipe_resume"] == "transfer"
            assert call.caller == CALLER_NUMBER
            # The session was kept for the bot, with the outcome; no row yet.
            state = await r.sessions.load(call_id)
            assert state is not None
            assert state.meta["escalation"]["outcome"] == carrier.unanswered_outcome
            assert [t.text for t in state.turns] == ["I want a person."]
            assert await r.transcripts.read(call_id, reader="test") is None
            # The bot takes a message (its take_message tool).
            recorder = r.recorder(call_id)
            recorder.resume_from(state)  # as the resumed bot does (resume_conversation)
            await take_message(recorder, r.sessions, call_id, "Please call me back", "+4477009")
            for message in carrier.goodbye():
                await ws.send(json.dumps(message))
        await r.calls_over()
        state = await r.sessions.load(call_id)
        assert state is not None
        record = state.meta["escalation"]
        assert (record["outcome"], record["callback_number"]) == ("message_taken", "+4477009")
        assert [a["result"] for a in record["attempts"]] == carrier.unanswered_results
        # The same stream URL cannot be used twice (a one-time token).
        async with connect(carrier.stream_uri(endpoint)) as ws:
            await ws.send(json.dumps(hello[-1]))
            async with asyncio.timeout(10):
                await ws.wait_closed()
            assert ws.close_code == 1008


@carriers
async def test_the_caller_hanging_up_on_hold_ends_the_ringing_agent_leg(
    carrier: Carrier, tmp_path: Path
) -> None:
    agents = {A: carrier.agent("never")}
    async with carrier.rig(tmp_path, agents, scale=1.0) as (fake, r, handoff):
        await handoff("caller is upset", "Angry about the outage.")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(carrier.ringing(fake))
        await fake.caller_hangs_up(carrier.call)
        await fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.CALLER_LEFT
        agent = fake.dialled[0]
        await carrier.check_agent_leg_ended(fake, agent)
        assert agent.said == []  # nobody was briefed for a caller who left
        await handoff.records_done.wait()
        row = await r.transcripts.read(carrier.call, reader="test")
        assert row is not None and row.metadata["escalation"]["outcome"] == "caller_hung_up"


@carriers
async def test_unsigned_or_forged_callbacks_are_refused(carrier: Carrier, tmp_path: Path) -> None:
    agents = {A: carrier.agent("never")}
    async with carrier.rig(tmp_path, agents, scale=1.0) as (fake, r, handoff):
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: bool(fake.dialled))
        async with httpx.AsyncClient() as client:
            for url, request in carrier.forged(r, fake):
                resp = await client.post(url, **request)
                assert resp.status_code == 403, url
        assert transfer.state is TransferState.RINGING  # nothing happened
        await fake.caller_hangs_up(carrier.call)
        await fake.wait_for(lambda: transfer.finished.is_set())


@carriers
async def test_an_agent_is_not_connected_to_a_caller_who_left_unheard(
    carrier: Carrier, tmp_path: Path
) -> None:
    # The caller's hang-up goes to a URL that is not ours: pressing 1 finds the caller gone
    # and the agent is released, not connected.
    agents = {A: carrier.agent("answer", digits="1", ring_s=0.3)}
    async with carrier.rig(tmp_path, agents, scale=1.0) as (fake, _, handoff):
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: bool(fake.dialled))
        carrier.caller_events_elsewhere(fake)
        await fake.caller_hangs_up(carrier.call)
        await fake.wait_for(lambda: transfer.finished.is_set())
        await fake.settle()
        assert transfer.state is TransferState.CALLER_LEFT
        carrier.check_not_joined(fake, fake.dialled[0])
        assert [a["result"] for a in transfer.record.attempts] == ["caller_hung_up"]


def test_the_vonage_rest_jwt_is_the_applications() -> None:
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
