"""ElevenLabsTTSService against FakeElevenLabs over real sockets (websocket and HTTP)."""

from __future__ import annotations

import pytest

from voxpipe.frames import (
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.tts.elevenlabs import (
    ElevenLabsTTSService,
    output_format_for,
    parse_output_format,
)
from voxpipe.testing import run_frames
from voxpipe.testing.fakes import ElevenLabsFault, ElevenLabsHttpFault, FakeElevenLabs
from voxpipe.testing.helpers import Collect, Gate, Until

UP = FrameDirection.UPSTREAM
PHONE = TaskParams(
    audio_in_sample_rate=8000,
    audio_out_sample_rate=8000,
    metadata={"audio_in_encoding": "mulaw", "audio_out_encoding": "mulaw"},
)
MS_PER_CHAR = 10.0


def fake(**kwargs: object) -> FakeElevenLabs:
    opts: dict[str, object] = {"ms_per_char": MS_PER_CHAR, "first_audio_latency": 0.02}
    opts.update(kwargs)
    return FakeElevenLabs(**opts)  # type: ignore[arg-type]


def tts_for(el: FakeElevenLabs, **kwargs: object) -> ElevenLabsTTSService:
    return ElevenLabsTTSService(
        api_key="test-key",
        voice_id="VOICE",
        base_url=el.url,
        **kwargs,  # type: ignore[arg-type]
    )


def words(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TTSTextFrame)]


def audio_of(frames: list[Frame]) -> bytes:
    return b"".join(f.audio for f in frames if isinstance(f, OutputAudioFrame))


def check_word_positions(frames: list[Frame], spoken: str) -> None:
    """Each TTSTextFrame comes exactly when the audio pushed reaches its word's last character.

    The fake renders ``MS_PER_CHAR`` of audio per character of the text it generated, so the
    end of a word is (index of its last character + 1) * MS_PER_CHAR.
    """
    ends = []
    pos = 0
    for token in spoken.split(" "):
        if token:
            ends.append((token, (pos + len(token)) * MS_PER_CHAR / 1000))
        pos += len(token) + 1
    heard = 0.0
    i = 0
    for f in frames:
        if isinstance(f, OutputAudioFrame):
            heard += f.duration
        elif isinstance(f, TTSTextFrame):
            token, end = ends[i]
            assert f.text == token
            assert heard == pytest.approx(end, abs=0.002), f"{token!r} after {heard:.3f}s"
            i += 1
    assert i == len(ends)


async def test_happy_path_ulaw_passthrough_words_after_their_audio() -> None:
    async with fake() as el:
        tts = tts_for(el)
        collect = Collect()
        r = await run_frames(
            [Gate(), tts, collect],
            [
                LLMResponseStartFrame(),
                LLMTextFrame("Hello there. How"),
                # The first sentence goes out before the LLM has said more.
                Until(
                    lambda: any(
                        m.get("text") == "Hello there. " for c in el.connections for m in c.messages
                    )
                ),
                LLMTextFrame(" can I help?"),
                LLMResponseEndFrame(),
            ],
            clock=Clock(),
            params=PHONE,
        )
        conn = el.connections[0]
    assert conn.params["output_format"] == "ulaw_8000"
    assert conn.params["model_id"] == "eleven_flash_v2_5"
    assert conn.headers["xi-api-key"] == "test-key"
    assert conn.messages[0]["text"] == " "
    assert [m.get("text") for m in conn.messages[1:]] == ["Hello there. ", "How can I help? ", ""]
    assert all(m.get("flush") for m in conn.messages[1:3])
    frames = r.downstream
    out = [f for f in frames if isinstance(f, OutputAudioFrame)]
    assert all(f.encoding == "mulaw" and f.sample_rate == 8000 for f in out)
    # The provider's mu-law bytes reach the output untouched.
    assert audio_of(frames) == bytes(conn.audio)
    assert words(frames) == ["Hello", "there.", "How", "can", "I", "help?"]
    check_word_positions(frames, "".join(conn.generations))
    assert conn.finals and conn.close_code == 1000
    kinds = r.types()
    assert kinds.index("TTSStoppedFrame") < kinds.index("LLMResponseEndFrame")
    ttfb = [m for m in r.of_type(MetricsFrame) if m.metric == "ttfb"]
    assert len(ttfb) == 1 and 0.015 < ttfb[0].value < 1.0


async def test_pcm_wire_gets_pcm_at_its_rate_and_replies_use_the_warm_socket() -> None:
    params = TaskParams(audio_out_sample_rate=16000, metadata={"audio_out_encoding": "pcm16"})
    async with fake() as el:
        tts = tts_for(el)
        collect = Collect()
        r = await run_frames(
            [Gate(), tts, collect],
            [
                TTSSpeakFrame("First reply."),
                Until(lambda: any(isinstance(f, TTSStoppedFrame) for f in collect.frames)),
                # The socket for the next reply was opened while the first one spoke.
                Until(lambda: len(el.connections) == 2 and tts.open_sockets == 1),
                TTSSpeakFrame("Second reply."),
            ],
            clock=Clock(),
            params=params,
        )
        conns = list(el.connections)
    assert {c.params["output_format"] for c in conns} == {"pcm_16000"}
    out = r.of_type(OutputAudioFrame)
    assert out and all(f.encoding == "pcm16" and f.sample_rate == 16000 for f in out)
    assert words(r.downstream) == ["First", "reply.", "Second", "reply."]
    # Socket 0 was opened at the start, 1 while reply one spoke, and reply two used it.
    assert [c.text for c in conns[:2]] == ["First reply. ", "Second reply. "]
    assert tts.open_sockets == 0  # all closed at the end, a spare too


async def test_interruption_closes_the_socket_and_no_audio_follows() -> None:
    async with fake(chunk_ms=50.0, chunk_interval=0.05) as el:
        tts = tts_for(el, prewarm=False)
        collect = Collect()
        long_text = "This is a long answer that will take quite a while to say out loud."
        r = await run_frames(
            [Gate(), tts, collect],
            [
                LLMResponseStartFrame(),
                LLMTextFrame(long_text),
                LLMResponseEndFrame(),
                Until(lambda: len(collect.of_type(OutputAudioFrame)) >= 2),
                InterruptionFrame(),
                Until(lambda: tts.open_sockets == 0),
            ],
            clock=Clock(),
            params=PHONE,
        )
        conn = el.connections[0]
    frames = r.downstream
    cut = next(i for i, f in enumerate(frames) if isinstance(f, InterruptionFrame))
    assert not any(isinstance(f, OutputAudioFrame | TTSTextFrame) for f in frames[cut:])
    # The socket was closed mid-reply: the fake stopped speaking, no final message came.
    assert not conn.finals
    assert len(conn.audio) < len(long_text) * 8 * MS_PER_CHAR
    said = words(frames[:cut])
    assert len(said) < len(long_text.split())
    assert len(audio_of(frames)) < len(long_text) * 8 * MS_PER_CHAR  # cut short


async def test_socket_dropped_mid_reply_falls_back_to_http_for_the_unheard_words() -> None:
    fault = ElevenLabsFault(kind="drop", after_audio_chunks=1, connection=0)
    async with fake(faults=[fault], chunk_ms=40.0) as el:
        tts = tts_for(el)
        text = "One two three four five six seven eight."
        r = await run_frames(
            [tts],
            [LLMResponseStartFrame(), LLMTextFrame(text), LLMResponseEndFrame()],
            clock=Clock(),
            params=PHONE,
        )
        ws_conn = el.connections[0]
        requests = list(el.http_requests)
    # One chunk (4 characters: "One ") came over the socket before it dropped.
    assert len(ws_conn.audio_messages) == 1 and ws_conn.close_code == 1006
    assert [q.json["text"] for q in requests] == ["two three four five six seven eight."]
    assert requests[0].params["output_format"] == "ulaw_8000"
    assert requests[0].json["model_id"] == "eleven_flash_v2_5"
    assert words(r.downstream) == text.split()  # every word once, none lost
    errors = r.of_type(ErrorFrame, UP)
    assert errors and "HTTP" in errors[0].error and not errors[0].fatal
    assert tts.http_requests == 1


async def test_provider_error_before_audio_retries_then_falls_back() -> None:
    faults = [
        ElevenLabsFault(kind="error", after_messages=2, connection=0, message="Server busy."),
        ElevenLabsFault(kind="error", after_messages=2, connection=1, message="Still busy."),
    ]
    async with fake(faults=faults) as el:
        tts = tts_for(el)
        r = await run_frames([tts], [TTSSpeakFrame("Please hold on.")], clock=Clock(), params=PHONE)
        conns = list(el.connections)
        requests = list(el.http_requests)
    # Socket 0 (warm) failed before any audio, the retry on socket 1 failed too.
    assert conns[0].close_code == 1011 and conns[1].close_code == 1011
    assert conns[1].text == "Please hold on. "
    assert [q.json["text"] for q in requests] == ["Please hold on."]
    assert words(r.downstream) == ["Please", "hold", "on."]
    errors = r.of_type(ErrorFrame, UP)
    assert any("Still busy." in e.error and not e.fatal for e in errors)


async def test_everything_failing_cuts_the_reply_short_with_an_error() -> None:
    fault = ElevenLabsFault(kind="error", after_messages=2, connection=None)
    async with fake(faults=[fault]) as el:
        el.faults.append(ElevenLabsFault(kind="error", after_messages=2, connection=None))
        el.fail_next_http(ElevenLabsHttpFault(status=500))
        tts = tts_for(el, prewarm=False)
        r = await run_frames([tts], [TTSSpeakFrame("Hello.")], clock=Clock(), params=PHONE)
    errors = r.of_type(ErrorFrame, UP)
    assert any("HTTP 500" in e.error for e in errors)
    assert not any(e.fatal for e in errors)
    assert words(r.downstream) == [] and not r.of_type(OutputAudioFrame)


async def test_bad_api_key_is_fatal_and_names_the_variable() -> None:
    async with fake(api_key="right-key") as el:
        tts = ElevenLabsTTSService(api_key="wrong-key", voice_id="VOICE", base_url=el.url)
        r = await run_frames(
            [tts], [TTSSpeakFrame("Hello.")], clock=Clock(), params=PHONE, send_end=False
        )
    errors = r.of_type(ErrorFrame, UP)
    assert errors and errors[0].fatal and "ELEVENLABS_API_KEY" in errors[0].error
    assert r.end_reason == "fatal error"
    assert el.http_requests == []  # no fallback for a refused key


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from voxpipe.config.settings import get_settings

    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="ELEVENLABS_API_KEY"):
            ElevenLabsTTSService(voice_id="v", base_url="http://127.0.0.1:1")
    finally:
        get_settings.cache_clear()


def test_output_formats() -> None:
    assert output_format_for("mulaw", 8000) == "ulaw_8000"
    assert output_format_for("pcm16", 16000) == "pcm_16000"
    assert output_format_for("pcm16", 48000) == "pcm_48000"
    assert output_format_for("pcm16", 12000) == "pcm_16000"
    assert parse_output_format("ulaw_8000") == ("mulaw", 8000)
    assert parse_output_format("pcm_24000") == ("pcm16", 24000)
    with pytest.raises(ValueError, match="raw audio"):
        parse_output_format("mp3_44100_128")
