"""/metrics carries per-stage latencies from MetricsFrames; a peer that stops answering pings is dropped."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.server.conftest import make_settings, serve
from voxpipe.call import Call
from voxpipe.frames import Frame, FrameDirection, InputAudioFrame, MetricsFrame
from voxpipe.pipelines import Pipeline
from voxpipe.processors.base import FrameProcessor
from voxpipe.server.app import create_app
from voxpipe.server.metrics import FrameCounter, ServerMetrics

START = {
    "event": "start",
    "streamSid": "MZ1",
    "start": {
        "streamSid": "MZ1",
        "callSid": "",
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}
MEDIA = json.dumps(
    {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
    }
)


def start_for(sid: str, token: str) -> str:
    msg = json.loads(json.dumps(START))
    msg["start"]["callSid"] = sid
    msg["start"]["customParameters"]["voxpipe_token"] = token
    return json.dumps(msg)


def test_metrics_frames_feed_the_stage_histogram() -> None:
    metrics = ServerMetrics(active_calls=lambda: 3)
    counter = FrameCounter(metrics)
    counter.on_output(MetricsFrame("DeepgramSTT#12", "ttfb", 0.23))
    counter.on_output(MetricsFrame("DeepgramSTT#40", "ttfb", 0.31))
    counter.on_output(MetricsFrame("OpenAILLM#3", "processing", 1.2))
    counter.on_input(
        InputAudioFrame(audio=b"\xff" * 160, sample_rate=8000), FrameDirection.DOWNSTREAM
    )
    text = metrics.render().decode()
    # One label value per processor class, not per instance.
    assert 'voxpipe_stage_latency_seconds_count{metric="ttfb",stage="DeepgramSTT"} 2.0' in text
    assert (
        'voxpipe_stage_latency_seconds_bucket{le="0.3",metric="ttfb",stage="DeepgramSTT"} 1.0'
        in text
    )
    assert 'voxpipe_stage_latency_seconds_sum{metric="processing",stage="OpenAILLM"} 1.2' in text
    assert "voxpipe_active_calls 3.0" in text
    assert 'voxpipe_frames_processed_total{way="in"} 1.0' in text
    assert 'voxpipe_frames_processed_total{way="out"} 3.0' in text


class ReportsTTFB(FrameProcessor):
    """Reports one made-up time to first byte when the caller's audio first arrives."""

    def __init__(self) -> None:
        super().__init__(name="FakeSTT#7")
        self._done = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioFrame) and not self._done:
            self._done = True
            await self.push_frame(MetricsFrame(self.name, "ttfb", 0.042))


@pytest.mark.slow
async def test_metrics_endpoint_shows_a_calls_stage_latency() -> None:
    async def bot(call: Call) -> Pipeline:
        return Pipeline([call.transport.input(), ReportsTTFB(), call.transport.output()])

    s = make_settings()
    app = create_app(bot, s)
    state = app.state.voxpipe
    async with serve(app, s) as srv:
        async with connect(f"{srv.ws_url}/twilio/stream") as ws:
            await ws.send(start_for("CAm", state.tokens.issue("twilio", "CAm")))
            await ws.send(MEDIA)
            async with httpx.AsyncClient() as c:
                async with asyncio.timeout(10):
                    while "FakeSTT" not in (text := (await c.get(f"{srv.url}/metrics")).text):
                        await asyncio.sleep(0.02)  # the frame is on its way through the call
        assert 'voxpipe_stage_latency_seconds_count{metric="ttfb",stage="FakeSTT"} 1.0' in text
        assert "voxpipe_active_calls 1.0" in text


@pytest.mark.slow
async def test_a_peer_that_stops_answering_pings_is_dropped() -> None:
    s = make_settings(ws_ping_interval_s=0.2, ws_ping_timeout_s=0.3)
    app = create_app(__import__("tests.server.conftest", fromlist=["ECHO_BOT"]).ECHO_BOT, s)
    state = app.state.voxpipe
    async with serve(app, s) as srv:
        async with connect(f"{srv.ws_url}/twilio/stream", ping_interval=None) as ws:
            await ws.send(start_for("CAping", state.tokens.issue("twilio", "CAping")))
            await ws.send(MEDIA)
            async with asyncio.timeout(10):
                while not len(state.registry):
                    await asyncio.sleep(0.01)
            session = state.registry.sessions[0]
            # The peer freezes: it neither reads nor answers pings (and sends nothing).
            ws.transport.pause_reading()
            async with asyncio.timeout(10):
                await session.ended.wait()
            ended: dict[Any, int] = dict(state.metrics.calls_ended)
            ws.transport.abort()  # a frozen peer would never finish a closing handshake
    assert len(state.registry) == 0
    # uvicorn's ping timeout dropped the connection: to the call, the caller is gone.
    assert ended == {("twilio", "caller-hung-up"): 1}
