"""Bad input on the media websocket: skipped or refused with a reason, never fatal to others."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.server.conftest import ECHO_BOT, make_settings, serve
from voxpipe.call import Call
from voxpipe.frames import EndFrame, Frame, FrameDirection, InputAudioFrame
from voxpipe.pipelines import Pipeline
from voxpipe.processors.base import FrameProcessor
from voxpipe.server.app import create_app
from voxpipe.testing.twilio_caller import CallerLog, TwilioCaller
from voxpipe.transports.websocket import WireLimits

pytestmark = pytest.mark.slow

MEDIA = json.dumps(
    {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
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


class Seen(FrameProcessor):
    """Remembers what reached it: caller audio and how the call ended."""

    def __init__(self, log: dict[str, Any]) -> None:
        super().__init__()
        self.log = log

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioFrame):
            self.log["audio_frames"] = self.log.get("audio_frames", 0) + 1
        if isinstance(frame, EndFrame):
            self.log["ended"] = frame.reason or "end"
        await self.push_frame(frame, direction)

    async def on_cancel(self, frame: Any) -> None:
        self.log["cancelled"] = True


async def test_flood_is_refused_and_the_call_ends_gracefully() -> None:
    seen: dict[str, Any] = {}

    async def bot(call: Call) -> Pipeline:
        return Pipeline([call.transport.input(), Seen(seen), call.transport.output()])

    s = make_settings()
    # The message-count limit alone (the audio-seconds limit is tested in test_edge_limits).
    limits = WireLimits(rate_per_s=100, burst_messages=300, audio_burst_s=1e9)
    app = create_app(bot, s, limits=limits)
    state = app.state.voxpipe
    async with serve(app, s) as srv:
        async with connect(f"{srv.ws_url}/twilio/stream") as ws:
            await ws.send(start_msg("CAflood", state.tokens.issue("twilio", "CAflood")))
            try:
                for _ in range(2000):
                    await ws.send(MEDIA)
            except ConnectionClosed:
                pass
            async with asyncio.timeout(10):
                await ws.wait_closed()
    assert ws.close_code == 1008
    assert ws.close_reason.startswith("message flood")
    # What the caller said before the flood went through, and the call ended (not cancelled):
    # transcripts and state are written at a graceful end.
    assert seen.get("audio_frames", 0) >= 250
    assert "ended" in seen and not seen.get("cancelled")
    assert state.metrics.calls_ended["twilio", "refused"] == 1


async def test_a_stream_that_never_starts_is_refused() -> None:
    s = make_settings()
    app = create_app(ECHO_BOT, s, limits=WireLimits(start_timeout_s=0.2))
    async with serve(app, s) as srv:
        async with connect(f"{srv.ws_url}/twilio/stream") as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send(MEDIA)  # out of order: skipped
            async with asyncio.timeout(10):
                await ws.wait_closed()
    assert ws.close_code == 1008
    assert ws.close_reason == "no start message within 0.2 s"
    assert app.state.voxpipe.metrics.wire_errors["twilio"] == 1


async def test_too_many_malformed_messages_close_the_stream() -> None:
    s = make_settings()
    app = create_app(ECHO_BOT, s, limits=WireLimits(max_bad_messages=10))
    state = app.state.voxpipe
    async with serve(app, s) as srv:
        async with connect(f"{srv.ws_url}/twilio/stream", max_size=2**20) as ws:
            await ws.send(start_msg("CAbad", state.tokens.issue("twilio", "CAbad")))
            for i in range(10):  # tolerated: logged and skipped
                await ws.send("{not json" if i % 2 else b"\x00\x01binary")
            await ws.send(MEDIA)
            await ws.send(json.dumps({"event": "mark"}))
            async with asyncio.timeout(10):
                await ws.wait_closed()
    assert ws.close_code == 1008
    assert "too many malformed" in ws.close_reason
    assert state.metrics.wire_errors["twilio"] == 11


# ------------------------------------------------------------------------ fuzz

_good_payload = st.binary(min_size=1, max_size=320).map(lambda b: base64.b64encode(b).decode())
_payload = st.one_of(_good_payload, st.text(max_size=40), st.integers(), st.none())
_events = st.sampled_from(["media", "start", "connected", "mark", "dtmf", "stop", "clear", "x", ""])
_structured = st.fixed_dictionaries(
    {"event": _events},
    optional={
        "media": st.fixed_dictionaries(
            {}, optional={"payload": _payload, "track": st.text(max_size=9)}
        ),
        "mark": st.fixed_dictionaries(
            {}, optional={"name": st.one_of(st.text(max_size=10), st.integers())}
        ),
        "dtmf": st.fixed_dictionaries({}, optional={"digit": st.text(max_size=3)}),
        "start": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
        "streamSid": st.text(max_size=10),
    },
).map(json.dumps)
_message = st.one_of(
    _structured,
    st.text(max_size=120),
    st.binary(max_size=400),
    st.integers(min_value=65 * 1024, max_value=200 * 1024).map(lambda n: "x" * n),  # oversized
    st.just(MEDIA),
)


async def _one_stream(
    srv: Any, state: Any, sid: str, with_start: bool, messages: list[str | bytes], hang_up: bool
) -> None:
    async with connect(f"{srv.ws_url}/twilio/stream", max_size=2**20) as ws:
        try:
            if with_start:
                await ws.send(start_msg(sid, state.tokens.issue("twilio", sid)))
            for m in messages:
                await ws.send(m)
            await ws.send(MEDIA)
            if hang_up:
                await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
        except ConnectionClosed:
            pass
        if hang_up:
            async with asyncio.timeout(10):
                await ws.wait_closed()
            # Refusals say why; nothing is an internal error.
            assert ws.close_code in (1000, 1008, 1009), (ws.close_code, ws.close_reason)
            if ws.close_code == 1008:
                assert ws.close_reason
    # Otherwise leaving the block closes the socket, as a caller dropping the line would.


async def test_fuzzed_streams_never_break_the_server_or_other_calls(speech_mulaw: bytes) -> None:
    s = make_settings()
    app = create_app(ECHO_BOT, s, limits=WireLimits(start_timeout_s=0.5))
    state = app.state.voxpipe
    first = speech_mulaw[: 3 * 8000]
    fuzz_done = asyncio.Event()

    def healthy_done(log: CallerLog) -> bool:
        echoed = bool(
            log.media_times and log.mark_echoes and log.mark_echoes[-1][0] >= log.media_times[-1]
        )
        return echoed and fuzz_done.is_set()

    async with serve(app, s) as srv:
        # A well-behaved caller talks (in real time) while the fuzzing goes on.
        healthy = await TwilioCaller.dial(srv.url, audio=first, tail_silence_s=1.5)
        healthy_run = asyncio.get_running_loop().create_task(
            healthy.run(until=healthy_done, timeout=120)
        )
        loop = asyncio.get_running_loop()
        count = itertools.count()

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            with_start=st.booleans(),
            messages=st.lists(_message, min_size=1, max_size=8),
            hang_up=st.booleans(),
        )
        def fuzz(with_start: bool, messages: list[str | bytes], hang_up: bool) -> None:
            sid = f"CAfuzz{next(count)}"
            coro = _one_stream(srv, state, sid, with_start, messages, hang_up)
            asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

        try:
            # Hypothesis runs in a thread; each example's websocket runs on the server's loop.
            await asyncio.to_thread(fuzz)
        finally:
            fuzz_done.set()
        log = await healthy_run
        async with asyncio.timeout(15):
            while len(state.registry):
                await state.registry.sessions[0].ended.wait()
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{srv.url}/healthz")).status_code == 200
    assert log.errors == [] and log.close_code == 1000 and not log.closed_by_server
    sent = first + b"\xff" * (log.sent_chunks * 160)
    assert len(log.audio()) >= 2 * 8000 and sent.find(log.audio()) >= 0
    assert state.metrics.wire_errors["twilio"] > 0
    assert state.metrics.calls_ended["twilio", "error"] == 0
    assert state.metrics.calls_started["twilio"] > 10
