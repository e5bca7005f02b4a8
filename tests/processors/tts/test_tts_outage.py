"""Pre-rendered lines and TTS outages, against FakeElevenLabs over real sockets: lines are
rendered once per process, and while ElevenLabs is down the fallback line (and the apology)
play from that cache; the outage is reported and probed until ElevenLabs answers again."""

from __future__ import annotations

import asyncio

from voxpipe.frames import (
    Frame,
    FrameDirection,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    OutputAudioFrame,
    ProviderOutageFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.outage import Backoff
from voxpipe.processors.tts.cache import SpeechCache
from voxpipe.processors.tts.elevenlabs import ElevenLabsTTSService
from voxpipe.testing import run_frames
from voxpipe.testing.fakes import FakeElevenLabs
from voxpipe.testing.helpers import Gate, Until, wait_until

UP = FrameDirection.UPSTREAM
PHONE = TaskParams(
    audio_in_sample_rate=8000,
    audio_out_sample_rate=8000,
    metadata={"audio_in_encoding": "mulaw", "audio_out_encoding": "mulaw"},
)
FALLBACK = "Sorry, I'm having trouble answering right now."


def tts_for(el: FakeElevenLabs, cache: SpeechCache) -> ElevenLabsTTSService:
    tts = ElevenLabsTTSService(
        api_key="test-key", voice_id="VOICE", base_url=el.url, prewarm=False, language="en"
    )
    tts.speech_cache = cache
    tts.probe_backoff = Backoff(base_s=0.05, cap_s=0.1)
    tts.prerender(FALLBACK)
    return tts


def words(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TTSTextFrame)]


def audio_of(frames: list[Frame]) -> bytes:
    return b"".join(f.audio for f in frames if isinstance(f, OutputAudioFrame))


def line_ready(tts: ElevenLabsTTSService) -> bool:
    task = tts._lines.get(FALLBACK)
    return task is not None and task.done()


async def test_lines_are_rendered_once_per_process_and_played_from_the_cache() -> None:
    cache = SpeechCache()
    async with FakeElevenLabs(ms_per_char=10.0, first_audio_latency=0.02) as el:
        first = tts_for(el, cache)
        r1 = await run_frames(
            [Gate(), first],
            [Until(lambda: line_ready(first)), TTSSpeakFrame(FALLBACK)],
            clock=Clock(),
            params=PHONE,
        )
        second = tts_for(el, cache)
        r2 = await run_frames(
            [Gate(), second],
            [Until(lambda: line_ready(second)), TTSSpeakFrame(FALLBACK)],
            clock=Clock(),
            params=PHONE,
        )
    # One render for both calls (over HTTP), none on the reply sockets.
    assert [req.json["text"] for req in el.http_requests] == [FALLBACK]
    assert el.connections == [] and cache.renders == 1
    assert first.lines_played == 1 and second.lines_played == 1
    assert audio_of(r1.downstream) == audio_of(r2.downstream) != b""
    assert words(r1.downstream) == FALLBACK.split()


async def test_while_elevenlabs_is_down_the_fallback_plays_from_the_cache() -> None:
    cache = SpeechCache()
    down = asyncio.Event()
    async with FakeElevenLabs(ms_per_char=10.0, first_audio_latency=0.02) as el:
        tts = tts_for(el, cache)
        cached_audio: list[bytes] = []

        async def outage() -> None:
            await wait_until(lambda: line_ready(tts))
            speech = cache.get(tts._key(FALLBACK))
            assert speech is not None and not speech.offline
            cached_audio.append(speech.audio)
            await el.go_down()
            down.set()
            await wait_until(lambda: tts.lines_played == 1)
            await el.come_back()

        driver = asyncio.create_task(outage())
        frames = [
            Until(down.is_set),
            # A reply while ElevenLabs is unreachable: cannot be spoken, the outage is known.
            LLMResponseStartFrame(),
            TTSSpeakFrame("Your order ships tomorrow."),
            LLMResponseEndFrame(),
            Until(lambda: tts.outage.reported),
            # The LLM's fallback line (a failed reply): from the cache.
            LLMResponseStartFrame(),
            TTSSpeakFrame(FALLBACK),
            LLMResponseEndFrame(),
            Until(lambda: not tts.outage.down, timeout=10),  # probed until back
        ]
        r = await run_frames([Gate(), tts], frames, clock=Clock(), params=PHONE)
        await driver
    assert audio_of(r.downstream) == cached_audio[0]
    assert words(r.downstream) == FALLBACK.split()  # the lost reply never counts as said
    reports = r.of_type(ProviderOutageFrame, UP)
    assert [(f.state, f.provider, f.service) for f in reports] == [
        ("down", "elevenlabs", "tts"),
        ("up", "elevenlabs", "tts"),
    ]


async def test_a_line_the_provider_cannot_render_is_rendered_offline() -> None:
    cache = SpeechCache()
    async with FakeElevenLabs(ms_per_char=10.0) as el:
        await el.go_down()  # down from the call's start
        tts = tts_for(el, cache)
        r = await run_frames(
            [Gate(), tts],
            [
                Until(lambda: line_ready(tts), timeout=10),
                TTSSpeakFrame("Anything live."),  # fails: the provider is known to be down
                Until(lambda: tts.outage.reported),
                TTSSpeakFrame(FALLBACK),
            ],
            clock=Clock(),
            params=PHONE,
        )
    speech = tts._lines[FALLBACK].result()
    assert speech is not None and speech.offline  # espeak-ng, in the wire's format
    assert (speech.encoding, speech.sample_rate) == ("mulaw", 8000)
    assert audio_of(r.downstream) == speech.audio
    assert words(r.downstream) == FALLBACK.split()
