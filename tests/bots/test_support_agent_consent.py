"""Consent by jurisdiction in the support agent, end to end over real sockets (simulated Twilio
callers, Deepgram/OpenAI/ElevenLabs fakes, SQLite): a US caller who simply asks a question is
answered without pressing a key; a German caller hears the IVR in German and nothing they say
reaches the LLM before they answer it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voxpipe.config.locale_texts import locale_text
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.twilio_caller import TwilioCaller, read_caller_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
LISTEN_S = 4.0  # the caller listens first, then says the first sentence of speech_16k.wav
QUESTION = "Hello, I need some help with my order."
REPLY = "Sure, what is the order number?"


def spoken(el: FakeElevenLabs) -> str:
    return " ".join(c.text for c in el.connections)


def stream_requests(oa: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in oa.requests if r.json.get("stream")]


async def call(
    tmp_path: Path,
    form: dict[str, str],
    *,
    dtmf: list[tuple[float, str]] | None = None,
    until: Any,
) -> tuple[FakeElevenLabs, FakeOpenAI, Path, str]:
    db = tmp_path / "calls.sqlite3"
    utterance = DeepgramUtterance(QUESTION, start=0.6 + LISTEN_S, end=2.83 + LISTEN_S)
    async with (
        FakeDeepgram(utterances=[utterance], latency=0.15) as dg,
        FakeOpenAI(replies=lambda body: REPLY, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=10.0, first_audio_latency=0.05) as el,
    ):
        settings = VoxpipeSettings(  # type: ignore[call-arg]
            _env_file=None,
            allow_unsigned_webhooks=True,  # the simulated caller dials unsigned, on loopback
            deepgram_api_key="test-key",
            deepgram_base_url=dg.url,
            openai_api_key="test-key",
            openai_base_url=oa.base_url,
            elevenlabs_api_key="test-key",
            elevenlabs_base_url=el.url,
            sqlite_path=str(db),
            spool_dir=str(tmp_path / "spool"),
        )
        app = create_app(BOT, settings)
        speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")[: 3 * 8000]
        audio = b"\xff" * int(8000 * LISTEN_S) + speech
        async with running_server(app, settings) as srv:
            caller = await TwilioCaller.dial(
                srv.url, form=form, audio=audio, realtime=True, tail_silence_s=8.0, dtmf=dtmf
            )
            log = await caller.run(until=lambda log: until(el, oa), timeout=40)
            assert log.errors == [] and log.close_code != 1011
            st = app.state.voxpipe
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()
        return el, oa, db, caller.call_sid


async def test_us_caller_asking_a_question_is_answered_without_a_key(tmp_path: Path) -> None:
    el, oa, db, call_sid = await call(
        tmp_path,
        {"From": "+14155550100", "FromCountry": "US"},
        until=lambda el, oa: REPLY in spoken(el),
    )
    said = spoken(el)
    notice = locale_text("en-US", "consent.notice")
    greeting = "Hello, thanks for calling. How can I help you today?"
    assert said.index(notice) < said.index(greeting) < said.index(REPLY)
    assert locale_text("en-US", "consent.ivr.prompt") not in said  # not asked to press a key
    # The reply heard answers the question (a preemptive request at a pause inside it, if
    # any, was discarded: the last request is the one answered).
    asked = stream_requests(oa)
    assert asked and asked[-1]["messages"][-1] == {"role": "user", "content": QUESTION}
    store = SqliteTranscriptStore(db)
    await store.start()
    try:
        transcript = await store.read(call_sid, reader="test")
    finally:
        await store.close()
    assert transcript is not None  # continuing after the notice is consent
    assert ("user", QUESTION) in [(t.role, t.text) for t in transcript.turns]


async def test_german_caller_gets_the_ivr_and_is_answered_only_after_pressing_1(
    tmp_path: Path,
) -> None:
    greeting = "Hallo, danke für Ihren Anruf. Wie kann ich Ihnen helfen?"
    el, oa, db, _ = await call(
        tmp_path,
        {"From": "+4915123456789", "FromCountry": "DE"},
        dtmf=[(LISTEN_S + 5.0, "1")],
        until=lambda el, oa: greeting in spoken(el),
    )
    said = spoken(el)
    prompt = locale_text("de-DE", "consent.ivr.prompt")
    assert said.index(prompt) < said.index("Vielen Dank.") < said.index(greeting)
    assert locale_text("de-DE", "consent.notice") not in said.replace(prompt, "")
    # The question was asked over the prompt, before the answer: the LLM never saw it.
    assert stream_requests(oa) == []
    assert REPLY not in said
