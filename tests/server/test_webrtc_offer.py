"""POST /webrtc/offer with a real aiortc peer as the browser: audio both ways through the echo bot.

ICE stays on 127.0.0.1: aioice never offers the loopback address on its own (it would pick
the machine's network address), so the host addresses it gathers are pinned to 127.0.0.1
for both peers (see PROTOCOLS.md, SDK facts).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the WebRTC tests need the 'webrtc' extra")

import aioice.ice  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from voxpipe.config.settings import VoxpipeSettings  # noqa: E402
from voxpipe.server.app import create_app  # noqa: E402


def _load_support() -> Any:
    name = "voxpipe_tests_webrtc_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("webrtc_support.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support = _load_support()

# Bot audio counts as voiced above this RMS (full scale 1.0); the line's silence is digital zero.
VOICED_RMS = 0.01


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def server() -> AsyncIterator[tuple[Any, httpx.AsyncClient, Any]]:
    stats = support.ProbeStats()
    app = support.include_webrtc(
        create_app(support.probe_echo_bot(stats), VoxpipeSettings(), batched_vad=None)
    )
    transport = httpx.ASGITransport(app=app)
    # The app's lifespan, as a server runs it: its shutdown ends the calls and closes the
    # stores the requests opened.
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://voxpipe.test") as client:
            yield app, client, stats


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (the event it stands for has no awaitable) with a timeout as guard."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


class Browser:
    """An aiortc peer acting as the page: a WAV microphone, the events channel, bot audio levels."""

    def __init__(self, mic: Any) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = mic
        self.pc.addTrack(mic)
        self.events: list[dict[str, Any]] = []
        self.channel = self.pc.createDataChannel("events")
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))
        self.frames = 0
        self.voiced_seconds = 0.0
        self.peak_rms = 0.0
        self.rates: set[int] = set()
        self._reader: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        from voxpipe.transports.webrtc import audio_frame_to_mono_pcm16

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            self.rates.add(frame.sample_rate)
            level = support.rms(audio_frame_to_mono_pcm16(frame))
            self.peak_rms = max(self.peak_rms, level)
            if level > VOICED_RMS:
                self.voiced_seconds += frame.samples / frame.sample_rate

    def event_types(self) -> list[str]:
        return [e.get("type", "") for e in self.events]

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()


async def test_browser_call_echoes_speech_both_ways(loopback_ice: None, server: Any) -> None:
    app, client, stats = server
    st = app.state.voxpipe
    # "The number is four five six." (1.6 s) with a little silence around it.
    browser = Browser(support.wav_microphone(support.SPEECH_WAV, start_s=3.9, seconds=2.2))
    try:
        resp = await client.post("/webrtc/offer", json=await browser.offer())
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["type"] == "answer" and answer["call_id"].startswith("webrtc-")
        # Only loopback candidates: nothing leaves the machine.
        candidates = [ln for ln in answer["sdp"].splitlines() if ln.startswith("a=candidate")]
        assert candidates and all(" 127.0.0.1 " in c for c in candidates), candidates
        await browser.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )
        # The echo bot plays the utterance back once the VAD has heard it end.
        await wait_for(lambda: browser.voiced_seconds >= 0.6, 20, "the bot's echo at the browser")

        # Server side: the caller's speech arrived, decoded and resampled, and the VAD heard it.
        assert len(stats.calls) == 1 and stats.calls[0].carrier == "webrtc"
        call = stats.calls[0]
        assert call.audio_in.sample_rate == 16000 and call.audio_in.encoding == "pcm16"
        assert stats.input_peak_rms > 0.05, stats.summary()
        assert stats.count("user-started-speaking") >= 1, stats.summary()
        assert stats.count("user-stopped-speaking") >= 1, stats.summary()
        assert stats.count("bot-started-speaking") >= 1, stats.summary()
        # The echo starts only after the caller stopped: the bot's audio is not a loopback.
        assert stats.events.index("user-stopped-speaking") < stats.events.index(
            "bot-started-speaking"
        )
        # The page was told, over the data channel, in the same order.
        types = browser.event_types()
        for name in ("user-started-speaking", "user-stopped-speaking", "bot-started-speaking"):
            assert name in types, types
        assert types.index("user-stopped-speaking") < types.index("bot-started-speaking")
        assert browser.peak_rms > 0.05
        assert len(st.registry) == 1
        session = st.registry.sessions[0]
        assert session.call_id == answer["call_id"] and session.carrier == "webrtc"

        # Hang up: the server notices and ends the call cleanly.
        await browser.close()
        await asyncio.wait_for(stats.ended.wait(), 10)
        await asyncio.wait_for(session.ended.wait(), 10)  # left the registry, cleaned up
        assert len(st.registry) == 0
        assert st.metrics.calls_started["webrtc"] == 1
        assert st.metrics.calls_ended["webrtc", "caller-hung-up"] == 1
    finally:
        await browser.close()


async def test_bot_can_end_the_call_and_the_page_is_told(loopback_ice: None, server: Any) -> None:
    app, client, stats = server
    st = app.state.voxpipe
    browser = Browser(support.wav_microphone(support.SPEECH_WAV, start_s=0.0, seconds=0.2))
    try:
        resp = await client.post("/webrtc/offer", json=await browser.offer())
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        await browser.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )
        await wait_for(lambda: browser.channel.readyState == "open", 10, "the events channel")
        session = st.registry.sessions[0]
        # The echo bot hangs up on '#': a keypad press sent by the page over the channel.
        browser.channel.send(json.dumps({"type": "dtmf", "digit": "#"}))
        await asyncio.wait_for(stats.ended.wait(), 10)
        await wait_for(lambda: "call-ended" in browser.event_types(), 10, "the call-ended event")
        await wait_for(lambda: browser.pc.connectionState == "closed", 10, "the server to close")
        await asyncio.wait_for(session.ended.wait(), 10)
        assert len(st.registry) == 0
        assert st.metrics.calls_ended["webrtc", "bot-ended"] == 1
    finally:
        await browser.close()


async def test_page_and_script_are_served(server: Any) -> None:
    _, client, _ = server
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text
    script = await client.get("/static/app.js")
    assert script.status_code == 200 and "webrtc/offer" in script.text
    assert (await client.get("/static/index.html")).status_code == 404
    assert (await client.get("/static/..%2Fwebrtc.py")).status_code == 404
    config = await client.get("/webrtc/config")
    assert config.json() == {"iceServers": []}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "must be JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"sdp": "v=0\r\n", "type": "answer"}).encode(), 400, "expected"),
        (json.dumps({"sdp": 5, "type": "offer"}).encode(), 400, "expected"),
        (
            json.dumps({"sdp": "v=0\r\n", "type": "offer", "parameters": [1]}).encode(),
            400,
            "parameters",
        ),
        (json.dumps({"sdp": "v=0\r\nbroken", "type": "offer"}).encode(), 400, "cannot answer"),
        (b"{" + b" " * 70_000 + b"}", 413, "exceeds"),
    ],
)
async def test_bad_offers_are_refused_with_a_reason(
    server: Any, body: bytes, status: int, says: str
) -> None:
    app, client, stats = server
    resp = await client.post(
        "/webrtc/offer", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    assert says in resp.json()["error"]
    assert stats.calls == [] and len(app.state.voxpipe.registry) == 0


async def test_offer_without_audio_is_refused(loopback_ice: None, server: Any) -> None:
    app, client, stats = server
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("events")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        resp = await client.post(
            "/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}
        )
    finally:
        await pc.close()
    assert resp.status_code == 400
    assert "no audio" in resp.json()["error"]
    assert stats.calls == []
    assert app.state.voxpipe.metrics.calls_refused["webrtc", "bad-offer"] == 1


def test_voiced_threshold_sits_above_digital_silence() -> None:
    # The line's idle frames are zeros; Opus brings them back as (near) zeros.
    assert support.rms(np.zeros(320, dtype="<i2").tobytes()) < VOICED_RMS
