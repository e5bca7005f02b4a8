"""`voxpipe replay --offline`: a support-agent call recorded with the cloud services (their
protocol-faithful fakes, over real sockets) replays with no provider at all, to the same
transcripts, replies and bot audio length, identically every time, and into scratch stores."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voxpipe.call import load_bot
from voxpipe.cli import main
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing.bot_runs import replay_recording
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.recording import read_recording
from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller, read_caller_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
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
        return "The caller asked about an order."
    said = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if "goodbye" in said.lower():
        return "Thanks for calling. Goodbye!"
    if "four five six" in said:
        return "Order four five six ships tomorrow."
    return "Sure, what is the order number?"


def closed(log: CallerLog) -> bool:
    return log.closed_by_server


async def test_a_cloud_call_replays_offline_to_the_same_output(tmp_path: Path) -> None:
    call_sid = "CAofflinereplay"
    records = tmp_path / "records"
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
            sqlite_path=str(tmp_path / "live.sqlite3"),
            spool_dir=str(tmp_path / "spool"),
            recordings_url=str(tmp_path / "recordings"),
            consent_mode="off",
            allow_unsigned_webhooks=True,  # the simulated caller dials unsigned, on loopback
        )
        app = create_app(BOT, settings, record_dir=records)
        speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")
        audio = b"\xff" * int(8000 * LISTEN_S) + speech
        async with running_server(app, settings) as srv:
            caller = await TwilioCaller.dial(
                srv.url,
                call_sid=call_sid,
                form={"From": "+14155550100", "FromCountry": "US"},
                audio=audio,
                realtime=True,
                tail_silence_s=6.0,
            )
            log = await caller.run(until=closed, timeout=60)
            assert log.errors == []
            st = app.state.voxpipe
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()

    # What the live call stored: the reference.
    store = SqliteTranscriptStore(tmp_path / "live.sqlite3")
    await store.start()
    try:
        transcript = await store.read(call_sid, reader="test")
    finally:
        await store.close()
    assert transcript is not None
    live_user = [t.text for t in transcript.turns if t.role == "user"]
    live_bot = [t.text for t in transcript.turns if t.role == "assistant"]
    assert live_user == [u.text for u in UTTERANCES]

    path = records / f"{call_sid}.jsonl"
    rec = read_recording(path)
    assert rec.header["version"] == 3
    ops = {(s.service, s.op) for s in rec.services}
    assert {("stt", "transcript"), ("llm", "chunk"), ("tts", "audio")} <= ops
    assert not any("audio" in s.data and isinstance(s.data["audio"], str) for s in rec.services)

    # The fakes are gone and no key is set: only the recording can answer.
    configured = tmp_path / "configured.sqlite3"
    offline = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        sqlite_path=str(configured),
        spool_dir=str(tmp_path / "spool2"),
        consent_mode="off",  # as the call was made
    )
    bot = load_bot(BOT)
    first = await asyncio.to_thread(replay_recording, path, bot, settings=offline, offline=True)
    again = await asyncio.to_thread(replay_recording, path, bot, settings=offline, offline=True)
    summary = first.summary
    # The STT's finals: a caller's pause asks for one (Finalize when the silence begins, for a
    # preemptive reply), so a turn can come in several; together they say what was said.
    assert " ".join(summary["transcripts"]) == " ".join(live_user)
    assert [r for r in summary["replies"] if r] == live_bot
    # The bot's audio on the wire: the recorded lengths (as silence), byte for byte as long.
    assert len(first.audio) == len(log.audio())
    assert again.summary == summary and again.audio == first.audio  # bit for bit
    assert not configured.exists()  # a replay never writes to the configured stores

    # The command: no key, exit 0, the same replies printed.
    assert await asyncio.to_thread(main, ["replay", str(path), "--offline"]) == 0
