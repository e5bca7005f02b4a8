"""The support agent's warm transfer on a Telnyx or a Vonage call, end to end over real sockets:
the caller (the carrier's media stream, which this test plays) asks for a person, the bot
escalates and the carrier moves the caller to hold (Telnyx: Call Control stops the stream and
plays hold audio; Vonage: a held conversation, the bot's websocket closed); nobody answers, the
carrier opens a new stream of the same call, and the bot carries on the same conversation and
takes a callback number. Deepgram, OpenAI, ElevenLabs and the carrier's REST API are the fakes;
each carrier is an adapter below."""

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

from voxpipe.audio import read_wav
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing.carrier_signing import vonage_jwt
from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeReply, FakeToolCall
from voxpipe.testing.fakes.deepgram import DeepgramUtterance
from voxpipe.testing.fakes.telnyx_rest import FakeTelnyxAgent, FakeTelnyxREST
from voxpipe.testing.fakes.vonage_rest import FakeVonageAgent, FakeVonageREST
from voxpipe.testing.twilio_caller import parse_twiml_stream, read_caller_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bots" / "support_agent.py"
SPEECH = ROOT / "tests" / "data" / "speech_16k.wav"
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


async def telnyx_stream(
    url: str, call: str, client_state: str | None, audio: bytes, stopped: Callable[[], bool]
) -> int:
    """Be Telnyx's media side of one stream until the server closes it, or until Call
    Control stops it (``stopped()``: then a ``stop`` is sent); bytes heard."""
    heard = 0
    start: dict[str, Any] = {
        "call_control_id": call,
        "call_session_id": "session-1",
        "from": "+447700900456",
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


class Telnyx:
    """A Telnyx call: TeXML answers the voice webhook, Call Control moves the caller."""

    name = "telnyx"
    call = "v3:telnyx-caller-leg"
    dialled_as = AGENT  # how the fake records the number the app dialled

    def audio(self) -> bytes:
        speech = read_caller_wav(SPEECH)
        return b"\xff" * int(8000 * LISTEN_S) + speech + b"\xff" * 8000 * 10

    def fake(self) -> FakeTelnyxREST:
        return FakeTelnyxREST(agents={AGENT: FakeTelnyxAgent("never")}, timeout_scale=0.05)

    def settings(self, tx: FakeTelnyxREST) -> dict[str, Any]:
        return {
            "telnyx_public_key": tx.public_key,
            "telnyx_api_key": tx.api_key,
            "telnyx_connection_id": "conn-1",
            "telnyx_api_base_url": tx.url,
        }

    async def answer(self, tx: FakeTelnyxREST, url: str) -> tuple[str, str | None]:
        """The caller's call arrives: its first stream's URL (and no client_state)."""
        tx.add_call(self.call, webhook_url=url + "/transfer/telnyx/events")
        form = f"CallSid={self.call}&From=%2B447700900456&To=%2B442079460000".encode()
        async with httpx.AsyncClient() as client:
            texml = await client.post(
                url + "/telnyx/voice",
                content=form,
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    **tx.signer.headers(form),
                },
            )
        stream_url, _ = parse_twiml_stream(texml.text)
        return stream_url, None

    async def stream(
        self, tx: FakeTelnyxREST, endpoint: tuple[str, str | None], audio: bytes
    ) -> int:
        caller = tx.calls[self.call]
        stops = caller.commands().count("streaming_stop")

        def stream_stopped() -> bool:  # Call Control stopped this stream
            return caller.commands().count("streaming_stop") > stops

        return await telnyx_stream(endpoint[0], self.call, endpoint[1], audio, stream_stopped)

    async def check_on_hold(self, tx: FakeTelnyxREST) -> None:
        caller = tx.calls[self.call]
        await tx.wait_for(lambda: caller.commands()[:2] == ["streaming_stop", "playback_start"])

    async def resumed(self, tx: FakeTelnyxREST) -> tuple[str, str | None]:
        # Nobody answered: Call Control starts a new stream of the same call.
        caller = tx.calls[self.call]
        await tx.wait_for(lambda: "streaming_start" in caller.commands(), 15)
        resume = caller.actions[-1][1]
        return resume["stream_url"], resume["client_state"]

    def timed_out(self, agent: Any) -> bool:
        return bool(agent.hangup_cause == "timeout")


class Vonage:
    """A Vonage call: the answer webhook's NCCO connects a websocket; the caller is moved by
    the Voice API."""

    name = "vonage"
    call = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    dialled_as = "442079460001"

    def audio(self) -> bytes:
        speech = read_wav(SPEECH).pcm
        return bytes(int(32000 * LISTEN_S)) + speech + bytes(32000 * 10)

    def fake(self) -> FakeVonageREST:
        return FakeVonageREST(agents={AGENT: FakeVonageAgent("never")}, timeout_scale=0.05)

    def settings(self, vg: FakeVonageREST) -> dict[str, Any]:
        return {
            "vonage_signature_secret": vg.signature_secret,
            "vonage_application_id": vg.application_id,
            "vonage_private_key": vg.private_key_pem,
            "vonage_api_base_url": vg.url,
        }

    async def answer(self, vg: FakeVonageREST, url: str) -> dict[str, Any]:
        """The caller's call arrives: its first websocket's endpoint."""
        vg.add_call(self.call, event_url=url + "/transfer/vonage/events")
        query = {"from": "447700900456", "to": "442079460000", "uuid": self.call}
        token = vonage_jwt(vg.signature_secret, method="GET", query=query.items())
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                url + "/vonage/answer", params=query, headers={"Authorization": f"Bearer {token}"}
            )
        endpoint: dict[str, Any] = answer.json()[0]["endpoint"][0]
        return endpoint

    async def stream(self, vg: FakeVonageREST, endpoint: dict[str, Any], audio: bytes) -> int:
        return await vonage_call(endpoint, audio, timeout=60)

    async def check_on_hold(self, vg: FakeVonageREST) -> None:
        # The bot escalated, Vonage moved the caller to hold, the bot's websocket closed.
        caller = vg.calls[self.call]
        assert caller.transfers and caller.transfers[0][-1]["action"] == "conversation"

    async def resumed(self, vg: FakeVonageREST) -> dict[str, Any]:
        # Nobody answered: the caller is connected to a new websocket of the same call.
        caller = vg.calls[self.call]
        await vg.wait_for(lambda: caller.websocket is not None, 15)
        assert caller.websocket is not None
        return caller.websocket

    def timed_out(self, agent: Any) -> bool:
        return bool(agent.status == "timeout")


@pytest.mark.parametrize("carrier", [Telnyx(), Vonage()], ids=lambda c: c.name)
async def test_nobody_free_the_caller_returns_to_the_same_conversation(
    carrier: Telnyx | Vonage, tmp_path: Path
) -> None:
    audio = carrier.audio()
    async with (
        FakeDeepgram(utterances=[_said(0.6, 2.83, "I want to talk to a real person.")]) as dg,
        FakeOpenAI(replies=replies, first_token_delay=0.05) as oa,
        FakeElevenLabs(ms_per_char=15.0, first_audio_latency=0.05) as el,
        carrier.fake() as fake,
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
            transfer_to=AGENT,
            **carrier.settings(fake),
        )
        app = create_app(BOT, settings)
        st = app.state.voxpipe

        async def calls_over() -> None:
            async with asyncio.timeout(15):
                while len(st.registry):
                    await st.registry.sessions[0].ended.wait()

        async with running_server(app, settings) as srv:
            settings.public_url = srv.url  # the carrier needs absolute URLs
            endpoint: Any = await carrier.answer(fake, srv.url)
            assert await carrier.stream(fake, endpoint, audio) > 0
            await carrier.check_on_hold(fake)
            await calls_over()
            endpoint = await carrier.resumed(fake)
            dg.utterances = [_said(4.13, 5.74, "Then please call me back.")]
            assert await carrier.stream(fake, endpoint, audio) > 0
            await calls_over()

    assert [c.to for c in fake.dialled] == [carrier.dialled_as]
    assert carrier.timed_out(fake.dialled[0]) and fake.dialled[0].said == []
    # The model, on the second stream, saw the first one's conversation.
    streamed = [r.json for r in oa.requests if r.json.get("stream")]
    first_user = [m["content"] for m in streamed[-1]["messages"] if m["role"] == "user"]
    assert "I want to talk to a real person." in first_user
    store = SqliteTranscriptStore(tmp_path / "calls.sqlite3")
    await store.start()
    try:
        row = await store.read(carrier.call, reader=f"test_support_agent_{carrier.name}_transfer")
    finally:
        await store.close()
    assert row is not None
    turns = [(t.role, t.text) for t in row.turns]
    assert ("user", "I want to talk to a real person.") in turns
    assert ("user", "Then please call me back.") in turns
    assert any(t.startswith("I'm sorry, nobody is free") for r, t in turns if r == "assistant")
    record = row.metadata["escalation"]
    assert (record["outcome"], record["callback_number"]) == ("message_taken", "+1555777")
    assert record["carrier"] == carrier.name and record["trigger"] == "request"
    assert [a["result"] for a in record["attempts"]] == ["no_answer"]
