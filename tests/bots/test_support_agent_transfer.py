"""The support agent's warm transfer end to end, over real sockets: the caller asks for a
person, is moved to hold, nobody answers, comes back to the bot on a new stream of the same
call, and the bot carries on the same conversation and takes a callback number. Deepgram,
OpenAI, ElevenLabs and Twilio (REST, conference, agents, signed callbacks) are the fakes; the
session is in the real Redis and the transcript row in the real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.consent import PostgresConsentStore
from voxpipe.state.postgres_store import PostgresTranscriptStore
from voxpipe.testing.fakes import (
    FakeDeepgram,
    FakeElevenLabs,
    FakeOpenAI,
    FakeReply,
    FakeToolCall,
    FakeTwilioREST,
)
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.fakes.twilio_flow import FakeAgent
from voxpipe.testing.twilio_caller import TwilioCaller, parse_twiml_stream, read_caller_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
ACCOUNT = "AC" + "2" * 32
TOKEN = "support-transfer-token"
CALLER = "+447700900456"
AGENT = "+15550002001"
LISTEN_S = 3.0


def _said(start: float, end: float, text: str) -> DeepgramUtterance:
    return DeepgramUtterance(text, start=start + LISTEN_S, end=end + LISTEN_S)


def replies(body: dict[str, Any]) -> FakeReply | str:
    if not body.get("stream"):
        return "The caller wants a person about a billing error."  # a summary request
    last = body["messages"][-1]
    if last["role"] == "tool":
        return "Thanks, a colleague will call you back. Goodbye!"
    said = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if "call me back" in said.lower():
        return FakeReply(
            tool_calls=[
                FakeToolCall(
                    "take_message",
                    {"message": "Billing error, please call back", "callback_number": "+1555777"},
                )
            ]
        )
    return "Sure."


async def test_nobody_free_the_caller_returns_to_the_same_conversation(
    tmp_path: Path, pg_schema: str
) -> None:
    call_sid = "CA" + uuid.uuid4().hex
    consents = PostgresConsentStore(PG, schema=pg_schema)
    await consents.start()
    try:
        await consents.record(CALLER, True, call_id="CAearlier")
    finally:
        await consents.close()
    speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")
    audio = b"\xff" * int(8000 * LISTEN_S) + speech
    async with (
        FakeDeepgram(utterances=[_said(0.6, 2.83, "I want to talk to a real person.")]) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=15.0, first_audio_latency=0.05) as el,
        FakeTwilioREST(
            account_sid=ACCOUNT, auth_token=TOKEN, agents={AGENT: FakeAgent("no-answer")}
        ) as tw,
    ):
        tw.add_call(call_sid)
        settings = VoxpipeSettings(
            _env_file=None,  # type: ignore[call-arg]
            deepgram_api_key="test-key",
            deepgram_base_url=dg.url,
            openai_api_key="test-key",
            openai_base_url=oa.base_url,
            elevenlabs_api_key="test-key",
            elevenlabs_base_url=el.url,
            database_url=f"{PG}?search_path={pg_schema}",
            redis_url=REDIS,
            redis_key_prefix=f"vp-test-{uuid.uuid4().hex[:8]}:",
            spool_dir=str(tmp_path / "spool"),
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,
            twilio_api_base_url=tw.url,
            transfer_to=AGENT,
        )
        app = create_app(BOT, settings)
        st = app.state.voxpipe

        async def call_over() -> None:
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()

        async with running_server(app, settings) as srv:
            settings.public_url = srv.url  # Twilio's callbacks need absolute URLs
            first = await TwilioCaller.dial(
                srv.url,
                call_sid=call_sid,
                form={"From": CALLER, "FromCountry": "GB"},
                auth_token=TOKEN,
                account_sid=ACCOUNT,
                audio=audio,
                realtime=True,
                tail_silence_s=10.0,
            )
            # Twilio ends the stream when the call is moved to the hold conference.
            log1 = await first.run(until=lambda _: bool(tw.calls[call_sid].twiml), timeout=60)
            assert log1.errors == []
            await call_over()
            # Nobody answered: Twilio fetched our voice webhook again for the same call.
            await tw.wait_for(lambda: any(f.call_sid == call_sid for f in tw.fetches), 15)
            fetch = next(f for f in tw.fetches if f.call_sid == call_sid)
            assert fetch.status == 200, fetch.twiml
            stream_url, params = parse_twiml_stream(fetch.twiml)
            dg.utterances = [_said(4.13, 5.74, "Then please call me back.")]
            second = TwilioCaller(
                stream_url,
                custom_parameters=params,
                call_sid=call_sid,
                account_sid=ACCOUNT,
                audio=audio,
                realtime=True,
                tail_silence_s=10.0,
            )
            log2 = await second.run(until=lambda log: log.closed_by_server, timeout=60)
            assert log2.errors == [] and log2.media
            await call_over()

    # The agent was dialled with the brief ready, and never answered.
    assert [c.to for c in tw.dialled] == [AGENT]
    # The model, on the second stream, saw the first stream's conversation.
    streamed = [r.json for r in oa.requests if r.json.get("stream")]
    assert streamed, "the bot answered the returning caller"
    # (The last request: one prepared at a pause inside a sentence may have been discarded.)
    first_user = [m["content"] for m in streamed[-1]["messages"] if m["role"] == "user"]
    assert "I want to talk to a real person." in first_user
    store = PostgresTranscriptStore(PG, schema=pg_schema)
    await store.start()
    try:
        row = await store.read(call_sid, reader="test_support_agent_transfer")
    finally:
        await store.close()
    assert row is not None
    turns = [(t.role, t.text) for t in row.turns]
    assert ("user", "I want to talk to a real person.") in turns
    assert ("user", "Then please call me back.") in turns
    assert (
        "assistant",
        "I'm sorry, nobody is free to take your call right now. I can take a message or a "
        "callback number for you.",
    ) in turns
    assert row.escalated and row.escalation_reason == "caller asked for a person"
    record = row.metadata["escalation"]
    assert record["outcome"] == "message_taken"
    assert record["callback_number"] == "+1555777"
    assert record["trigger"] == "request"
    assert [a["result"] for a in record["attempts"]] == ["no_answer"]
