"""Warm transfer on Twilio over real sockets: the server's signed callback routes, the
``TwilioTransfer`` state machine started by ``TwilioHandoff``, and the fake Twilio that dials
scripted agents, runs the conference and POSTs signed callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from voxpipe.call import Call
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.aggregators import LLMContext
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.session import Turn
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.telephony.handoff import TwilioHandoff
from voxpipe.telephony.transfers import TransferConfig
from voxpipe.telephony.twilio_transfer import TransferState, TransferWording
from voxpipe.testing.fakes import FakeTwilioREST
from voxpipe.testing.fakes.twilio_flow import FakeAgent
from voxpipe.testing.twilio_caller import parse_twiml_stream

pytestmark = pytest.mark.slow

ACCOUNT = "AC" + "1" * 32
TOKEN = "transfer-test-token"
AGENT_A = "+15550001001"
AGENT_B = "+15550001002"


async def _no_bot(call: Call) -> FrameProcessor:
    return FrameProcessor()


@dataclass
class Rig:
    fake: FakeTwilioREST
    settings: VoxpipeSettings
    url: str
    app: Any
    sessions: MemorySessionStore
    transcripts: SqliteTranscriptStore

    def handoff(
        self, call_sid: str, heartbeat_s: float = 10.0
    ) -> tuple[TwilioHandoff, TranscriptRecorder]:
        config = TransferConfig.from_settings(self.settings)
        assert config is not None
        recorder = TranscriptRecorder(
            AssistantContextAggregator(LLMContext("test")),
            sessions=self.sessions,
            transcripts=self.transcripts,
            call_id=call_sid,
        )

        def wording(reason: str, summary: str) -> TransferWording:
            return TransferWording(
                brief=f"Reason: {reason}. Summary: {summary}", hold_line="Please hold."
            )

        handoff = TwilioHandoff(
            config,
            call_sid=call_sid,
            called="+15550009999",
            recorder=recorder,
            sessions=self.sessions,
            transcripts=self.transcripts,
            wording=wording,
            heartbeat_interval_s=heartbeat_s,
        )
        return handoff, recorder

    async def caller(self) -> str:
        sid = "CA" + uuid.uuid4().hex
        self.fake.add_call(sid)
        # The conversation so far, as the bot's recorder left it in the session.
        await self.sessions.set_meta(sid, {"call_id": sid, "caller": "+15551230000"})
        await self.sessions.append_turn(sid, Turn("user", "I want a person.", 1.0, 2.0))
        return sid


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, agents: dict[str, FakeAgent], **kw: Any) -> AsyncIterator[Rig]:
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN, agents=agents) as fake:
        settings = VoxpipeSettings(
            _env_file=None,  # type: ignore[call-arg]
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,
            twilio_api_base_url=fake.url,
            transfer_to=kw.get("transfer_to", f"{AGENT_A},{AGENT_B}"),
            transfer_ring_timeout_s=kw.get("ring", 20),
            spool_dir=str(tmp_path / "spool"),
        )
        app = create_app(_no_bot, settings, batched_vad=None)
        sessions = MemorySessionStore()
        transcripts = SqliteTranscriptStore(tmp_path / "t.sqlite3")
        await transcripts.start()
        try:
            async with running_server(app, settings) as srv:
                # Twilio needs absolute callback URLs: the server's own, known once it listens.
                settings.public_url = srv.url
                yield Rig(fake, settings, srv.url, app, sessions, transcripts)
        finally:
            await transcripts.close()


def _statuses(fake: FakeTwilioREST) -> list[int]:
    return [cb.status for cb in fake.callbacks]


async def test_agent_presses_1_and_joins_the_callers_conference(tmp_path: Path) -> None:
    async with rig(tmp_path, {AGENT_A: FakeAgent("answer", digits="1")}) as r:
        sid = await r.caller()
        handoff, recorder = r.handoff(sid)
        await handoff("caller asked for a person", "Billing question about a double charge.")
        transfer = handoff.transfer
        assert transfer is not None
        await r.fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.CONNECTED
        # The caller was moved into a conference named after the call, with hold audio that
        # our server served, ending when they leave; callbacks to our conference route.
        caller_twiml = r.fake.calls[sid].twiml[0]
        assert f">voxpipe-{sid}</Conference>" in caller_twiml
        assert 'endConferenceOnExit="true"' in caller_twiml
        conf = r.fake.conferences[f"voxpipe-{sid}"]
        assert conf.hold_audio and conf.hold_audio[0][:2] == (200, "audio/wav")
        # The agent heard the brief before being connected, and only then joined.
        agent = r.fake.dialled[0]
        assert agent.to == AGENT_A and agent.timeout_s == 20
        assert agent.said[0] == (
            "Reason: caller asked for a person. Summary: Billing question about a double charge."
        )
        assert agent.said[1] == "Press 1 to take the call."
        await r.fake.wait_for(lambda: conf.started)  # the answer to "1" joins them
        assert set(conf.participants) == {sid, agent.sid}
        # Every callback carried a signature our server accepted; Twilio's own validator agrees.
        assert _statuses(r.fake) and all(s in (200, 204) for s in _statuses(r.fake))
        validator = RequestValidator(TOKEN)
        cb = r.fake.callbacks[0]
        from voxpipe.testing.fakes.twilio_flow import sign

        assert validator.validate(cb.url, cb.form, sign(TOKEN, cb.url, cb.form))
        # The record: connected to which number, with timings; the row is written from the
        # session now that the call is the agent's.
        await handoff.records_done.wait()
        row = await r.transcripts.read(sid, reader="test")
        assert row is not None
        record = row.metadata["escalation"]
        assert record["outcome"] == "connected" and record["connected_to"] == AGENT_A
        assert record["reason"] == "caller asked for a person"
        assert record["hold_s"] is not None and record["hold_s"] >= 0
        assert [a["result"] for a in record["attempts"]] == ["connected"]
        assert [(t.role, t.text) for t in row.turns] == [("user", "I want a person.")]
        assert recorder.defer_final
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(r.url + "/metrics")).text
        assert 'voxpipe_transfer_steps_total{step="agent_connected"}' in metrics


async def test_declined_then_connected_on_the_second_number(tmp_path: Path) -> None:
    agents = {AGENT_A: FakeAgent("answer", digits="2"), AGENT_B: FakeAgent("answer", digits="1")}
    async with rig(tmp_path, agents) as r:
        sid = await r.caller()
        handoff, _ = r.handoff(sid)
        await handoff("loop", "Asked three times about the router.")
        transfer = handoff.transfer
        assert transfer is not None
        await r.fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.CONNECTED
        a, b = r.fake.dialled
        assert (a.to, b.to) == (AGENT_A, AGENT_B)
        assert a.digits == ["2"] and a.status == "completed"  # hung up after declining
        assert transfer.record.connected_to == AGENT_B
        assert [x["result"] for x in transfer.record.attempts] == ["declined", "connected"]
        conf = r.fake.conferences[f"voxpipe-{sid}"]
        await r.fake.wait_for(lambda: conf.started)
        assert a.sid not in conf.participants and b.sid in conf.participants


async def test_nobody_answers_the_caller_goes_back_to_the_bot(tmp_path: Path) -> None:
    agents = {AGENT_A: FakeAgent("no-answer"), AGENT_B: FakeAgent("busy")}
    async with rig(tmp_path, agents) as r:
        sid = await r.caller()
        handoff, _ = r.handoff(sid)
        await handoff("caller asked for a person", "Wants to cancel.")
        transfer = handoff.transfer
        assert transfer is not None
        await r.fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.RETURNED
        assert transfer.record.outcome == "no_answer"
        assert [x["result"] for x in transfer.record.attempts] == ["no_answer", "busy"]
        # The caller's call was sent back to our voice webhook (signed fetch) and got a new
        # stream with a fresh stream token, telling the bot to resume.
        await r.fake.wait_for(lambda: any(f.call_sid == sid for f in r.fake.fetches))
        fetch = next(f for f in r.fake.fetches if f.call_sid == sid)
        assert fetch.status == 200 and "voxpipe_resume=transfer" in fetch.url
        stream_url, params = parse_twiml_stream(fetch.twiml)
        assert stream_url.endswith("/twilio/stream")
        assert params["voxpipe_resume"] == "transfer" and params["voxpipe_token"]
        # The session is kept for the resumed bot; no row yet.
        state = await r.sessions.load(sid)
        assert state is not None and state.meta["escalation"]["outcome"] == "no_answer"
        assert await r.transcripts.read(sid, reader="test") is None


async def test_caller_hanging_up_on_hold_cancels_the_agent_leg(tmp_path: Path) -> None:
    agents = {AGENT_A: FakeAgent("no-answer", ring_s=600)}  # rings until cancelled
    async with rig(tmp_path, agents) as r:
        sid = await r.caller()
        handoff, _ = r.handoff(sid)
        await handoff("caller is upset", "Angry about the outage.")
        transfer = handoff.transfer
        assert transfer is not None
        await r.fake.wait_for(lambda: r.fake.dialled and r.fake.dialled[0].status == "ringing")
        await r.fake.hang_up(sid)
        await r.fake.wait_for(lambda: transfer.finished.is_set())
        assert transfer.state is TransferState.CALLER_LEFT
        agent = r.fake.dialled[0]
        await r.fake.wait_for(lambda: agent.status == "canceled")
        assert agent.said == []  # nobody was briefed for a caller who left
        await handoff.records_done.wait()
        row = await r.transcripts.read(sid, reader="test")
        assert row is not None and row.metadata["escalation"]["outcome"] == "caller_hung_up"


async def test_unsigned_or_forged_callbacks_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig(tmp_path, {AGENT_A: FakeAgent("no-answer", ring_s=600)}) as r:
        sid = await r.caller()
        handoff, _ = r.handoff(sid)
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        url = f"{r.url}/transfer/twilio/{sid}/answer"
        form = {"CallSid": transfer.agent_sid or "", "Digits": "1"}
        caplog.set_level(logging.WARNING, logger="voxpipe.security")
        async with httpx.AsyncClient() as client:
            unsigned = await client.post(url, data=form)
            forged = await client.post(url, data=form, headers={"X-Twilio-Signature": "AAAA"})
        assert unsigned.status_code == 403 and forged.status_code == 403
        assert transfer.state is TransferState.RINGING  # nothing happened
        assert any(getattr(r_, "event", "") == "bad_signature" for r_ in caplog.records)
        await r.fake.hang_up(sid)
        await r.fake.wait_for(lambda: transfer.finished.is_set())


async def test_the_session_heartbeat_goes_on_while_the_caller_is_on_hold(tmp_path: Path) -> None:
    # The bot's pipeline (which heartbeated) ended when the caller was moved: without this the
    # orphan sweeper would write the call up, and drop its session, mid-transfer.
    async with rig(tmp_path, {AGENT_A: FakeAgent("no-answer", ring_s=600)}) as r:
        sid = await r.caller()
        before = await r.sessions.load(sid)
        assert before is not None
        handoff, _ = r.handoff(sid, heartbeat_s=0.05)
        await handoff("x", "y")
        transfer = handoff.transfer
        assert transfer is not None
        async with asyncio.timeout(5):
            while True:
                state = await r.sessions.load(sid)
                assert state is not None
                if state.heartbeat_at > before.heartbeat_at + 0.1:
                    break
                await asyncio.sleep(0.02)  # polls the store; the heartbeat is what is awaited
        await r.fake.hang_up(sid)
        await r.fake.wait_for(lambda: transfer.finished.is_set())
