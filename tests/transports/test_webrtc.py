"""The WebRTC transport's pieces: the paced outbound track (a WireSink with local marks), audio
conversion of decoded frames, ICE server settings, and the events the page is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the WebRTC tests need the 'webrtc' extra")

from aiortc.mediastreams import MediaStreamError  # noqa: E402
from av import AudioFrame  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from voxpipe.frames import (  # noqa: E402
    InterimTranscriptionFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    TransportMessageFrame,
    TTSTextFrame,
)
from voxpipe.testing import run_frames  # noqa: E402
from voxpipe.transports.memory import MemorySink  # noqa: E402
from voxpipe.transports.params import TransportParams  # noqa: E402
from voxpipe.transports.webrtc import (  # noqa: E402
    WebRTCAudioTrack,
    WebRTCOutputTransport,
    WebRTCTransport,
    audio_frame_to_mono_pcm16,
    ice_servers_from,
    webrtc_params,
)
from voxpipe.transports.wire import AudioFormat  # noqa: E402


def ramp(n_samples: int, start: int = 0) -> bytes:
    """Distinct samples so frame contents can be checked byte for byte."""
    return (np.arange(start, start + n_samples) % 30000).astype("<i2").tobytes()


def pcm_of(frame: AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: 2 * frame.samples]


# ---------------------------------------------------------------------------- outbound track


async def test_track_hands_out_20ms_frames_and_echoes_marks_as_their_audio_leaves() -> None:
    echoed: list[str] = []
    track = WebRTCAudioTrack(16000, on_mark=echoed.append)
    first = ramp(800)  # 50 ms
    second = ramp(320, start=800)  # 20 ms
    await track.send_audio(first)
    await track.send_mark("m1")
    await track.send_audio(second)
    await track.send_mark("m2")
    stream = first + second

    frames = [await track.recv() for _ in range(2)]
    assert [pcm_of(f) for f in frames] == [stream[:640], stream[640:1280]]
    assert echoed == []  # 40 of the 50 ms before m1 have left
    third = await track.recv()
    assert pcm_of(third) == stream[1280:1920]
    assert echoed == ["m1"]
    fourth = await track.recv()
    # The last 10 ms, padded with silence to a whole frame.
    assert pcm_of(fourth) == stream[1920:] + bytes(320)
    assert echoed == ["m1", "m2"]
    idle = await track.recv()
    assert pcm_of(idle) == bytes(640)
    assert track.audio_frames_out == 4 and track.frames_out == 5
    for i, f in enumerate([*frames, third, fourth, idle]):
        assert f.sample_rate == 16000 and f.samples == 320 and f.pts == 320 * i
        assert f.format.name == "s16" and f.layout.name == "mono"


async def test_clear_drops_what_was_not_handed_out_and_returns_pending_marks() -> None:
    echoed: list[str] = []
    track = WebRTCAudioTrack(16000, on_mark=echoed.append)
    await track.send_audio(ramp(1600))  # 100 ms
    await track.send_mark("a")
    await track.send_audio(ramp(1600))
    await track.send_mark("b")
    await track.recv()
    assert echoed == [] and track.buffered_seconds == pytest.approx(0.18)
    await track.send_clear()
    assert echoed == ["a", "b"] and track.buffered_seconds == 0
    assert pcm_of(await track.recv()) == bytes(640)
    # A mark after the clear comes back as soon as the (empty) buffer is played.
    await track.send_mark("c")
    assert echoed == ["a", "b", "c"]


async def test_recv_is_paced_on_real_time() -> None:
    track = WebRTCAudioTrack(48000)
    loop = asyncio.get_running_loop()
    await track.recv()
    t0 = loop.time()
    for _ in range(10):
        frame = await track.recv()
    elapsed = loop.time() - t0
    assert frame.samples == 960
    assert elapsed >= 10 * 0.020 - 0.005, elapsed


async def test_stopped_track_raises_and_ignores_audio() -> None:
    track = WebRTCAudioTrack(16000)
    track.stop()
    await track.send_audio(ramp(320))
    assert track.buffered_seconds == 0
    with pytest.raises(MediaStreamError):
        await track.recv()


# ---------------------------------------------------------------------------- inbound audio


def test_decoded_stereo_frames_are_mixed_to_mono_pcm16() -> None:
    n = 960
    interleaved = np.empty((1, 2 * n), dtype=np.int16)
    interleaved[0, 0::2] = 1000
    interleaved[0, 1::2] = 3000
    packed = AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    mono = np.frombuffer(audio_frame_to_mono_pcm16(packed), dtype="<i2")
    assert len(mono) == n and set(mono.tolist()) == {2000}

    planar = AudioFrame.from_ndarray(
        np.full((2, n), 0.5, dtype=np.float32), format="fltp", layout="stereo"
    )
    assert set(np.frombuffer(audio_frame_to_mono_pcm16(planar), dtype="<i2").tolist()) == {16384}

    loud = AudioFrame.from_ndarray(
        np.full((1, n), 2.0, dtype=np.float32), format="flt", layout="mono"
    )
    assert set(np.frombuffer(audio_frame_to_mono_pcm16(loud), dtype="<i2").tolist()) == {32767}

    samples = np.frombuffer(ramp(n), dtype="<i2").reshape(1, n)
    plain = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    assert audio_frame_to_mono_pcm16(plain) == ramp(n)


# ---------------------------------------------------------------------------- settings


def test_ice_servers_from_setting_values() -> None:
    assert ice_servers_from(None) == [] and ice_servers_from("") == []
    urls = ice_servers_from("stun:stun.example.org:3478, stun:backup.example.org")
    assert [s.urls for s in urls] == ["stun:stun.example.org:3478", "stun:backup.example.org"]
    turn = ice_servers_from(
        '[{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]'
    )
    assert turn[0].urls == ["turn:turn.example.org:3478"]
    assert (turn[0].username, turn[0].credential) == ("u", "p")
    assert ice_servers_from({"urls": "stun:x"})[0].urls == "stun:x"
    assert ice_servers_from(SecretStr("turn:t.example.org"))[0].urls == "turn:t.example.org"
    with pytest.raises(ValueError, match="not valid JSON"):
        ice_servers_from("[{bad")
    with pytest.raises(ValueError, match="bad ICE server entry"):
        ice_servers_from([{"username": "no urls"}])


async def test_transport_refuses_mulaw() -> None:
    params = TransportParams(
        audio_in=AudioFormat("mulaw", 8000), audio_out=AudioFormat("mulaw", 8000)
    )
    with pytest.raises(ValueError, match="PCM16"):
        WebRTCTransport(params)
    transport = WebRTCTransport(webrtc_params(), vad=None)
    try:
        assert transport.sink is transport.track and transport.track.supports_marks
        assert transport.params.audio_in == AudioFormat("pcm16", 16000, 1)
    finally:
        await transport.close()


# ---------------------------------------------------------------------------- page events


async def test_page_hears_transcripts_at_once_and_bot_text_once_played() -> None:
    params = webrtc_params(vad_enabled=False)
    output = WebRTCOutputTransport(MemorySink(params.audio_out), params)
    events: list[tuple[float, dict[str, Any]]] = []
    output.send_event = lambda m: events.append((asyncio.get_running_loop().time(), m))
    voice = np.full(16000 // 2, 3000, dtype="<i2").tobytes()  # 0.5 s of bot audio
    frames = [
        InterimTranscriptionFrame(text="hel"),
        TranscriptionFrame(text="hello"),
        OutputAudioFrame(audio=voice, sample_rate=16000),
        TTSTextFrame(text="Hi"),
        TransportMessageFrame(message={"type": "custom", "n": 1}),
    ]
    result = await run_frames([output], frames)
    kinds = [m["type"] for _, m in events]
    assert kinds == [
        "user-transcript",
        "user-transcript",
        "bot-started-speaking",
        "bot-text",
        "custom",
        "bot-stopped-speaking",
    ]
    assert [m.get("final") for _, m in events[:2]] == [False, True]
    times = {m["type"]: t for t, m in reversed(events)}
    # The bot's words reach the page as they are heard, not when generated.
    assert times["bot-text"] - times["bot-started-speaking"] >= 0.5 - 0.11  # minus the lead
    assert events[4][1] == {"type": "custom", "n": 1}
    # The frames still go on downstream (to the assistant aggregator).
    assert [f.text for f in result.of_type(TTSTextFrame)] == ["Hi"]
