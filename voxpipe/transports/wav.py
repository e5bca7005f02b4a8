"""WAV file transport, for `voxpipe call`: a caller recording in, the bot's side of the call out.

The caller WAV is converted to the wire format (phone mu-law 8 kHz by default, so the bot
runs exactly as on a phone line) and fed as wire audio in real-time-paced 20 ms chunks on
the call clock; on a virtual clock a minute of call takes a fraction of a second. When the
recording is over, line silence follows until the bot has finished (nothing queued, not
speaking, and ``settle_secs`` without any speech from either side), at most
``max_tail_secs``; then the call ends gracefully. The output WAV holds what the caller
heard, placed at the right times: silence where the bot is silent, cut where the caller
interrupted. With ``stereo`` the caller is on the left channel and the bot on the right.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.audio.convert import AudioConverter, bytes_per_sample, to_pcm16
from voxpipe.audio.resample import resample_pcm16
from voxpipe.audio.wav import WavAudio, read_wav, write_wav
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndTaskFrame,
    Frame,
    FrameDirection,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
)
from voxpipe.pipelines.clock import Clock, VirtualClock, current_clock_is_virtual
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.vad.analyzer import VADAnalyzer, VADEvent
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.input import BaseInputTransport
from voxpipe.transports.memory import MemorySink, MemoryTransport, silence
from voxpipe.transports.params import TransportParams

__all__ = ["WavCallResult", "WavFileTransport", "WavInputTransport", "run_wav_call"]


class WavInputTransport(BaseInputTransport):
    """Feeds a recording as the caller's wire audio, then silence until the bot is done, then ends.

    ``caller_audio`` is already in ``params.audio_in``. The feed runs in an owned task that
    starts with the call; ``finished_by`` tells why the feed ended ("settled" or "max tail").
    """

    def __init__(
        self,
        params: TransportParams,
        caller_audio: bytes,
        *,
        settle_secs: float = 2.0,
        max_tail_secs: float = 30.0,
        vad: VADAnalyzer | None = None,
        batched_vad: BatchedVAD | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(params, vad=vad, batched_vad=batched_vad, name=name)
        self.caller_audio = caller_audio
        self.settle_secs = settle_secs
        self.max_tail_secs = max_tail_secs
        self.started_at: float | None = None
        self.finished_by = ""
        self._last_event = 0.0

    async def on_start(self, frame: StartFrame) -> None:
        await super().on_start(frame)
        self.create_task(self._feed(), name="wav-feed", interruptible=False)

    async def _analyze(self, vad: VADAnalyzer, pcm: bytes) -> list[VADEvent]:
        events = await super()._analyze(vad, pcm)
        if events:
            self._last_event = self.clock.now()
        return events

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, BotStartedSpeakingFrame | BotStoppedSpeakingFrame):
            self._last_event = self.clock.now()
        await super().process_frame(frame, direction)

    def _bot_done(self) -> bool:
        out = self._output
        if out is not None and not out.idle:
            return False
        quiet = self.clock.now() - self._last_event
        return not self.user_speaking and quiet >= self.settle_secs - 1e-9

    async def _feed(self) -> None:
        clock = self.clock
        fmt = self.params.audio_in
        step = self.params.chunk_ms / 1000
        size = len(silence(fmt, step))
        t0 = self.started_at = clock.now()
        audio = self.caller_audio
        n = 0
        for i in range(0, len(audio), size):
            await clock.sleep_until(t0 + n * step)
            await self.push_wire_audio(audio[i : i + size])
            n += 1
        input_end = t0 + n * step
        self._last_event = max(self._last_event, input_end)
        quiet = silence(fmt, step)
        while True:
            await clock.sleep_until(t0 + n * step)
            if self._bot_done():
                self.finished_by = "settled"
                break
            if clock.now() - input_end >= self.max_tail_secs:
                self.finished_by = "max tail"
                self.logger.warning(
                    "the bot was still busy %.0fs after the caller's recording ended: ending",
                    self.max_tail_secs,
                )
                break
            await self.push_wire_audio(quiet)
            n += 1
        await self.push_frame(EndTaskFrame(reason="recording finished"), FrameDirection.UPSTREAM)


def _mono(audio: WavAudio) -> bytes:
    if audio.num_channels == 1:
        return audio.pcm
    x = np.frombuffer(audio.pcm, dtype="<i2").reshape(-1, audio.num_channels)
    mono: bytes = x.mean(axis=1).round().astype("<i2").tobytes()
    return mono


class WavFileTransport(MemoryTransport):
    """A call whose caller is a WAV recording and whose far end is recorded for a WAV file."""

    def __init__(
        self,
        caller: str | os.PathLike[str] | WavAudio,
        params: TransportParams | None = None,
        *,
        settle_secs: float = 2.0,
        max_tail_secs: float = 30.0,
        vad: VADAnalyzer | None = None,
        batched_vad: BatchedVAD | None = None,
        name: str = "wav",
    ) -> None:
        params = params if params is not None else TransportParams()
        wav = caller if isinstance(caller, WavAudio) else read_wav(caller)
        fmt = params.audio_in
        conv = AudioConverter("pcm16", wav.sample_rate, fmt.encoding, fmt.sample_rate)
        self._caller_wire = conv.process(_mono(wav)) + conv.flush()
        self._settle_secs = settle_secs
        self._max_tail_secs = max_tail_secs
        super().__init__(
            params,
            sink=MemorySink(params.audio_out),
            vad=vad,
            batched_vad=batched_vad,
            name=name,
        )

    def _make_input(
        self, *, vad: VADAnalyzer | None, batched_vad: BatchedVAD | None
    ) -> BaseInputTransport:
        return WavInputTransport(
            self.params,
            self._caller_wire,
            settle_secs=self._settle_secs,
            max_tail_secs=self._max_tail_secs,
            vad=vad,
            batched_vad=batched_vad,
            name=f"{self.name}.input",
        )

    @property
    def caller_audio(self) -> bytes:
        """The caller's recording in the wire's input format."""
        return self._caller_wire

    @property
    def caller_seconds(self) -> float:
        """Length of the caller's recording."""
        fmt = self.params.audio_in
        return len(self._caller_wire) / (fmt.sample_rate * bytes_per_sample(fmt.encoding))

    @property
    def wav_input(self) -> WavInputTransport:
        inp = self.input()
        assert isinstance(inp, WavInputTransport)
        return inp

    def render(self, end: float | None = None, *, stereo: bool = False) -> tuple[bytes, int, int]:
        """(PCM16, sample rate, channels) of the call as the caller heard it, from its start."""
        start = self.wav_input.started_at or 0.0
        rate = self.params.audio_out.sample_rate
        bot = np.frombuffer(self.memory_sink.render_pcm16(start, end), dtype="<i2")
        if not stereo:
            return bot.tobytes(), rate, 1
        fmt = self.params.audio_in
        caller_pcm = resample_pcm16(
            to_pcm16(self._caller_wire, fmt.encoding), fmt.sample_rate, rate
        )
        caller = np.frombuffer(caller_pcm, dtype="<i2")
        n = max(len(bot), len(caller))
        both = np.zeros((n, 2), dtype="<i2")
        both[: len(caller), 0] = caller
        both[: len(bot), 1] = bot
        return both.tobytes(), rate, 2

    def write(
        self, path: str | os.PathLike[str], end: float | None = None, *, stereo: bool = False
    ) -> None:
        """Write the call as the caller heard it to a WAV file."""
        pcm, rate, channels = self.render(end, stereo=stereo)
        write_wav(path, pcm, rate, channels)


@dataclass(slots=True)
class WavCallResult:
    """What a WAV call did: its length, the bot's speech heard, interruptions, and the text seen."""

    output: Path
    call_seconds: float
    bot_seconds: float
    interruptions: int
    end_reason: str
    finished_by: str
    # (call time, frame type, text) of each text or transcription frame leaving the pipeline
    texts: list[tuple[float, str, str]] = field(default_factory=list)


BuildResult = FrameProcessor | Sequence[FrameProcessor]
Build = Callable[[WavFileTransport], BuildResult | Awaitable[BuildResult]]


async def _run_call(
    build: Build,
    transport: WavFileTransport,
    output: Path,
    *,
    metadata: dict[str, Any] | None,
    stereo: bool,
    end_timeout: float,
) -> WavCallResult:
    built = build(transport)
    if inspect.isawaitable(built):
        built = await built
    pipeline = built if isinstance(built, FrameProcessor) else Pipeline(list(built))
    procs = set(pipeline.processors())
    if transport.input() not in procs or transport.output() not in procs:
        raise ValueError(
            "the bot's pipeline must contain transport.input() (first) and transport.output() "
            "(after the TTS) of the transport it was given"
        )
    meta = {"call_id": "wav-call", "caller": "wav", **(metadata or {})}
    task = PipelineTask(
        pipeline,
        params=transport.task_params(meta),
        call_id=str(meta["call_id"]),
        end_timeout=end_timeout,
    )
    texts: list[tuple[float, str, str]] = []

    def seen(frame: Frame) -> None:
        if isinstance(frame, TextFrame | TranscriptionFrame):
            texts.append((task.clock.now(), type(frame).__name__, frame.text))

    task.on_downstream(seen)
    await task.run()
    end = task.clock.now()
    transport.write(output, end, stereo=stereo)
    started = transport.wav_input.started_at or 0.0
    return WavCallResult(
        output=output,
        call_seconds=end - started,
        bot_seconds=transport.memory_sink.played_seconds(until=end),
        interruptions=transport.input().interruptions,
        end_reason=task.end_reason,
        finished_by=transport.wav_input.finished_by,
        texts=[(t - started, kind, text) for t, kind, text in texts],
    )


async def run_wav_call(
    build: Build,
    caller_wav: str | os.PathLike[str],
    output_wav: str | os.PathLike[str],
    *,
    params: TransportParams | None = None,
    metadata: dict[str, Any] | None = None,
    settle_secs: float = 2.0,
    max_tail_secs: float = 30.0,
    stereo: bool = False,
    clock: Clock | None = None,
    end_timeout: float = 10.0,
    batched_vad: BatchedVAD | None = None,
) -> WavCallResult:
    """Run a bot on a caller recording and write what the caller would have heard.

    ``build(transport)`` returns the bot's pipeline (a processor or a list) using
    ``transport.input()`` and ``transport.output()``. By default the call runs on a virtual
    clock (in a worker thread, so this works from any event loop); pass ``clock=Clock()`` to
    run in real time on the current loop, e.g. when the bot talks to servers over sockets.
    """
    transport = WavFileTransport(
        caller_wav,
        params,
        settle_secs=settle_secs,
        max_tail_secs=max_tail_secs,
        batched_vad=batched_vad,
    )
    out = Path(output_wav)
    kwargs: dict[str, Any] = dict(metadata=metadata, stereo=stereo, end_timeout=end_timeout)
    if clock is None:
        clock = VirtualClock()
    if isinstance(clock, VirtualClock) and not current_clock_is_virtual():
        vclock = clock
        return await asyncio.to_thread(
            lambda: vclock.run(_run_call(build, transport, out, **kwargs))
        )
    return await _run_call(build, transport, out, **kwargs)
