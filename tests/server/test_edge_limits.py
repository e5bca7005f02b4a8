"""Limits at the server's edge, over real sockets: MAX_CALLS (per worker and per carrier),
audio at most 1.5x real time per stream, request bodies capped before parsing, JSON nesting."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.conftest import ECHO_BOT, make_settings, serve
from voxpipe.server.app import create_app
from voxpipe.server.limits import json_depth_exceeds, parse_carrier_limits

pytestmark = pytest.mark.slow

MEDIA = json.dumps(
    {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},  # 20 ms
    }
)


def start_msg(call_sid: str, token: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ1",
            "start": {
                "streamSid": "MZ1",
                "callSid": call_sid,
                "customParameters": {"voxpipe_token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    # Calls register from the server's own tasks: poll, with a deadline as guard.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def test_carrier_limits_parse_and_bad_specs_say_what_to_write() -> None:
    assert parse_carrier_limits("twilio:100, Telnyx:5,webrtc:0") == {
        "twilio": 100,
        "telnyx": 5,
        "webrtc": 0,
    }
    assert parse_carrier_limits(None) == {} == parse_carrier_limits(" ")
    for bad in ("twilio", "twilio:-1", "twilio:many", ":3"):
        with pytest.raises(ValueError, match="carrier:count"):
            parse_carrier_limits(bad)


def test_json_depth_scan() -> None:
    assert not json_depth_exceeds(b'{"a": [1, {"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}', 3)
    assert json_depth_exceeds(b'{"a": [1, {"b": [[]]}]}', 4)
    assert not json_depth_exceeds(b'{"a": [1, {"b": [[]]}]}', 5)
    assert json_depth_exceeds(b"[" * 33 + b"]" * 33)
    assert not json_depth_exceeds(b"[" * 32 + b"]" * 32)
    assert not json_depth_exceeds(b'{"s": "a \\" [[[[ \\\\"}', 1)


async def test_max_calls_refuses_streams_and_answers_webhooks_busy() -> None:
    settings = make_settings(max_calls=1, max_calls_per_carrier="telnyx:0")
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    st = app.state.voxpipe
    async with serve(app, settings) as srv, httpx.AsyncClient(base_url=srv.url) as client:
        # Telnyx takes no calls at all here; Twilio shares MAX_CALLS=1.
        telnyx = await client.post("/telnyx/voice", data={"CallSid": "x"})
        assert telnyx.status_code == 200 and "<Say" in telnyx.text and "<Hangup/>" in telnyx.text
        with pytest.raises(InvalidStatus) as denied:
            async with connect(f"{srv.ws_url}/telnyx/stream/sometoken"):
                pass
        assert denied.value.response.status_code == 503

        async with connect(f"{srv.ws_url}/twilio/stream") as first:
            await first.send(start_msg("CA1", st.tokens.issue("twilio", "CA1")))
            await _until(lambda: len(st.registry) == 1, 10, "the first call to start")
            # The worker is full: the next stream's upgrade is refused with 503 ...
            with pytest.raises(InvalidStatus) as denied:
                async with connect(f"{srv.ws_url}/twilio/stream"):
                    pass
            assert denied.value.response.status_code == 503
            assert "MAX_CALLS" in denied.value.response.body.decode()
            # ... and the voice webhooks answer busy instead of starting a call.
            twiml = await client.post("/twilio/voice", data={"CallSid": "CA2", "From": "+1"})
            assert twiml.status_code == 200
            assert (
                "busy" in twiml.text and "<Hangup/>" in twiml.text and "<Stream" not in twiml.text
            )
            vonage = await client.post("/vonage/answer", json={"uuid": "u"})
            assert vonage.status_code == 503 and vonage.headers["retry-after"]
            assert len(st.registry) == 1
        await _until(lambda: st.call_limiter.total == 0, 10, "the first call to end")
        twiml = await client.post("/twilio/voice", data={"CallSid": "CA3", "From": "+1"})
        assert "<Connect><Stream" in twiml.text
    assert st.metrics.calls_refused["twilio", "busy"] == 2
    assert st.metrics.calls_refused["telnyx", "busy"] == 2
    assert st.metrics.calls_refused["vonage", "busy"] == 1
    assert st.metrics.calls_started["twilio"] == 1


async def test_audio_faster_than_one_and_a_half_real_time_is_closed_1008(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    st = app.state.voxpipe
    async with serve(app, settings) as srv:
        async with connect(f"{srv.ws_url}/twilio/stream") as ws:
            await ws.send(start_msg("CAfast", st.tokens.issue("twilio", "CAfast")))
            # One minute of audio as fast as the socket takes it (far under the message-flood
            # limit of 6000 messages at once); a machine would need 36 s to send it in time.
            try:
                for _ in range(3000):
                    await ws.send(MEDIA)
            except ConnectionClosed:
                pass
            async with asyncio.timeout(10):
                await ws.wait_closed()
    assert ws.close_code == 1008
    assert ws.close_reason.startswith("audio faster than 1.5x real time"), ws.close_reason
    assert st.metrics.calls_ended["twilio", "refused"] == 1
    events = [r for r in caplog.records if getattr(r, "event", None) == "audio_rate_exceeded"]
    assert len(events) == 1
    (event,) = events
    assert event.name == "voxpipe.security" and event.levelno == logging.WARNING
    assert event.client == "127.0.0.1" and "127.0.0.1" in event.getMessage()


async def _forty_megabytes() -> AsyncIterator[bytes]:
    chunk = b"{" + b" " * (1024 * 1024 - 1)
    for _ in range(40):
        yield chunk


async def test_big_bodies_get_413_and_deep_json_a_4xx_never_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    deep_array = b"[" * 5000 + b"]" * 5000
    deep_object = b'{"a":' * 3000 + b"1" + b"}" * 3000
    async with serve(app, settings) as srv, httpx.AsyncClient(base_url=srv.url) as client:
        # 40 MB with a Content-Length: refused from the header, before reading the body.
        with_length = await client.post(
            "/vonage/answer",
            content=b" " * (40 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
        assert with_length.status_code == 413, with_length.text
        assert "exceeds" in with_length.json()["error"]
        # 40 MB chunked (no length): refused once the cap is passed.
        chunked = await client.post("/vonage/answer", content=_forty_megabytes())
        assert chunked.status_code == 413
        for path in ("/vonage/answer", "/webrtc/offer", "/twilio/voice", "/telnyx/voice"):
            for body in (deep_array, deep_object):
                resp = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert resp.status_code == 400, (path, resp.status_code, resp.text[:200])
                assert "nested deeper" in resp.json()["error"]
        # A normal answer webhook still works.
        ok = await client.post("/vonage/answer", json={"uuid": "u1", "from": "447700900000"})
        assert ok.status_code == 200 and ok.json()[0]["action"] == "connect"
        assert (await client.get("/healthz")).status_code == 200
    events = {getattr(r, "event", None) for r in caplog.records if r.name == "voxpipe.security"}
    assert {"body_too_large", "json_too_deep"} <= events
