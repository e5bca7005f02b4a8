"""Warm transfer on Telnyx through the server, over real sockets: ``TelnyxHandoff`` starts the
``TelnyxTransfer``, whose Call Control commands go to ``FakeTelnyxREST``; the fake's scripted
agents answer (or not) and its Ed25519-signed webhooks reach ``/transfer/telnyx/events``; a
caller nobody took gets ``streaming_start`` to a fresh stream of the same call, which the server
accepts and gives to the bot with the resume marker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.telephony.carrier_rig import CALLED_NUMBER, CALLER_NUMBER, Rig, served
from voxpipe.server.carrier_transfer_routes import stream_url_for
from voxpipe.telephony.carrier_handoffs import TelnyxHandoff, TelnyxTransferConfig
from voxpipe.telephony.handoff import take_message
from voxpipe.telephony.warm_transfer import TransferState
from voxpipe.testing.fakes.telnyx_rest import FakeTelnyxAgent, FakeTelnyxREST

pytestmark = pytest.mark.slow

CALL = "v3:caller-call-control-id"
A, B = "+442079460001", "+442079460002"


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, agents: dict[str, FakeTelnyxAgent], scale: float = 0.01
) -> AsyncIterator[tuple[FakeTelnyxREST, Rig, TelnyxHandoff]]:
    async with FakeTelnyxREST(agents=agents, timeout_scale=scale) as fake:
        async with served(
            tmp_path,
            telnyx_public_key=fake.public_key,
            telnyx_api_key=fake.api_key,
            telnyx_connection_id="conn-1",
            telnyx_api_base_url=fake.url,
            transfer_to=f"{A},{B}",
        ) as r:
            # The connection's webhook URL is our route: the caller's call.hangup reaches us.
            fake.add_call(CALL, webhook_url=r.url + "/transfer/telnyx/events")
            await r.seed(CALL)
            config = TelnyxTransferConfig.from_settings(r.settings)
            assert config is not None
            stream_url = stream_url_for(
                r.state, "telnyx", CALL, caller=CALLER_NUMBER, called=CALLED_NUMBER
            )
            assert stream_url is not None
            handoff = TelnyxHandoff(
                config,
                call_id=CALL,
                called=CALLED_NUMBER,
                stream_url=stream_url,
                **r.handoff_kwargs(CALL),
            )
            yield fake, r, handoff


async def escalate(fake: FakeTelnyxREST, handoff: TelnyxHandoff) -> Any:
    await handoff("caller asked for a person", "Billing question about a double charge.")
    transfer = handoff.transfer
    assert transfer is not None
    await fake.wait_for(lambda: transfer.finished.is_set(), 10)
    await fake.settle()
    return transfer


async def test_agent_hears_the_brief_presses_1_and_is_bridged(tmp_path: Path) -> None:
    async with rig(tmp_path, {A: FakeTelnyxAgent("answer", digits="1")}) as (fake, r, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.CONNECTED
        caller = fake.calls[CALL]
        assert caller.commands() == ["streaming_stop", "playback_start", "playback_stop"]
        assert caller.actions[1][1]["audio_url"] == r.url + "/transfer/hold.wav"
        agent = fake.dialled[0]
        assert (agent.to, agent.from_, agent.connection_id) == (A, CALLED_NUMBER, "conn-1")
        assert agent.webhook_url == r.url + "/transfer/telnyx/events"
        assert agent.said == [
            "Reason: caller asked for a person. Summary: Billing question about a double "
            "charge. Press 1 to take the call."
        ]
        assert agent.bridged_with == CALL
        assert fake.webhooks and all(w.status == 200 for w in fake.webhooks)
        await handoff.records_done.wait()
        row = await r.transcripts.read(CALL, reader="test")
        assert row is not None
        record = row.metadata["escalation"]
        assert (record["outcome"], record["connected_to"], record["carrier"]) == (
            "connected",
            A,
            "telnyx",
        )
        assert [a["result"] for a in record["attempts"]] == ["connected"]
        assert [(t.role, t.text) for t in row.turns] == [("user", "I want a person.")]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(r.url + "/metrics")).text
        assert 'voxpipe_transfer_steps_total{step="callback_telnyx_event"}' in metrics


async def test_declined_then_the_second_number_takes_it(tmp_path: Path) -> None:
    agents = {A: FakeTelnyxAgent("answer", digits="2"), B: FakeTelnyxAgent("answer", digits="1")}
    async with rig(tmp_path, agents) as (fake, _, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.CONNECTED
        first, second = fake.dialled
        assert first.commands() == ["gather_using_speak", "hangup"] and not first.alive
        assert second.bridged_with == CALL
        assert [(a["to"], a["result"]) for a in transfer.record.attempts] == [
            (A, "declined"),
            (B, "connected"),
        ]


async def test_nobody_answers_the_caller_goes_back_to_the_bot_and_leaves_a_message(
    tmp_path: Path,
) -> None:
    agents = {A: FakeTelnyxAgent("never"), B: FakeTelnyxAgent("reject")}
    async with rig(tmp_path, agents) as (fake, r, handoff):
        transfer = await escalate(fake, handoff)
        assert transfer.state is TransferState.RETURNED
        assert [a["result"] for a in transfer.record.attempts] == ["no_answer", "declined"]
        assert transfer.record.outcome == "declined"
        caller = fake.calls[CALL]
        assert caller.commands()[-2:] == ["playback_stop", "streaming_start"]
        resume = caller.actions[-1][1]
        assert resume["stream_url"].startswith(
            r.url.replace("http://", "ws://") + "/telnyx/stream/"
        )
        # Telnyx opens the new stream; its start carries the client_state we set.
        start = {
            "event": "start",
            "sequence_number": "1",
            "start": {
                "call_control_id": CALL,
                "call_session_id": caller.session_id,
                "from": CALLER_NUMBER,
                "to": CALLED_NUMBER,
                "client_state": resume["client_state"],
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
            "stream_id": "st-2",
        }
        async with connect(resume["stream_url"]) as ws:
            await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
            await ws.send(json.dumps(start))
            await asyncio.wait_for(r.bot_started.wait(), 10)
            call = r.bot_calls[0]
            assert (call.call_id, call.carrier) == (CALL, "telnyx")
            assert call.custom_parameters["voxpipe_resume"] == "transfer"
            state = await r.sessions.load(CALL)
            assert state is not None and state.meta["escalation"]["outcome"] == "declined"
            assert await r.transcripts.read(CALL, reader="test") is None
            recorder = r.recorder(CALL)
            recorder.resume_from(state)  # as the resumed bot does (resume_conversation)
            await take_message(recorder, r.sessions, CALL, "Please call me back", "+4477009")
            await ws.send(json.dumps({"event": "stop", "stream_id": "st-2"}))
        await r.calls_over()
        state = await r.sessions.load(CALL)
        assert state is not None
        record = state.meta["escalation"]
        assert (record["outcome"], record["callback_number"]) == ("message_taken", "+4477009")
        # The same stream URL cannot be used twice (a one-time token).
        async with connect(resume["stream_url"]) as ws:
            await ws.send(json.dumps(start))
            async with asyncio.timeout(10):
                await ws.wait_closed()
            assert ws.close_code == 1008


async def test_the_caller_hanging_up_on_hold_ends_the_ringing_agent_leg(tmp_path: Path) -> None:
    async with rig(tmp_path, {A: FakeTelnyxAgent("never")}, scale=1.0) as (fake, r, handoff):
        await handoff("caller is upset", "Angry about the outage.")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: bool(fake.dialled))
        await fake.caller_hangs_up(CALL)
        await fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.CALLER_LEFT
        agent = fake.dialled[0]
        assert agent.commands() == ["hangup"] and not agent.alive
        assert agent.said == []  # nobody was briefed for a caller who left
        await handoff.records_done.wait()
        row = await r.transcripts.read(CALL, reader="test")
        assert row is not None and row.metadata["escalation"]["outcome"] == "caller_hung_up"


async def test_unsigned_or_forged_webhooks_are_refused(tmp_path: Path) -> None:
    async with rig(tmp_path, {A: FakeTelnyxAgent("never")}, scale=1.0) as (fake, r, handoff):
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        body = json.dumps(
            {"data": {"event_type": "call.hangup", "payload": {"call_control_id": CALL}}}
        ).encode()
        forged = {"telnyx-signature-ed25519": "AAAA", "telnyx-timestamp": "1700000000"}
        async with httpx.AsyncClient() as client:
            for headers in ({}, forged):
                resp = await client.post(
                    r.url + "/transfer/telnyx/events", content=body, headers=headers
                )
                assert resp.status_code == 403
        assert transfer.state is TransferState.RINGING  # nothing happened
        await fake.caller_hangs_up(CALL)
        await fake.wait_for(lambda: transfer.finished.is_set())


async def test_an_agent_is_not_bridged_to_a_caller_who_left_unheard(tmp_path: Path) -> None:
    # The caller's call.hangup goes to a webhook that is not ours: pressing 1 finds the call
    # ended (Call Control answers 422) and the agent is released.
    agents = {A: FakeTelnyxAgent("answer", digits="1", ring_s=0.3)}
    async with rig(tmp_path, agents, scale=1.0) as (fake, _, handoff):
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        await fake.wait_for(lambda: bool(fake.dialled))
        fake.calls[CALL].webhook_url = None
        await fake.caller_hangs_up(CALL)
        await fake.wait_for(lambda: transfer.finished.is_set())
        await fake.settle()
        assert transfer.state is TransferState.CALLER_LEFT
        agent = fake.dialled[0]
        assert agent.bridged_with is None and not agent.alive
        assert agent.commands() == ["gather_using_speak", "hangup"]
        assert [a["result"] for a in transfer.record.attempts] == ["caller_hung_up"]
