"""WebRTC offers start nothing until the browser connects, expire when it never does, and count
against MAX_CALLS while they wait (real uvicorn socket, real aiortc peers on loopback)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("aiortc", reason="the WebRTC tests need the 'webrtc' extra")

import aioice.ice  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection  # noqa: E402

from tests.server.conftest import make_settings, serve  # noqa: E402
from voxpipe.server.app import create_app  # noqa: E402

pytestmark = pytest.mark.slow


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


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def _abandoned_offer() -> dict[str, str]:
    """A real browser offer (microphone track, events channel) from a peer that then goes away."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(support.wav_microphone(support.SPEECH_WAV, seconds=0.5))
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    await pc.close()
    return offer


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    # The offer's expiry has no awaitable outside the server: poll, with a deadline as guard.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_unconnected_offers_expire_start_no_pipeline_and_hold_a_call_slot(
    loopback_ice: None,
) -> None:
    stats = support.ProbeStats()
    settings = make_settings(webrtc_offer_timeout_s=0.6, max_calls_per_carrier="webrtc:3")
    app = create_app(support.probe_echo_bot(stats), settings, batched_vad=None)
    st = app.state.voxpipe
    async with serve(app, settings) as srv, httpx.AsyncClient(base_url=srv.url) as client:
        answers = []
        for _ in range(3):
            resp = await client.post("/webrtc/offer", json=await _abandoned_offer())
            assert resp.status_code == 200, resp.text
            answers.append(resp.json()["call_id"])
        # Three offers are waiting for browsers: the bot was not asked for a pipeline.
        assert stats.calls == [] and len(st.registry) == 0
        assert st.call_limiter.active["webrtc"] == 3
        # ... and they hold their places: a fourth is refused while they wait.
        busy = await client.post("/webrtc/offer", json=await _abandoned_offer())
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        assert busy.headers["retry-after"]

        await _until(lambda: st.call_limiter.total == 0, 10, "the offers to expire")
        assert st.metrics.calls_refused["webrtc", "not-connected"] == 3
        assert st.metrics.calls_refused["webrtc", "busy"] == 1
        # Expired offers freed their places: the next offer is taken.
        again = await client.post("/webrtc/offer", json=await _abandoned_offer())
        assert again.status_code == 200
        await _until(lambda: st.call_limiter.total == 0, 10, "the last offer to expire")
    # No bot, no call, no provider socket, nothing recorded, for any of them.
    assert stats.calls == []
    assert st.metrics.calls_started["webrtc"] == 0
    assert st.metrics.calls_refused["webrtc", "not-connected"] == 4
    assert len(set(answers)) == 3
