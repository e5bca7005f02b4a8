"""The inbound support agent, end to end: a simulated Twilio call over real sockets to the real
server, with Deepgram, OpenAI and ElevenLabs played by their protocol-faithful fakes, state in
the real Redis and the transcript in the real Postgres."""

from __future__ import annotations

import asyncio
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.consent import PostgresConsentStore
from voxpipe.state.postgres_store import PostgresTranscriptStore
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller, read_caller_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"

# The caller listens to the greeting first (mu-law silence), then says what is in
# tests/data/speech_16k.wav, at these seconds of the call's audio.
LISTEN_S = 3.0
UTTERANCES = [
    DeepgramUtterance(
        "Hello, I need some help with my order.", start=0.6 + LISTEN_S, end=2.83 + LISTEN_S
    ),
    DeepgramUtterance("The number is four five six.", start=4.13 + LISTEN_S, end=5.74 + LISTEN_S),
    DeepgramUtterance("Thank you, goodbye.", start=6.93 + LISTEN_S, end=8.18 + LISTEN_S),
]


def replies(body: dict[str, Any]) -> str:
    if not body.get("stream"):
        return "The caller asked about an order."  # a summary request
    said = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if "goodbye" in said.lower():
        return "Thanks for calling. Goodbye!"
    if "four five six" in said:
        return "Order four five six ships tomorrow."
    return "Sure, what is the order number?"


def bot_said_goodbye(log: CallerLog) -> bool:
    return log.closed_by_server


async def test_a_whole_call_leaves_a_transcript_row_with_every_turn(
    tmp_path: Path, pg_schema: str
) -> None:
    call_sid = "CA" + uuid.uuid4().hex
    # A caller who agreed to retention on an earlier call: not asked again, greeted at once.
    consents = PostgresConsentStore(PG, schema=pg_schema)
    await consents.start()
    try:
        await consents.record("+447700900123", True, call_id="CAearlier")
    finally:
        await consents.close()
    async with (
        FakeDeepgram(utterances=UTTERANCES, latency=0.15) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=15.0, first_audio_latency=0.05) as el,
    ):
        settings = VoxpipeSettings(
            _env_file=None,  # type: ignore[call-arg]
            deepgram_api_key="test-key",
            deepgram_base_url=dg.url,
            openai_api_key="test-key",
            openai_base_url=oa.base_url,
            elevenlabs_api_key="test-key",
            elevenlabs_base_url=el.url,
            # A schema of its own (asyncpg passes search_path on as a server setting).
            database_url=f"{PG}?search_path={pg_schema}",
            redis_url=REDIS,
            spool_dir=str(tmp_path / "spool"),
            recordings_url=str(tmp_path / "recordings"),
            allow_unsigned_webhooks=True,  # the simulated caller dials unsigned, on loopback
        )
        app = create_app(BOT, settings)
        speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")
        audio = b"\xff" * int(8000 * LISTEN_S) + speech
        async with running_server(app, settings) as srv:
            caller = await TwilioCaller.dial(
                srv.url,
                call_sid=call_sid,
                form={"From": "+447700900123", "FromCountry": "GB"},
                audio=audio,
                realtime=True,
                tail_silence_s=6.0,
            )
            log = await caller.run(until=bot_said_goodbye, timeout=60)
            assert log.errors == []
            assert log.media, "the caller heard the bot"
            st = app.state.voxpipe
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()

    store = PostgresTranscriptStore(PG, schema=pg_schema)
    await store.start()
    try:
        transcript = await store.read(call_sid, reader="test_support_agent")
    finally:
        await store.close()
    assert transcript is not None, "no transcript row for the call"
    turns = [(t.role, t.text) for t in transcript.turns]
    assert transcript.locale == "en-GB"  # +44 caller
    assert transcript.caller == "+447700900123"
    user = [text for role, text in turns if role == "user"]
    assistant = [text for role, text in turns if role == "assistant"]
    assert user == [u.text for u in UTTERANCES]
    # The en-GB row's greeting, heard whole before the caller spoke.
    assert assistant[0] == "Hello, thank you for calling. How can I help you today?"
    assert assistant[1:] == [
        "Sure, what is the order number?",
        "Order four five six ships tomorrow.",
        "Thanks for calling. Goodbye!",
    ]
    # The call was recorded (RECORDING=on by default): stereo 8 kHz, caller left, bot right.
    with wave.open(str(tmp_path / "recordings" / f"{call_sid}.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert np.count_nonzero(frames[:, 0]) > 8000 and np.count_nonzero(frames[:, 1]) > 8000
