"""Helpers for the WebRTC tests: a probe around the echo bot, a WAV microphone for aiortc, levels.

Loaded by path (tests/ is not a package): the pytest modules with importlib, the browser
driver script (which runs in its own network namespace) from its own directory.
"""

from __future__ import annotations

import asyncio
import fractions
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.audio.wav import read_wav
from voxpipe.call import Call, load_bot
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.observer import Observer
from voxpipe.pipelines.task import PipelineTask

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"
SPEECH_WAV = ROOT / "tests" / "data" / "speech_16k.wav"


def rms(pcm: bytes) -> float:
    """RMS level of PCM16 audio, 0..1 of full scale."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x)) / 32768.0) if len(x) else 0.0


@dataclass
class ProbeStats:
    """What the server side of a call saw: caller audio levels and speaking events."""

    calls: list[Call] = field(default_factory=list)
    input_frames: int = 0
    input_seconds: float = 0.0
    input_peak_rms: float = 0.0
    events: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, name: str) -> int:
        return self.events.count(name)

    def summary(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "carriers": [c.carrier for c in self.calls],
            "input_frames": self.input_frames,
            "input_seconds": round(self.input_seconds, 3),
            "input_peak_rms": self.input_peak_rms,
            "events": self.events,
        }


class _InputProbe(Observer):
    """Measures the caller audio entering the call (after the transport's decode and resample)."""

    def __init__(self, stats: ProbeStats) -> None:
        self.stats = stats

    def on_input(self, frame: Frame, direction: FrameDirection) -> None:
        if type(frame) is InputAudioFrame:
            self.stats.input_frames += 1
            self.stats.input_seconds += frame.duration  # type: ignore[attr-defined]
            level = rms(frame.audio)  # type: ignore[attr-defined]
            self.stats.input_peak_rms = max(self.stats.input_peak_rms, level)


_EVENT_NAMES = {
    UserStartedSpeakingFrame: "user-started-speaking",
    UserStoppedSpeakingFrame: "user-stopped-speaking",
    BotStartedSpeakingFrame: "bot-started-speaking",
    BotStoppedSpeakingFrame: "bot-stopped-speaking",
}


def probe_echo_bot(stats: ProbeStats) -> Any:
    """The echo bot from bots/echo.py, its task instrumented to fill ``stats``."""
    echo = load_bot(ECHO_BOT)

    async def bot(call: Call) -> PipelineTask:
        stats.calls.append(call)
        task = PipelineTask(await echo(call), params=call.task_params(), call_id=call.call_id)
        task.add_observer(_InputProbe(stats))

        def on_downstream(frame: Frame) -> None:
            name = _EVENT_NAMES.get(type(frame))
            if name is not None:
                stats.events.append(name)
            elif type(frame) in (EndFrame, CancelFrame):
                stats.ended.set()

        task.on_downstream(on_downstream)
        return task

    return bot


def include_webrtc(app: Any) -> Any:
    """The app with the WebRTC routes (until create_app includes them itself)."""
    from voxpipe.server.webrtc import webrtc_router

    paths = {getattr(r, "path", None) for r in app.router.routes}
    if "/webrtc/offer" not in paths:
        app.include_router(webrtc_router())
    return app


def wav_microphone(path: Path, start_s: float = 0.0, seconds: float | None = None) -> Any:
    """An aiortc audio track playing part of a mono PCM16 WAV file in real time, then silence.

    aiortc is imported here, not at module level: the browser driver uses this module too.
    """
    from aiortc import MediaStreamTrack
    from av import AudioFrame

    wav = read_wav(path)
    assert wav.num_channels == 1, "the test microphone plays mono WAV files"
    rate = wav.sample_rate
    pcm = wav.pcm[int(start_s * rate) * 2 :]
    if seconds is not None:
        pcm = pcm[: int(seconds * rate) * 2]
    samples = rate // 50

    class WavMicrophone(MediaStreamTrack):  # type: ignore[misc]
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.pos = 0
            self.pts = 0
            self.t0: float | None = None

        async def recv(self) -> AudioFrame:
            loop = asyncio.get_running_loop()
            if self.t0 is None:
                self.t0 = loop.time()
            wait = self.t0 + self.pts / rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            n = 2 * samples
            chunk = pcm[self.pos : self.pos + n]
            self.pos += n
            chunk += bytes(n - len(chunk))
            frame = AudioFrame(format="s16", layout="mono", samples=samples)
            frame.planes[0].update(chunk)
            frame.sample_rate = rate
            frame.pts = self.pts
            frame.time_base = fractions.Fraction(1, rate)
            self.pts += samples
            return frame

    return WavMicrophone()
