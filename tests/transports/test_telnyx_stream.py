"""A Telnyx media stream end to end: TeXML webhook, tokened websocket, echo back in Telnyx's format."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.testing.carrier_signing import TelnyxSigner
from voxpipe.testing.twilio_caller import parse_twiml_stream, read_caller_wav

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def test_telnyx_call_is_echoed_and_a_bad_token_refused() -> None:
    signer = TelnyxSigner()
    settings = VoxpipeSettings(_env_file=None, telnyx_public_key=signer.public_key_b64)  # type: ignore[call-arg]
    app = create_app(ROOT / "bots" / "echo.py", settings)
    caller = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")[: 3 * 8000]
    sent = caller + b"\xff" * 8000 * 3
    async with running_server(app, settings) as srv:
        async with httpx.AsyncClient() as c:
            body = b"CallSid=v3%3Aabc&From=%2B15550001&To=%2B15550002"
            texml = await c.post(
                f"{srv.url}/telnyx/voice",
                content=body,
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    **signer.headers(body),
                },
            )
        url, _ = parse_twiml_stream(texml.text)
        async with connect(url.rsplit("/", 1)[0] + "/forged.token.here") as ws:
            await ws.send(json.dumps(_start()))
            async with asyncio.timeout(10):
                await ws.wait_closed()
            assert ws.close_code == 1008 and ws.close_reason.startswith("stream refused")

        received = bytearray()
        marks: list[str] = []
        async with connect(url) as ws:
            await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
            await ws.send(json.dumps(_start()))

            async def talk() -> None:
                for i in range(0, len(sent), 160):
                    media = {
                        "event": "media",
                        "sequence_number": str(i // 160 + 2),
                        "media": {
                            "track": "inbound",
                            "chunk": str(i // 160 + 1),
                            "timestamp": str(i // 8),
                            "payload": base64.b64encode(sent[i : i + 160]).decode(),
                        },
                        "stream_id": "st-1",
                    }
                    await ws.send(json.dumps(media))
                    if i >= len(caller):
                        await asyncio.sleep(0.02)  # the line's silence comes in real time

            talker = asyncio.get_running_loop().create_task(talk())
            async with asyncio.timeout(20):
                async for message in ws:
                    data = json.loads(message)
                    assert set(data) <= {"event", "media", "mark"}  # Telnyx's outbound shapes
                    if data["event"] == "media":
                        received += base64.b64decode(data["media"]["payload"])
                    elif data["event"] == "mark":
                        marks.append(data["mark"]["name"])
                        # Telnyx echoes the mark once played: the reply is over.
                        await ws.send(
                            json.dumps({"event": "mark", "stream_id": "st-1", "mark": data["mark"]})
                        )
                        break
            talker.cancel()
            await ws.send(json.dumps({"event": "stop", "stream_id": "st-1"}))
    assert len(received) >= 2 * 8000
    assert sent.find(bytes(received)) >= 0, "the echo is the caller's own audio"
    assert marks
    assert app.state.voxpipe.metrics.calls_started["telnyx"] == 1


def _start() -> dict[str, object]:
    return {
        "event": "start",
        "sequence_number": "1",
        "start": {
            "call_control_id": "v3:abc",
            "call_session_id": "sess",
            "from": "+15550001",
            "to": "+15550002",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
        "stream_id": "st-1",
    }
