"""DeepgramSTTService against FakeDeepgram over a real websocket (the official SDK client)."""

from __future__ import annotations

import numpy as np
import pytest

from voxpipe.frames import (
    EndTaskFrame,
    ErrorFrame,
    FrameDirection,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    MetricsFrame,
    PauseRecordingFrame,
    ProviderOutageFrame,
    ResumeRecordingFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.outage import Backoff
from voxpipe.processors.stt.deepgram import DeepgramSTTService, deepgram_urls
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.fakes import DeepgramFault, DeepgramUtterance, FakeDeepgram
from voxpipe.testing.helpers import Collect, Gate, Until

_UP = FrameDirection.UPSTREAM
RATE = 8000
FRAME = 160  # 20 ms of 8 kHz mu-law
PHONE = TaskParams(
    audio_in_sample_rate=RATE, audio_out_sample_rate=RATE, metadata={"audio_in_encoding": "mulaw"}
)


def noise(seconds: float, seed: int = 0) -> bytes:
    """Varied mu-law bytes: a resend after a reconnect can be located in what was sent."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, int(seconds * RATE), dtype=np.uint8).tobytes()


def frames_of(audio: bytes) -> list[InputAudioFrame]:
    return [
        InputAudioFrame(audio[i : i + FRAME], sample_rate=RATE, encoding="mulaw")
        for i in range(0, len(audio), FRAME)
    ]


_RAW = {"value": True}


@pytest.fixture(autouse=True, params=["raw", "sdk-models"])
def message_decoding(request: pytest.FixtureRequest) -> object:
    """Every test runs with messages decoded here and with the SDK's own models."""
    _RAW["value"] = request.param == "raw"
    yield request.param
    _RAW["value"] = True


def stt_for(dg: FakeDeepgram, **kwargs: object) -> DeepgramSTTService:
    kwargs.setdefault("raw_messages", _RAW["value"])
    return DeepgramSTTService(api_key="test-key", base_url=dg.url, **kwargs)  # type: ignore[arg-type]


def finals(frames: list) -> list[str]:
    return [f.text for f in frames if type(f) is TranscriptionFrame]


async def test_happy_path_interims_final_and_audio_untouched() -> None:
    hello = DeepgramUtterance("Hello there, friend.", start=0.2, end=0.8)
    audio = noise(2.0)
    async with FakeDeepgram(utterances=[hello], latency=0.02) as dg:
        stt = stt_for(dg)
        r = await run_frames([stt], frames_of(audio), clock=Clock(), params=PHONE)
    assert finals(r.downstream) == ["Hello there, friend."]
    final = [f for f in r.downstream if type(f) is TranscriptionFrame][-1]
    assert final.confidence == pytest.approx(0.98)
    assert [w.word for w in final.words] == ["Hello", "there,", "friend."]
    assert final.words[0].start == pytest.approx(0.2) and final.words[-1].end == pytest.approx(0.8)
    assert final.language == "en-US"
    interims = r.of_type(InterimTranscriptionFrame)
    assert interims and "Hello there, friend.".startswith(interims[0].text)
    assert not any(isinstance(f, InputAudioFrame) for f in r.downstream)  # consumed
    conn = dg.connections[0]
    assert conn.params["encoding"] == "mulaw" and conn.params["sample_rate"] == "8000"
    assert conn.params["model"] == "nova-2" and conn.params["language"] == "en-US"
    assert conn.params["interim_results"] == "true" and conn.params["endpointing"] == "300"
    assert conn.params["utterance_end_ms"] == "1000"
    assert conn.headers["authorization"] == "Token test-key"
    # Phone audio reaches Deepgram byte for byte: no transcoding.
    assert bytes(conn.audio) == audio
    # The call's end sends CloseStream and waits for Deepgram's clean close.
    assert conn.close_streams == 1 and conn.close_code == 1000 and dg.connection_count == 1


async def test_pcm_wire_is_sent_as_linear16_at_its_rate() -> None:
    hello = DeepgramUtterance("Hello.", start=0.1, end=0.4)
    pcm = (np.sin(np.arange(16000) / 7.0) * 3000).astype("<i2").tobytes()  # 1 s at 16 kHz
    frames = [InputAudioFrame(pcm[i : i + 640], sample_rate=16000) for i in range(0, len(pcm), 640)]
    async with FakeDeepgram(utterances=[hello], latency=0.01) as dg:
        r = await run_frames(
            [stt_for(dg)], frames, clock=Clock(), params=TaskParams(audio_in_sample_rate=16000)
        )
    conn = dg.connections[0]
    assert conn.params["encoding"] == "linear16" and conn.params["sample_rate"] == "16000"
    assert bytes(conn.audio) == pcm
    assert finals(r.downstream) == ["Hello."]


async def test_confidence_threshold_drops_low_confidence_finals() -> None:
    utterances = [
        DeepgramUtterance("Mumble mumble.", start=0.2, end=0.6, confidence=0.4),
        DeepgramUtterance("I want a refund.", start=1.2, end=1.8, confidence=0.9),
    ]
    async with FakeDeepgram(utterances=utterances, latency=0.01) as dg:
        stt = stt_for(dg)
        r = await run_frames([stt], frames_of(noise(3.0)), clock=Clock(), params=PHONE)
        assert dg.final_transcripts() == ["Mumble mumble.", "I want a refund."]
    assert finals(r.downstream) == ["I want a refund."]
    assert stt.dropped_low_confidence == 1

    async with FakeDeepgram(utterances=utterances, latency=0.01) as dg:
        r = await run_frames(
            [stt_for(dg, confidence_threshold=0.3)],
            frames_of(noise(3.0)),
            clock=Clock(),
            params=PHONE,
        )
    assert finals(r.downstream) == ["Mumble mumble.", "I want a refund."]


async def test_finalize_on_user_stopped_speaking_and_ttfb_metric() -> None:
    # No endpointing: only Finalize (on the VAD's stop) produces the final.
    words = DeepgramUtterance("Check my balance.", start=0.2, end=0.9)
    audio = noise(1.2)
    async with FakeDeepgram(utterances=[words], latency=0.05) as dg:
        stt = stt_for(dg, endpointing_ms=None, utterance_end_ms=None)
        collect = Collect()
        r = await run_frames(
            [Gate(), stt, collect],
            [
                UserStartedSpeakingFrame(),
                *frames_of(audio),
                UserStoppedSpeakingFrame(),
                Until(lambda: finals(collect.frames)),
            ],
            clock=Clock(),
            params=PHONE,
        )
        assert dg.finalize_count == 1
        assert dg.connections[0].params["endpointing"] == "false"
    assert finals(r.downstream) == ["Check my balance."]
    ttfb = [m for m in r.of_type(MetricsFrame) if m.metric == "ttfb"]
    assert len(ttfb) == 1 and ttfb[0].model == "nova-2"
    assert 0.04 <= ttfb[0].value < 1.0  # the fake's 50 ms plus the local round trip


async def test_finalize_when_the_caller_goes_quiet_before_the_turn_is_decided() -> None:
    # The final a preemptive reply starts from is asked for when the silence begins: it is
    # there before the turn is decided (UserStoppedSpeakingFrame never comes here).
    from voxpipe.processors.turn.frames import UserSilenceStartedFrame

    words = DeepgramUtterance("Check my balance.", start=0.2, end=0.9)
    audio = noise(1.2)
    async with FakeDeepgram(utterances=[words], latency=0.05) as dg:
        stt = stt_for(dg, endpointing_ms=None, utterance_end_ms=None)
        collect = Collect()
        r = await run_frames(
            [Gate(), stt, collect],
            [
                UserStartedSpeakingFrame(),
                *frames_of(audio),
                UserSilenceStartedFrame(),
                Until(lambda: finals(collect.frames)),
            ],
            clock=Clock(),
            params=PHONE,
        )
        assert dg.finalize_count == 1
    assert finals(r.downstream) == ["Check my balance."]


async def test_keepalive_while_transcription_is_paused() -> None:
    audio = noise(1.0)
    async with FakeDeepgram(latency=0.01, inactivity_timeout=0.5) as dg:
        stt = stt_for(dg, keepalive_interval=0.1)
        await run_frames(
            [Gate(), stt],
            [
                *frames_of(audio[:4000]),
                PauseRecordingFrame(reason="card number"),
                *frames_of(audio[4000:]),  # not sent while paused
                Until(lambda: dg.keepalive_count >= 8),  # 0.8 s of silence on the socket
                ResumeRecordingFrame(),
                *frames_of(audio[:800]),
            ],
            clock=Clock(),
            params=PHONE,
        )
    # KeepAlive kept the socket open past the fake's 0.5 s inactivity timeout.
    assert dg.connection_count == 1
    assert bytes(dg.connections[0].audio) == audio[:4000] + audio[:800]


async def test_socket_dropped_mid_utterance_reconnects_and_loses_nothing() -> None:
    utterances = [
        DeepgramUtterance("Hello there.", start=0.2, end=0.7),
        DeepgramUtterance("one two three four", start=1.3, end=2.2),
    ]
    audio = noise(3.5, seed=3)
    # Drop the first socket at 1.6 s of audio: in the middle of the second utterance.
    fault = DeepgramFault(kind="drop", after_seconds=1.6, connection=0)
    async with FakeDeepgram(utterances=utterances, latency=0.01, faults=[fault]) as dg:
        stt = stt_for(dg)
        collect = Collect()
        first_part = int(1.2 * RATE)
        r = await run_frames(
            [Gate(), stt, collect],
            [
                *frames_of(audio[:first_part]),
                Until(lambda: finals(collect.frames) == ["Hello there."]),
                *frames_of(audio[first_part:]),
                Until(lambda: len(finals(collect.frames)) == 2),
            ],
            clock=Clock(),
            params=PHONE,
        )
        first, second = dg.connections[:2]
    assert finals(collect.frames) == ["Hello there.", "one two three four"]
    assert first.closed_by_fake and first.close_code == 1006
    assert not r.of_type(ErrorFrame, direction=_UP)  # a drop is handled, not an error
    assert stt.reconnects >= 1 and dg.connection_count == 2
    # The resend began where Deepgram had finalized (after the first utterance), not at 0.
    assert second.call == first.call
    # (the first final's span ends at 0.7 s + 300 ms endpointing)
    assert second.start_offset == pytest.approx(1.0)
    # Word times stay on the call's timeline across the reconnect.
    words = [f for f in collect.frames if type(f) is TranscriptionFrame][1].words
    assert words[0].start == pytest.approx(1.3, abs=0.01)


async def test_interruption_does_not_lose_caller_words() -> None:
    words = DeepgramUtterance("Stop please.", start=0.2, end=0.6)
    async with FakeDeepgram(utterances=[words], latency=0.05) as dg:
        stt = stt_for(dg)
        audio = noise(1.2)
        r = await run_frames(
            [stt],
            [*frames_of(audio[:4000]), InterruptionFrame(), *frames_of(audio[4000:])],
            clock=Clock(),
            params=PHONE,
        )
    assert finals(r.downstream) == ["Stop please."]
    assert dg.connection_count == 1


async def test_provider_error_is_reported_and_the_call_goes_on() -> None:
    fault = DeepgramFault(
        kind="error", after_seconds=0.3, connection=0, description="Internal hiccup."
    )
    words = DeepgramUtterance("Are you there?", start=0.5, end=1.0)
    async with FakeDeepgram(utterances=[words], latency=0.01, faults=[fault]) as dg:
        stt = stt_for(dg)
        r = await run_frames([stt], frames_of(noise(2.0, seed=5)), clock=Clock(), params=PHONE)
    errors = r.of_type(ErrorFrame, direction=_UP)
    assert any("Internal hiccup." in e.error and not e.fatal for e in errors)
    assert dg.connection_count == 2  # reconnected after the error close
    assert finals(r.downstream) == ["Are you there?"]


async def test_bad_api_key_is_a_fatal_error_naming_the_variable() -> None:
    async with FakeDeepgram(api_key="right-key") as dg:
        stt = DeepgramSTTService(api_key="wrong-key", base_url=dg.url)
        r = await run_frames(
            [stt],
            [Sleep(0.0), *frames_of(noise(0.2))],
            clock=Clock(),
            params=PHONE,
            send_end=False,
        )
    errors = r.of_type(ErrorFrame, direction=_UP)
    assert errors and errors[0].fatal and "DEEPGRAM_API_KEY" in errors[0].error
    assert r.end_reason == "fatal error"
    assert dg.rejected[0][0] == 401


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from voxpipe.config.settings import get_settings

    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="DEEPGRAM_API_KEY"):
            DeepgramSTTService(base_url="ws://127.0.0.1:1")
    finally:
        get_settings.cache_clear()


def test_base_url_forms() -> None:
    assert deepgram_urls("wss://api.deepgram.com") == (
        "wss://api.deepgram.com",
        "https://api.deepgram.com",
    )
    assert deepgram_urls("http://127.0.0.1:8080/") == (
        "ws://127.0.0.1:8080",
        "http://127.0.0.1:8080",
    )
    with pytest.raises(ValueError, match="DEEPGRAM_BASE_URL"):
        deepgram_urls("api.deepgram.com")


async def test_unreachable_server_ends_the_call_gracefully_after_the_grace() -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stt = DeepgramSTTService(
        api_key="k",
        base_url=f"ws://127.0.0.1:{port}",
        outage_grace_s=0.6,
        reconnect_backoff=Backoff(base_s=0.05, cap_s=0.1),
    )
    r = await run_frames([stt], frames_of(noise(0.2)), clock=Clock(), params=PHONE, send_end=False)
    # No fatal error (which would cancel the call with nothing said): a report, then an end.
    errors = r.of_type(ErrorFrame, direction=_UP)
    assert errors and not any(e.fatal for e in errors)
    assert "unreachable" in errors[-1].error and "DEEPGRAM_BASE_URL" in errors[-1].error
    reports = [(f.state, f.provider) for f in r.of_type(ProviderOutageFrame)]
    assert reports == [("down", "deepgram"), ("gave_up", "deepgram")]
    assert r.of_type(EndTaskFrame, direction=_UP)
    assert r.end_reason == "deepgram unreachable"
    # Retried with backoff for the whole grace, not a fixed number of attempts.
    assert stt.connects == 0 and stt.reconnects >= 4
    assert r.of_type(ProviderOutageFrame)[-1].duration_s >= 0.6


async def test_audio_goes_out_in_100ms_pieces_without_compression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20 ms phone frames are sent as ~100 ms websocket messages (the end flushes the rest),
    # on a connection that did not negotiate permessage-deflate.
    from deepgram.listen.v1.socket_client import AsyncV1SocketClient

    sizes: list[int] = []
    original = AsyncV1SocketClient.send_media

    async def record(self: AsyncV1SocketClient, message: bytes) -> None:
        sizes.append(len(message))
        await original(self, message)

    monkeypatch.setattr(AsyncV1SocketClient, "send_media", record)
    audio = noise(1.05)
    async with FakeDeepgram(utterances=[], latency=0.01) as dg:
        await run_frames([stt_for(dg)], frames_of(audio), clock=Clock(), params=PHONE)
    conn = dg.connections[0]
    assert bytes(conn.audio) == audio
    assert "sec-websocket-extensions" not in conn.headers
    assert sum(sizes) == len(audio) and len(sizes) <= 12
    assert all(size >= 800 for size in sizes[:-1])
