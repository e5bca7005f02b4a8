"""Provider outages in a whole support-agent call: a simulated Twilio caller over real sockets to
the real server, Deepgram/OpenAI/ElevenLabs played by their fakes, and Deepgram going down
mid-call (its port closed, its socket dropped) while the caller asks a question.

The call stays up, the caller hears the pre-rendered apology during the outage, and the
question is answered right after Deepgram is back (its audio was kept and sent on reconnect);
an outage longer than PROVIDER_OUTAGE_GRACE_S ends the call with the goodbye and a transcript.
These run in real time (real sockets), so their outages are short; the 15 s outage of the
issue is the slow-marked last test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.tts.cache import SPEECH_CACHE
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.shared import close_shared_stores
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller, read_caller_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"


def _outage_lines() -> Any:
    # bots/ is not a package on the import path: load the bot file by its path.
    spec = importlib.util.spec_from_file_location(
        "support_agent_for_outage_tests", ROOT / "bots" / "support_agent.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OUTAGE_LINES["en"]


LINES = _outage_lines()
GREETING = "Hello, thanks for calling. How can I help you today?"  # the en-US row
ANSWER = "I can check that for you. Goodbye!"
QUESTION_TEXT = "Hello, I need some help with my order."
QUESTION_LEN_S = 2.83  # where the question ends in tests/data/speech_16k.wav


def background(seconds: float, seed: int = 0) -> bytes:
    """Quiet line noise (mu-law codes of a few units): below the VAD, and varied, so the fake
    can place the audio Deepgram's client resends after a reconnect."""
    rng = np.random.default_rng(seed)
    codes = np.array([0xFE, 0xFD, 0xFC, 0x7E, 0x7D, 0x7C], dtype=np.uint8)
    return rng.choice(codes, int(seconds * 8000)).tobytes()


def caller_audio(listen_s: float, total_s: float) -> bytes:
    speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")
    question = speech[: int(8000 * (QUESTION_LEN_S + 0.3))]
    audio = background(listen_s) + question
    return audio + background(total_s - len(audio) / 8000, seed=1)


def replies(body: dict[str, Any]) -> str:
    if not body.get("stream"):
        return "The caller asked about an order."  # a summary request
    return ANSWER


def settings_for(
    dg: FakeDeepgram, oa: FakeOpenAI, el: FakeElevenLabs, tmp_path: Path, **kwargs: Any
) -> VoxpipeSettings:
    return VoxpipeSettings(
        _env_file=None,  # type: ignore[call-arg]
        deepgram_api_key="test-key",
        deepgram_base_url=dg.url,
        openai_api_key="test-key",
        openai_base_url=oa.base_url,
        elevenlabs_api_key="test-key",
        elevenlabs_base_url=el.url,
        consent_mode="off",
        sqlite_path=str(tmp_path / "voxpipe.sqlite3"),
        spool_dir=str(tmp_path / "spool"),
        recordings_url=str(tmp_path / "recordings"),
        allow_unsigned_webhooks=True,  # the simulated caller dials unsigned, on loopback
        **kwargs,
    )


def cached(text: str, r: dict[str, Any]) -> bytes:
    """The pre-rendered audio of ``text`` in this worker's cache, rendered by this test's fake."""
    found = [
        s
        for k, s in SPEECH_CACHE._done.items()
        if k.text == text and k.encoding == "mulaw" and r["tts_url"] in k.voice
    ]
    assert found, f"{text!r} was not pre-rendered"
    return found[-1].audio


async def read_transcript(tmp_path: Path, call_sid: str) -> list[tuple[str, str]]:
    store = SqliteTranscriptStore(tmp_path / "voxpipe.sqlite3")
    await store.start()
    try:
        transcript = await store.read(call_sid, reader="test_support_agent_outage")
    finally:
        await store.close()
    assert transcript is not None, "no transcript for the call"
    return [(t.role, t.text) for t in transcript.turns]


async def outage_call(
    tmp_path: Path,
    *,
    down_after_s: float,
    outage_s: float | None,
    listen_s: float,
    total_s: float,
    until: Any,
    services: tuple[str, ...] = ("stt",),
    **settings: Any,
) -> dict[str, Any]:
    """One call with the providers of ``services`` (Deepgram by default) down from
    ``down_after_s`` of the caller's audio for ``outage_s`` (None: for good). Returns what the
    test asserts on."""
    call_sid = "CA" + uuid.uuid4().hex
    question = DeepgramUtterance(QUESTION_TEXT, start=listen_s + 0.6, end=listen_s + QUESTION_LEN_S)
    out: dict[str, Any] = {"call_sid": call_sid}
    async with (
        FakeDeepgram(utterances=[question], latency=0.15) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=12.0, first_audio_latency=0.05) as el,
    ):
        out["tts_url"] = el.url
        st = settings_for(dg, oa, el, tmp_path, **settings)
        app = create_app(BOT, st)
        async with running_server(app, st) as srv:
            caller = await TwilioCaller.dial(
                srv.url,
                call_sid=call_sid,
                form={"From": "+15551230000", "FromCountry": "US"},
                audio=caller_audio(listen_s, total_s),
                realtime=True,
            )

            async def outage() -> None:
                await dg.wait_for(lambda: dg.total_audio_bytes >= 8000 * down_after_s, timeout=30)
                fakes = {"stt": dg, "llm": oa, "tts": el}
                for service in services:
                    await fakes[service].go_down()
                out["down_perf"] = time.perf_counter()
                out["down_t"] = asyncio.get_running_loop().time() - caller._t0
                if outage_s is None:
                    return
                await asyncio.sleep(outage_s)  # the outage's length is the scenario
                for service in services:
                    await fakes[service].come_back()
                out["back_perf"] = time.perf_counter()
                out["back_t"] = asyncio.get_running_loop().time() - caller._t0

            driver = asyncio.create_task(outage())
            log: CallerLog = await caller.run(until=lambda log: until(log, oa, out), timeout=60)
            await driver
            async with httpx.AsyncClient() as http:
                out["metrics"] = (await http.get(srv.url + "/metrics")).text
            registry = app.state.voxpipe.registry
            async with asyncio.timeout(15):
                while len(registry):
                    await registry.sessions[0].ended.wait()
        await close_shared_stores()
        out["log"] = log
        out["llm_requests"] = [r for r in oa.requests if r.json.get("stream")]
    return out


def answered(log: CallerLog, oa: FakeOpenAI, out: dict[str, Any]) -> bool:
    return log.closed_by_server


async def test_a_deepgram_outage_keeps_the_call_apologizes_and_answers_after(
    tmp_path: Path,
) -> None:
    r = await outage_call(
        tmp_path, down_after_s=2.5, outage_s=5.0, listen_s=3.0, total_s=20.0, until=answered
    )
    log: CallerLog = r["log"]
    assert log.errors == [] and log.closed_by_server  # the bot hung up after its answer
    # The apology, heard while Deepgram was down (straight from the pre-rendered cache).
    apology = cached(LINES.apology, r)
    assert apology[:1600] in log.audio(since=r["down_t"], until=r["back_t"])  # began then
    assert apology in log.audio(since=r["down_t"])
    # The question asked during the outage was answered promptly once Deepgram was back.
    (request,) = r["llm_requests"]
    assert request.json["messages"][-1]["content"] == QUESTION_TEXT
    assert 0 < request.received_at - r["back_perf"] < 3.0
    turns = await read_transcript(tmp_path, r["call_sid"])
    assert turns == [
        ("assistant", GREETING),
        ("assistant", LINES.apology),
        ("user", QUESTION_TEXT),
        ("assistant", ANSWER),
    ]
    metrics = r["metrics"]
    assert 'voxpipe_provider_outages_total{provider="deepgram"} 1.0' in metrics
    assert 'voxpipe_provider_outage_seconds_count{provider="deepgram"} 1.0' in metrics
    assert 'voxpipe_outage_calls_ended_total{provider="deepgram"}' not in metrics


async def test_an_outage_past_the_grace_ends_the_call_politely_with_a_transcript(
    tmp_path: Path,
) -> None:
    r = await outage_call(
        tmp_path,
        down_after_s=1.5,
        outage_s=None,  # Deepgram never comes back
        listen_s=2.0,
        total_s=20.0,
        until=answered,
        provider_outage_grace_s=3.0,
    )
    log: CallerLog = r["log"]
    assert log.errors == [] and log.closed_by_server
    # The goodbye was heard whole, then the call ended through its ordinary path.
    assert cached(LINES.goodbye, r) in log.audio(since=r["down_t"])
    assert r["llm_requests"] == []
    turns = await read_transcript(tmp_path, r["call_sid"])
    assert turns[0] == ("assistant", GREETING)
    assert turns[-1] == ("assistant", LINES.goodbye)
    metrics = r["metrics"]
    assert 'voxpipe_provider_outages_total{provider="deepgram"} 1.0' in metrics
    assert 'voxpipe_outage_calls_ended_total{provider="deepgram"} 1.0' in metrics
    assert 'voxpipe_calls_ended_total{carrier="twilio",how="bot-ended"} 1.0' in metrics


def reply_heard(log: CallerLog, oa: FakeOpenAI, out: dict[str, Any]) -> bool:
    """The answer's audio has started reaching the caller after Deepgram came back."""
    asked = [r for r in oa.requests if r.json.get("stream")]
    if not asked or "back_t" not in out:
        return False
    asked_t = out["back_t"] + (asked[0].received_at - out["back_perf"])
    return any(t > asked_t + 0.2 for t in log.media_times)


async def test_a_15_second_outage_mid_call(tmp_path: Path) -> None:
    """The issue's scenario: 15 s of Deepgram outage while the caller asks a question."""
    r = await outage_call(
        tmp_path, down_after_s=0.5, outage_s=15.0, listen_s=1.0, total_s=25.0, until=reply_heard
    )
    log: CallerLog = r["log"]
    assert log.errors == [] and not log.closed_by_server  # the call stayed up
    apology = cached(LINES.apology, r)
    assert apology in log.audio(since=r["down_t"], until=r["back_t"])
    (request,) = r["llm_requests"]
    assert request.json["messages"][-1]["content"] == QUESTION_TEXT
    assert 0 < request.received_at - r["back_perf"] < 3.0


async def test_with_the_llm_and_the_tts_down_the_fallback_line_plays_from_the_cache(
    tmp_path: Path,
) -> None:
    """The issue's other case: both LLM attempts fail and the TTS is down too."""
    fallback = VoxpipeSettings(_env_file=None).llm_fallback_text  # type: ignore[call-arg]

    def heard_fallback(log: CallerLog, oa: FakeOpenAI, out: dict[str, Any]) -> bool:
        found = [
            s
            for k, s in SPEECH_CACHE._done.items()
            if k.text == fallback and out["tts_url"] in k.voice
        ]
        return bool(found) and found[-1].audio in log.audio()

    r = await outage_call(
        tmp_path,
        down_after_s=2.5,
        outage_s=None,
        listen_s=3.0,
        total_s=20.0,
        until=heard_fallback,
        services=("llm", "tts"),
    )
    log: CallerLog = r["log"]
    assert log.errors == [] and not log.closed_by_server  # the call goes on
    assert cached(fallback, r) in log.audio(since=r["down_t"])
    metrics = r["metrics"]
    assert 'voxpipe_provider_outages_total{provider="openai"} 1.0' in metrics
