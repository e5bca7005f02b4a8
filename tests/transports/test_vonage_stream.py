"""A Vonage websocket call end to end: NCCO answer, 16 kHz PCM16 binary frames, echo back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from voxpipe.audio import read_wav
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.testing.carrier_signing import vonage_jwt

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def test_vonage_call_is_echoed_in_whole_20ms_frames() -> None:
    secret = "vonage-signature-secret-of-32-chars"
    settings = VoxpipeSettings(_env_file=None, vonage_signature_secret=secret)  # type: ignore[call-arg]
    app = create_app(ROOT / "bots" / "echo.py", settings)
    pcm = read_wav(ROOT / "tests" / "data" / "speech_16k.wav").pcm[: 3 * 32000]
    sent = pcm + bytes(32000 * 3)
    async with running_server(app, settings) as srv:
        async with httpx.AsyncClient() as c:
            query = {"from": "447700900001", "to": "447700900002", "uuid": "u-1"}
            token = vonage_jwt(secret, method="GET", query=query.items())
            ncco = (
                await c.get(
                    f"{srv.url}/vonage/answer",
                    params=query,
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()
        endpoint = ncco[0]["endpoint"][0]
        received = bytearray()
        sizes: set[int] = set()
        async with connect(endpoint["uri"]) as ws:
            await ws.send(
                json.dumps(
                    {
                        "event": "websocket:connected",
                        "content-type": endpoint["content-type"],
                        **endpoint["headers"],
                    }
                )
            )

            async def talk() -> None:
                for i in range(0, len(sent), 640):
                    await ws.send(sent[i : i + 640])
                    if i >= len(pcm):
                        await asyncio.sleep(0.02)

            talker = asyncio.get_running_loop().create_task(talk())
            async with asyncio.timeout(20):
                async for message in ws:
                    if isinstance(message, bytes):
                        received += message
                        sizes.add(len(message))
                        continue
                    data = json.loads(message)
                    assert data["action"] == "notify", data
                    await ws.send(
                        json.dumps({"event": "websocket:notify", "payload": data["payload"]})
                    )
                    break
            talker.cancel()
    assert sizes == {640}, "Vonage plays whole 20 ms frames only"
    assert len(received) >= 2 * 32000
    assert sent.find(bytes(received)) >= 0, "the echo is the caller's own audio"
    state = app.state.voxpipe
    async with asyncio.timeout(10):
        while len(state.registry):
            await state.registry.sessions[0].ended.wait()
    assert state.metrics.calls_started["vonage"] == 1
    assert state.metrics.calls_ended["vonage", "caller-hung-up"] == 1
