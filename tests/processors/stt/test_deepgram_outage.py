"""Deepgram outages over real sockets: FakeDeepgram goes down (drops the socket, refuses new
ones) and comes back; the call goes on and the words said meanwhile are transcribed."""

from __future__ import annotations

import asyncio

import numpy as np

from voxpipe.frames import Frame, InputAudioFrame, ProviderOutageFrame, TranscriptionFrame
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.outage import Backoff
from voxpipe.processors.stt.deepgram import DeepgramSTTService
from voxpipe.testing import run_frames
from voxpipe.testing.fakes import DeepgramUtterance, FakeDeepgram
from voxpipe.testing.helpers import Collect, Gate, Until, wait_until

RATE = 8000
FRAME = 160
PHONE = TaskParams(
    audio_in_sample_rate=RATE, audio_out_sample_rate=RATE, metadata={"audio_in_encoding": "mulaw"}
)


def noise(seconds: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, int(seconds * RATE), dtype=np.uint8).tobytes()


def frames_of(audio: bytes) -> list[InputAudioFrame]:
    return [
        InputAudioFrame(audio[i : i + FRAME], sample_rate=RATE, encoding="mulaw")
        for i in range(0, len(audio), FRAME)
    ]


def finals(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if type(f) is TranscriptionFrame]


async def test_words_said_during_an_outage_are_transcribed_right_after_it() -> None:
    question = DeepgramUtterance("Where is my order?", start=1.5, end=2.5)
    audio = noise(4.0)
    down = asyncio.Event()
    async with FakeDeepgram(utterances=[question], latency=0.02) as dg:
        stt = DeepgramSTTService(
            api_key="test-key",
            base_url=dg.url,
            outage_grace_s=10.0,
            reconnect_backoff=Backoff(base_s=0.05, cap_s=0.2),
        )
        out = Collect()
        back_at: list[float] = []

        async def outage() -> None:
            await dg.wait_for(lambda: dg.total_audio_bytes >= RATE)  # 1 s of the call
            await dg.go_down()
            down.set()
            # Down while the client retries four times with backoff.
            await wait_until(lambda: stt.reconnects >= 4 and stt.outage.reported, timeout=10)
            back_at.append(asyncio.get_running_loop().time())
            await dg.come_back()

        driver = asyncio.create_task(outage())
        frames = [
            *frames_of(audio[:RATE]),
            Until(down.is_set),
            *frames_of(audio[RATE:]),  # the question, said while Deepgram is unreachable
            Until(lambda: finals(out.frames), timeout=10),
        ]
        r = await run_frames([Gate(), stt, out], frames, clock=Clock(), params=PHONE)
        await driver
    assert finals(r.downstream) == ["Where is my order?"]
    reports = [f.state for f in r.of_type(ProviderOutageFrame)]
    assert reports == ["down", "up"]
    assert r.end_reason != "fatal error"
    # Answered promptly once back: within the backoff cap plus the fake's latency.
    got = next(
        t
        for f, t in zip(r.downstream, r.downstream_times, strict=True)
        if type(f) is TranscriptionFrame
    )
    assert 0 < got - back_at[0] < 1.0
