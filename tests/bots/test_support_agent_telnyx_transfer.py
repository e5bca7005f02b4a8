"""The support agent's warm transfer on a Telnyx call, end to end over real sockets: the caller
(a Telnyx media stream) asks for a person, the bot escalates, Call Control stops the stream and
plays hold audio; nobody answers, ``streaming_start`` opens a new stream of the same call, and
the bot carries on the same conversation and takes a callback number. Deepgram, OpenAI,
ElevenLabs and Telnyx Call Control are the fakes; this test plays Telnyx's media side."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.fakes.telnyx_rest import FakeTelnyxAgent, FakeTelnyxREST
from voxpipe.testing.twilio_caller import parse_twiml_stream, read_caller_wav

from .test_support_agent_vonage_transfer import replies

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
CALL = "v3:telnyx-caller-leg"
CALLER = "+447700900456"
AGENT = "+442079460001"
LISTEN_S = 3.0


def _said(start: float, end: float, text: str) -> DeepgramUtterance:
    return DeepgramUtterance(text, start=start + LISTEN_S, end=end + LISTEN_S)


async def telnyx_stream(
    url: str, client_state: str | None, audio: bytes, stopped: Callable[[], bool]
) -> int:
    """Be Telnyx's media side of one stream until the server closes it, or until Call
    Control stops it (``stopped()``: then a ``stop`` is sent); bytes heard."""
    heard = 0
    start: dict[str, Any] = {
        "call_control_id": CALL,
        "call_session_id": "session-1",
        "from": CALLER,
        "to": "+442079460000",
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    }
    if client_state:
        start["client_state"] = client_state
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "start": start, "stream_id": "st"}))

        async def talk() -> None:
            for i in range(0, len(audio), 160):  # 20 ms of 8 kHz mu-law, in real time
                if stopped():
                    await ws.send(json.dumps({"event": "stop", "stream_id": "st"}))
                    await ws.close()
                    return
                media = {"track": "inbound", "payload": base64.b64encode(audio[i : i + 160])}
                media["payload"] = media["payload"].decode()
                await ws.send(json.dumps({"event": "media", "media": media, "stream_id": "st"}))
                await asyncio.sleep(0.02)

        talker = asyncio.get_running_loop().create_task(talk())
        try:
            async with asyncio.timeout(60):
                async for message in ws:
                    data = json.loads(message)
                    if data["event"] == "media":
                        heard += len(base64.b64decode(data["media"]["payload"]))
                    elif data["event"] == "mark":  # played: echo the mark back
                        echo = {"event": "mark", "stream_id": "st", "mark": data["mark"]}
                        await ws.send(json.dumps(echo))
        except ConnectionClosed:
            pass
        finally:
            talker.cancel()
            await asyncio.gather(talker, return_exceptions=True)
    return heard


async def test_nobody_free_the_telnyx_caller_returns_to_the_same_conversation(
    tmp_path: Path,
) -> None:
    speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")
    audio = b"\xff" * int(8000 * LISTEN_S) + speech + b"\xff" * 8000 * 10
    async with (
        FakeDeepgram(utterances=[_said(0.6, 2.83, "I want to talk to a real person.")]) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=15.0, first_audio_latency=0.05) as el,
        FakeTelnyxREST(agents={AGENT: FakeTelnyxAgent("never")}, timeout_scale=0.05) as tx,
    ):
        settings = VoxpipeSettings(
            _env_file=None,  # type: ignore[call-arg]
            deepgram_api_key="test-key",
            deepgram_base_url=dg.url,
            openai_api_key="test-key",
            openai_base_url=oa.base_url,
            elevenlabs_api_key="test-key",
            elevenlabs_base_url=el.url,
            sqlite_path=str(tmp_path / "calls.sqlite3"),
            spool_dir=str(tmp_path / "spool"),
            consent_mode="off",
            telnyx_public_key=tx.public_key,
            telnyx_api_key=tx.api_key,
            telnyx_connection_id="conn-1",
            telnyx_api_base_url=tx.url,
            transfer_to=AGENT,
        )
        app = create_app(BOT, settings)
        st = app.state.voxpipe

        async def calls_over() -> None:
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()

        async with running_server(app, settings) as srv:
            settings.public_url = srv.url  # Telnyx needs absolute URLs
            caller = tx.add_call(CALL, webhook_url=srv.url + "/transfer/telnyx/events")
            form = f"CallSid={CALL}&From=%2B447700900456&To=%2B442079460000".encode()
            async with httpx.AsyncClient() as client:
                texml = await client.post(
                    srv.url + "/telnyx/voice",
                    content=form,
                    headers={
                        "content-type": "application/x-www-form-urlencoded",
                        **tx.signer.headers(form),
                    },
                )
            url, _ = parse_twiml_stream(texml.text)

            def stream_stopped() -> bool:
                return "streaming_stop" in caller.commands()

            assert await telnyx_stream(url, None, audio, stream_stopped) > 0
            await tx.wait_for(lambda: caller.commands()[:2] == ["streaming_stop", "playback_start"])
            await calls_over()
            # Nobody answered: Call Control starts a new stream of the same call.
            await tx.wait_for(lambda: "streaming_start" in caller.commands(), 15)
            resume = caller.actions[-1][1]
            dg.utterances = [_said(4.13, 5.74, "Then please call me back.")]
            heard = await telnyx_stream(
                resume["stream_url"], resume["client_state"], audio, lambda: False
            )
            assert heard > 0
            await calls_over()

    assert [c.to for c in tx.dialled] == [AGENT]
    assert tx.dialled[0].hangup_cause == "timeout" and tx.dialled[0].said == []
    streamed = [r.json for r in oa.requests if r.json.get("stream")]
    first_user = [m["content"] for m in streamed[-1]["messages"] if m["role"] == "user"]
    assert "I want to talk to a real person." in first_user
    store = SqliteTranscriptStore(tmp_path / "calls.sqlite3")
    await store.start()
    try:
        row = await store.read(CALL, reader="test_support_agent_telnyx_transfer")
    finally:
        await store.close()
    assert row is not None
    turns = [(t.role, t.text) for t in row.turns]
    assert ("user", "I want to talk to a real person.") in turns
    assert ("user", "Then please call me back.") in turns
    assert any(t.startswith("I'm sorry, nobody is free") for r, t in turns if r == "assistant")
    record = row.metadata["escalation"]
    assert (record["outcome"], record["callback_number"]) == ("message_taken", "+1555777")
    assert record["carrier"] == "telnyx" and record["trigger"] == "request"
    assert [a["result"] for a in record["attempts"]] == ["no_answer"]
