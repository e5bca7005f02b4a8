"""`voxpipe bench interruption`: from the VAD window that detects a barge-in to the flush on the wire.

A simulated phone call on the virtual clock: a fake bot streams a long reply (tone audio in
the wire's mu-law, faster than real time, so the output transport has plenty queued) and
the caller barges in at known instants with real speech (the test recording's utterances,
resampled to 8 kHz mu-law). The input transport runs Silero VAD and the interruption
guard; the sweep goes through the pipeline to the output transport, which flushes.

Measured with ``time.perf_counter`` (wall time, whatever clock drives the call): from the
moment the VAD window that decided the interruption has been processed to the clear
reaching the wire sink. Every bot chunk carries its reply's number, so a chunk of an
interrupted reply sent after that reply's clear is counted as stale (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.audio.mulaw import pcm16_to_mulaw
from voxpipe.audio.resample import resample_pcm16
from voxpipe.audio.wav import read_wav
from voxpipe.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    OutputAudioFrame,
    SystemFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.clock import VirtualClock
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.vad.analyzer import VADAnalyzer, VADEvent
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.input import BaseInputTransport
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

__all__ = ["ToneBot", "run_interruption_bench", "reply_tag"]

_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
PHONE = AudioFormat("mulaw", 8000)
CHUNK = PHONE.bytes_per_20ms


def reply_tag(chunk: bytes) -> int:
    """The reply number a ``ToneBot`` chunk carries in its first two bytes."""
    return int.from_bytes(chunk[:2], "little")


class ToneBot(FrameProcessor):
    """A fake bot and TTS: each ``TTSSpeakFrame`` becomes a long tone reply streamed in the wire codec.

    Audio comes in ``frame_ms`` frames ``speed`` times faster than real time (as a streaming
    TTS delivers it), a ``TTSTextFrame`` after every ``word_secs`` of it. Every 20 ms chunk
    starts with the reply's number (two bytes), so a test can tell which reply a chunk on
    the wire belongs to. The reply is an owned interruptible task: the sweep stops it.
    Ordered frames arriving during a reply follow its audio, as a real TTS keeps them.
    """

    def __init__(
        self,
        fmt: AudioFormat = PHONE,
        *,
        reply_secs: float = 6.0,
        frame_ms: int = 100,
        speed: float = 4.0,
        word_secs: float = 0.3,
    ) -> None:
        super().__init__()
        self.fmt = fmt
        self.reply_secs = reply_secs
        self.frame_ms = frame_ms
        self.speed = speed
        self.word_secs = word_secs
        self.replies = 0
        self._speaking = False
        self._after: list[Frame] = []
        width = 1 if fmt.encoding == "mulaw" else 2
        self._chunk = fmt.sample_rate // 50 * width
        t = np.arange(fmt.sample_rate * frame_ms // 1000) / fmt.sample_rate
        tone = (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
        self._frame = pcm16_to_mulaw(tone) if fmt.encoding == "mulaw" else tone

    def _tagged(self, reply: int) -> bytes:
        buf = bytearray(self._frame)
        tag = reply.to_bytes(2, "little")
        for i in range(0, len(buf), self._chunk):
            buf[i : i + 2] = tag
        return bytes(buf)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if (
            isinstance(frame, TTSSpeakFrame)
            and direction is FrameDirection.DOWNSTREAM
            and not self._speaking
        ):
            self.replies += 1
            self._speaking = True
            self.create_task(self._speak(self.replies), name="speak")
            return
        if (
            self._speaking
            and direction is FrameDirection.DOWNSTREAM
            and not isinstance(frame, SystemFrame | EndFrame)
        ):
            self._after.append(frame)
            return
        await self.push_frame(frame, direction)

    async def on_interruption(self) -> None:
        self._speaking = False
        self._after = []

    async def _speak(self, reply: int) -> None:
        audio = self._tagged(reply)
        frames = round(self.reply_secs * 1000 / self.frame_ms)
        per_word = max(1, round(self.word_secs * 1000 / self.frame_ms))
        await self.push_frame(TTSStartedFrame())
        for i in range(frames):
            await self.clock.sleep(self.frame_ms / 1000 / self.speed)
            await self.push_frame(
                OutputAudioFrame(
                    audio=audio, sample_rate=self.fmt.sample_rate, encoding=self.fmt.encoding
                )
            )
            if (i + 1) % per_word == 0:
                await self.push_frame(TTSTextFrame(f"w{reply}.{(i + 1) // per_word}"))
        await self.push_frame(TTSStoppedFrame())
        self._speaking = False
        after, self._after = self._after, []
        for f in after:  # a TTSSpeakFrame among them starts the next reply
            await self.process_frame(f, FrameDirection.DOWNSTREAM)

    async def on_end(self, frame: EndFrame) -> None:
        while self.owned_tasks:  # a reply may start the next one queued behind it
            await self.wait_for_tasks()
            await asyncio.sleep(0)


class _TimedInput(BaseInputTransport):
    """The input transport, stamping when each VAD call returns and when it interrupts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window_done = 0.0
        self.stamps: list[tuple[float, float]] = []  # (perf_counter of the window, call clock)

    async def _analyze(self, vad: VADAnalyzer, pcm: bytes) -> list[VADEvent]:
        events = await super()._analyze(vad, pcm)
        self.window_done = time.perf_counter()
        return events

    async def _interrupt(self, reason: str) -> None:
        self.stamps.append((self.window_done, self.clock.now()))
        await super()._interrupt(reason)


class _BenchTransport(MemoryTransport):
    input_class = _TimedInput


def _barge_in_clips(speech_wav: Path, lead: float, length: float) -> list[bytes]:
    """Utterance openings from the recording as 8 kHz mu-law, each ``lead`` s before the onset."""
    truth = json.loads(speech_wav.with_suffix(".json").read_text())
    audio = read_wav(speech_wav)
    pcm = np.frombuffer(resample_pcm16(audio.pcm, audio.sample_rate, 8000), dtype="<i2")
    clips = []
    for onset, end in truth["segments"]["8000"]:
        a = max(0, round((onset - lead) * 8000))
        b = min(len(pcm), round(min(end, onset + length) * 8000))
        clips.append(pcm16_to_mulaw(pcm[a:b].tobytes()))
    return clips


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _call(
    n: int, clips: list[bytes], lead: float, seed: int, batched: bool
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    params = TransportParams(audio_in=PHONE, audio_out=PHONE)
    transport = _BenchTransport(params, batched_vad=BatchedVAD() if batched else None)
    inp = transport.input()
    out = transport.output()
    assert isinstance(inp, _TimedInput)
    bot = ToneBot(PHONE)
    # Stand-ins for STT, filters and aggregators: the sweep crosses them as in a real bot.
    pipeline = Pipeline(
        [inp, FrameProcessor(), transport.guard(), FrameProcessor(), bot, out, FrameProcessor()]
    )
    task = PipelineTask(pipeline, params=transport.task_params(), end_timeout=5.0)
    runner = asyncio.get_running_loop().create_task(task.run())
    await task.wait_started()
    clock = task.clock
    sink = transport.memory_sink
    onsets: list[float] = []  # call-clock instant each barge-in's speech begins
    missed = 0
    rounds = 0
    # Until n interruptions were measured: a barge-in the VAD hears as shorter than the
    # guard's minimum speech does not interrupt (counted as missed), as in a real call.
    while len(inp.stamps) < n and rounds < 2 * n + 10:
        await task.queue_frame(TTSSpeakFrame("long reply"))
        while not out.bot_speaking:
            await transport.play_silence(0.02)
        await transport.play_silence(float(rng.uniform(0.3, 1.5)))
        before = len(inp.stamps)
        onsets.append(clock.now() + lead)
        await transport.play_wire(clips[rounds % len(clips)])
        rounds += 1
        # Let the caller's turn end and the bot fall silent before the next round.
        for _ in range(200):
            if not inp.user_speaking and not out.bot_speaking:
                break
            await transport.play_silence(0.02)
        if len(inp.stamps) == before:
            missed += 1
            onsets.pop()
    await task.queue_frame(EndFrame())
    await runner

    # Pair each interruption with the clear that followed it.
    clears = sink.clears
    latencies = [
        (clear.perf - t0) * 1000.0 for (t0, _), clear in zip(inp.stamps, clears, strict=False)
    ]
    detect = [(t - onset) * 1000.0 for (_, t), onset in zip(inp.stamps, onsets, strict=False)]
    stale = 0
    newest = 0
    cleared_upto = 0
    for ev in sink.events:
        if ev.kind == "clear":
            cleared_upto = newest
        elif ev.kind == "audio":
            tag = reply_tag(ev.audio)
            if tag <= cleared_upto:
                stale += 1
            newest = max(newest, tag)
    return {
        "n": len(latencies),
        "interrupt_p50_ms": _percentile(latencies, 50),
        "interrupt_p99_ms": _percentile(latencies, 99),
        "interrupt_max_ms": max(latencies) if latencies else float("nan"),
        "stale_chunks": stale,
        "missed_barge_ins": missed,
        "chunks_dropped": out.chunks_dropped,
        "detect_p50_ms_call_time": statistics.median(detect) if detect else float("nan"),
        "call_seconds": clock.now(),
    }


def run_interruption_bench(
    n: int = 100,
    *,
    seed: int = 3,
    batched: bool = False,
    speech_wav: str | Path | None = None,
) -> dict[str, Any]:
    """Run ``n`` barge-ins on a virtual-clock call and report interruption latency and stale chunks.

    Keys: ``interrupt_p50_ms``/``interrupt_p99_ms`` (wall ms from the deciding VAD window to
    the clear at the wire), ``stale_chunks`` (interrupted reply audio sent after its clear),
    ``n`` (interruptions measured), plus ``missed_barge_ins``, ``chunks_dropped`` (queued
    bot chunks the flushes discarded), ``detect_p50_ms_call_time`` (speech onset to
    interruption on the call clock: the VAD's start and the guard's minimum speech) and
    ``wall_seconds``. ``batched`` runs the VAD through a ``BatchedVAD`` as the server does.
    """
    path = Path(speech_wav) if speech_wav is not None else _DATA / "speech_16k.wav"
    if not path.is_file():
        raise FileNotFoundError(
            f"speech recording {path} not found: run from a voxpipe checkout or pass "
            "speech_wav= a 16 kHz WAV with its .json truth beside it"
        )
    lead = 0.1
    clips = _barge_in_clips(path, lead=lead, length=1.0)
    t0 = time.perf_counter()
    result = VirtualClock().run(_call(n, clips, lead, seed, batched))
    result["wall_seconds"] = time.perf_counter() - t0
    return result


if __name__ == "__main__":  # pragma: no cover - manual run
    print(json.dumps(run_interruption_bench(), indent=2))
