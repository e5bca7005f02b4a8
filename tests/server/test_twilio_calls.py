"""Simulated Twilio calls against a real server: tokens, echo, barge-in, hang-up, silence, metrics."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.server.conftest import serve
from voxpipe.testing.fakes import FakeCall, FakeTwilioREST
from voxpipe.testing.twilio_caller import BargeIn, CallerLog, TwilioCaller

pytestmark = pytest.mark.slow


def echo_done(log: CallerLog) -> bool:
    """All the echo has arrived and played: a mark came back after the last media."""
    return bool(
        log.media_times and log.mark_echoes and log.mark_echoes[-1][0] >= log.media_times[-1]
    )


async def test_stream_without_a_valid_token_is_refused(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    settings = settings_factory()
    app = echo_app(settings)
    st = app.state.voxpipe
    async with serve(app, settings) as srv:
        url = f"{srv.ws_url}/twilio/stream"
        other = st.tokens.issue("twilio", "CAsomeoneelse")
        reused = st.tokens.issue("twilio", "CAreused")
        await st.tokens.redeem(reused, "twilio")  # used once already
        cases = {
            "none": {},
            "garbage": {"voxpipe_token": "123.abc.def"},
            "another call's": {"voxpipe_token": other},
            "reused": {"voxpipe_token": reused},
        }
        for what, params in cases.items():
            sid = "CAreused" if what == "reused" else "CA" + what.replace(" ", "").replace("'", "")
            caller = TwilioCaller(url, audio=b"\xff" * 1600, custom_parameters=params, call_sid=sid)
            log = await caller.run(timeout=10)
            assert log.closed_by_server, what
            assert log.close_code == 1008, (what, log.close_code, log.close_reason)
            assert log.close_reason.startswith("stream refused"), log.close_reason
            assert log.media == [] and log.marks == [], what
    assert sum(st.metrics.calls_started.values()) == 0
    # A valid token for another CallSid: that call's id is claimed, and refused as such.
    assert st.metrics.calls_refused["twilio", "claimed-id"] == 1
    assert st.metrics.calls_refused["twilio", "bad-token"] == len(cases) - 1


async def test_echo_call_gets_its_audio_back(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any], speech_mulaw: bytes
) -> None:
    settings = settings_factory()
    app = echo_app(settings)
    st = app.state.voxpipe
    first = speech_mulaw[: 3 * 8000]  # "Hello, I need some help with my order." (0.6-2.83 s)
    async with serve(app, settings) as srv:
        caller = await TwilioCaller.dial(srv.url, audio=first, realtime=False, tail_silence_s=1.5)
        log = await caller.run(until=echo_done, timeout=20)
        assert log.errors == []
        assert log.close_code == 1000 and not log.closed_by_server
        echoed = log.audio()
        sent = first + b"\xff" * (log.sent_chunks * 160 - len(first))
        # Byte for byte the caller's own audio: a contiguous slice of what was sent ...
        at = sent.find(echoed)
        assert at >= 0, "the echo is not the caller's audio"
        # ... covering the whole utterance.
        assert at / 8000 <= 0.6 and (at + len(echoed)) / 8000 >= 2.83
        assert log.marks and [n for _, n in log.mark_echoes] == [n for _, n in log.marks]
        assert log.clears == []
        async with asyncio.timeout(10):
            while len(st.registry):
                await st.registry.sessions[0].ended.wait()
        async with httpx.AsyncClient() as c:
            health = (await c.get(f"{srv.url}/healthz")).json()
            metrics = (await c.get(f"{srv.url}/metrics")).text
    assert {k: health[k] for k in ("status", "active_calls", "bot")} == {
        "status": "ok",
        "active_calls": 0,
        "bot": str(app.state.voxpipe.bot_name),
    }
    (worker,) = health["workers"]  # one worker: this process
    assert worker["pid"] == health["pid"] and worker["active_calls"] == 0
    assert 'voxpipe_calls_started_total{carrier="twilio"} 1.0' in metrics
    assert 'voxpipe_calls_ended_total{carrier="twilio",how="caller-hung-up"} 1.0' in metrics
    assert "voxpipe_active_calls 0.0" in metrics
    frames_in = next(
        line
        for line in metrics.splitlines()
        if line.startswith('voxpipe_frames_processed_total{way="in"}')
    )
    assert float(frames_in.split()[-1]) >= len(first) / 160


async def test_barge_in_clears_and_no_stale_media_follows(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any], speech_mulaw: bytes
) -> None:
    settings = settings_factory()
    app = echo_app(settings)
    first = speech_mulaw[: int(3.3 * 8000)]  # utterance 1
    second = speech_mulaw[int(3.9 * 8000) : int(6.2 * 8000)]  # utterance 2 (4.13-5.74 s)
    async with serve(app, settings) as srv:
        caller = await TwilioCaller.dial(
            srv.url,
            audio=first,
            realtime=False,
            tail_silence_s=1.5,
            barge_in=BargeIn(second, after_reply=0.6),
        )

        def second_echo_done(log: CallerLog) -> bool:
            return bool(log.clears) and echo_done(log) and log.media_times[-1] > log.clears[0]

        log = await caller.run(until=second_echo_done, timeout=25)
    assert log.errors == []
    assert log.barge_in_t is not None
    assert len(log.clears) == 1
    clear_t = log.clears[0]
    # The caller talked over the bot; the flush followed within the VAD's start window plus
    # the interruption guard (plus network and scheduling).
    assert log.barge_in_t < clear_t < log.barge_in_t + 1.0
    before, after = log.audio(until=clear_t), log.audio(since=clear_t)
    silence = b"\xff" * 16000
    assert before and (first + silence).find(before) >= 0  # the first echo was playing
    # Everything after the clear is the echo of the barge-in: nothing of the first reply.
    assert after and (second + silence).find(after) >= 0
    assert first.find(after[:1600]) < 0
    # The first media after the clear came only once the caller had finished the new utterance.
    first_after = next(t for t in log.media_times if t >= clear_t)
    assert first_after > log.barge_in_t + 1.5


async def test_bot_ending_the_call_hangs_up_through_rest(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    token = "rest-auth-token"
    account = "AC11111111111111111111111111111111"
    live, ended = "CA" + "1" * 32, "CA" + "2" * 32
    async with FakeTwilioREST(
        account_sid=account,
        auth_token=token,
        calls=[live, FakeCall(sid=ended, status="completed")],
    ) as fake:
        settings = settings_factory(
            twilio_account_sid=account, twilio_auth_token=token, twilio_api_base_url=fake.url
        )
        app = echo_app(settings)
        st = app.state.voxpipe
        async with serve(app, settings) as srv:
            for sid in (live, ended):
                caller = await TwilioCaller.dial(
                    srv.url, auth_token=token, call_sid=sid, account_sid=account, dtmf=[(0.1, "#")]
                )
                log = await caller.run(timeout=10)  # runs until the server closes
                assert log.closed_by_server and log.close_code == 1000, log.close_reason
                assert log.close_reason == "call ended"
            await fake.wait_for(lambda: len(fake.requests) == 2)
            async with asyncio.timeout(5):
                while len(st.hangups) < 2:
                    await asyncio.sleep(0.01)  # the handler records the result right after
    assert fake.hangups() == [live]
    assert st.hangups == [(live, "completed"), (ended, "already-ended")]
    assert fake.requests[0].form == {"Status": "completed"}
    assert fake.requests[0].auth_user == account


async def test_silent_socket_is_ended_by_the_registry(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    settings = settings_factory()
    app = echo_app(settings, silence_timeout_s=0.5)
    st = app.state.voxpipe
    async with serve(app, settings) as srv:
        token = st.tokens.issue("twilio", "CAsilent")
        async with connect(f"{srv.ws_url}/twilio/stream") as ws:
            await ws.send(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            )
            start = {
                "event": "start",
                "streamSid": "MZ1",
                "start": {
                    "streamSid": "MZ1",
                    "callSid": "CAsilent",
                    "customParameters": {"voxpipe_token": token},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
            await ws.send(json.dumps(start))
            media = {
                "event": "media",
                "streamSid": "MZ1",
                "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
            }
            for _ in range(5):
                await ws.send(json.dumps(media))
            # Now the line goes dead (no stop, no close): the server must notice and end it.
            async with asyncio.timeout(5):
                await ws.wait_closed()
            assert ws.close_code == 1001
            assert ws.close_reason.startswith("socket silent")
    assert st.registry.swept == 1
    assert len(st.registry) == 0
    assert st.metrics.calls_ended["twilio", "silent"] == 1
