"""The support agent's warm transfer on a Vonage call, end to end over real sockets: the caller
(a Vonage websocket) asks for a person, the bot escalates, the caller is transferred to a held
conversation and the bot's websocket is closed; nobody answers, the caller is connected to a
new websocket of the same call, and the bot carries on the same conversation and takes a
callback number. Deepgram, OpenAI, ElevenLabs and the Vonage Voice API are the fakes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from voxpipe.audio import read_wav
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing.carrier_signing import vonage_jwt
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeReply, FakeToolCall
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.fakes.vonage_rest import FakeVonageAgent, FakeVonageREST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
CALL = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
CALLER = "447700900456"
AGENT = "+442079460001"
LISTEN_S = 3.0


def _said(start: float, end: float, text: str) -> DeepgramUtterance:
    return DeepgramUtterance(text, start=start + LISTEN_S, end=end + LISTEN_S)


def replies(body: dict[str, Any]) -> FakeReply | str:
    if not body.get("stream"):
        return "The caller wants a person about a billing error."  # a summary request
    if body["messages"][-1]["role"] == "tool":
        return "Thanks, a colleague will call you back. Goodbye!"
    said = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if "call me back" in said.lower():
        message = {"message": "Billing error, please call back", "callback_number": "+1555777"}
        return FakeReply(tool_calls=[FakeToolCall("take_message", message)])
    return "Sure."


async def vonage_call(endpoint: dict[str, Any], audio: bytes, timeout: float) -> int:
    """Be Vonage on one websocket of the call until the server closes it; bytes heard."""
    heard = 0
    async with connect(endpoint["uri"]) as ws:
        hello = {"event": "websocket:connected", "content-type": endpoint["content-type"]}
        await ws.send(json.dumps({**hello, **endpoint["headers"]}))

        async def talk() -> None:
            for i in range(0, len(audio), 640):  # 20 ms of 16 kHz PCM16, in real time
                await ws.send(audio[i : i + 640])
                await asyncio.sleep(0.02)

        talker = asyncio.get_running_loop().create_task(talk())
        try:
            async with asyncio.timeout(timeout):
                async for message in ws:
                    if isinstance(message, bytes):
                        heard += len(message)
                        continue
                    data = json.loads(message)
                    if data.get("action") == "notify":  # played: echo the mark back
                        echo = {"event": "websocket:notify", "payload": data["payload"]}
                        await ws.send(json.dumps(echo))
                    elif data.get("action") == "clear":
                        await ws.send(json.dumps({"event": "websocket:cleared"}))
        except ConnectionClosed:
            pass
        finally:
            talker.cancel()
            await asyncio.gather(talker, return_exceptions=True)
    return heard


async def test_nobody_free_the_vonage_caller_returns_to_the_same_conversation(
    tmp_path: Path,
) -> None:
    speech = read_wav(ROOT / "tests" / "data" / "speech_16k.wav").pcm
    audio = bytes(int(32000 * LISTEN_S)) + speech + bytes(32000 * 10)
    async with (
        FakeDeepgram(utterances=[_said(0.6, 2.83, "I want to talk to a real person.")]) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=15.0, first_audio_latency=0.05) as el,
        FakeVonageREST(agents={AGENT: FakeVonageAgent("never")}, timeout_scale=0.05) as vg,
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
            vonage_signature_secret=vg.signature_secret,
            vonage_application_id=vg.application_id,
            vonage_private_key=vg.private_key_pem,
            vonage_api_base_url=vg.url,
            transfer_to=AGENT,
        )
        app = create_app(BOT, settings)
        st = app.state.voxpipe

        async def calls_over() -> None:
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()

        async with running_server(app, settings) as srv:
            settings.public_url = srv.url  # Vonage needs absolute URLs
            vg.add_call(CALL, event_url=srv.url + "/transfer/vonage/events")
            query = {"from": CALLER, "to": "442079460000", "uuid": CALL}
            token = vonage_jwt(vg.signature_secret, method="GET", query=query.items())
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    srv.url + "/vonage/answer",
                    params=query,
                    headers={"Authorization": f"Bearer {token}"},
                )
            endpoint = answer.json()[0]["endpoint"][0]
            # The bot escalates, Vonage moves the caller to hold, the bot's websocket closes.
            assert await vonage_call(endpoint, audio, timeout=60) > 0
            caller = vg.calls[CALL]
            assert caller.transfers and caller.transfers[0][-1]["action"] == "conversation"
            await calls_over()
            # Nobody answered: the caller is connected to a new websocket of the same call.
            await vg.wait_for(lambda: caller.websocket is not None, 15)
            assert caller.websocket is not None
            dg.utterances = [_said(4.13, 5.74, "Then please call me back.")]
            assert await vonage_call(caller.websocket, audio, timeout=60) > 0
            await calls_over()

    assert [c.to for c in vg.dialled] == ["442079460001"]
    assert vg.dialled[0].status == "timeout" and vg.dialled[0].said == []
    # The model, on the second websocket, saw the first one's conversation.
    streamed = [r.json for r in oa.requests if r.json.get("stream")]
    first_user = [m["content"] for m in streamed[-1]["messages"] if m["role"] == "user"]
    assert "I want to talk to a real person." in first_user
    store = SqliteTranscriptStore(tmp_path / "calls.sqlite3")
    await store.start()
    try:
        row = await store.read(CALL, reader="test_support_agent_vonage_transfer")
    finally:
        await store.close()
    assert row is not None
    turns = [(t.role, t.text) for t in row.turns]
    assert ("user", "I want to talk to a real person.") in turns
    assert ("user", "Then please call me back.") in turns
    assert any(t.startswith("I'm sorry, nobody is free") for r, t in turns if r == "assistant")
    record = row.metadata["escalation"]
    assert (record["outcome"], record["callback_number"]) == ("message_taken", "+1555777")
    assert record["carrier"] == "vonage" and record["trigger"] == "request"
    assert [a["result"] for a in record["attempts"]] == ["no_answer"]
