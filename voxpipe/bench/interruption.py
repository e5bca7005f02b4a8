"""`voxpipe bench interruption`: from the VAD window that detects a barge-in to the flush on the wire.

A simulated phone call on the virtual clock: a fake bot streams a long reply (tone audio in
the wire's mu-law, faster than real time, so the output transport has plenty queued) and
the caller barges in at known instants with real speech (the test recording's utterances,
resampled to 8 kHz mu-law). The input transport runs Silero VAD and the interruption
guard; the sweep goes through the pipeline to the output transport, which flushes.

Measured with ``time.perf_counter`` (wall time, whatever clock drives the call): from the
moment the VAD window that decided the interruption has been processed to the clear
reaching the wire sink. Each clear is paired with its interruption by id (the barge-in's
number, the request frame, the sweep that answered it), never by position. A barge-in that
does not interrupt is a failure: counted in the percentiles as infinitely late and flagged
with ``ok: false`` (the CLI exits 1). Every bot chunk carries its reply's number, so a chunk
of an interrupted reply sent after that reply's clear is counted as stale (must be 0).

``mode="smart"`` (the served default, ``INTERRUPTION_MODE``) puts an ``InterruptionArbiter``
after a scripted STT: the bot's audio pauses at the onset, and a barge-in is decided either
by the caller's words (an interim "wait", or a sentence's second word, arriving 0.1-0.5 s
after the onset: the deciding event is that transcript's arrival) or, for one in three that
the STT says nothing about in time, by the VAD once the speech has lasted the arbiter's
``max_speech_secs`` (the deciding VAD window). Either way the latency is from the deciding
event to the clear on the wire. ``mode="immediate"``: the VAD guard alone, as before.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from voxpipe.audio.mulaw import pcm16_to_mulaw
from voxpipe.audio.resample import resample_pcm16
from voxpipe.audio.wav import read_wav
from voxpipe.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    InterruptionFrame,
    InterruptionRequestFrame,
    OutputAudioFrame,
    SystemFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from voxpipe.pipelines.clock import VirtualClock
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.turn.backchannel import InterruptionArbiter, InterruptionParams
from voxpipe.processors.vad.analyzer import VADAnalyzer, VADEvent, VADParams
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.input import BaseInputTransport
from voxpipe.transports.memory import MemorySink, MemoryTransport
from voxpipe.transports.output import BaseOutputTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

__all__ = [
    "BargeIn",
    "ToneBot",
    "order_statistic",
    "pair_barge_ins",
    "reply_tag",
    "run_interruption_bench",
]

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
    """The input transport, stamping each interruption it asks for and the sweep that answers it.

    ``barge_in`` is set by the bench to the number of the barge-in being played. Each
    request is recorded with that number, the request frame's id and the id of the
    ``InterruptionFrame`` the task's source sent in answer (it arrives here while the
    request is being pushed: the source sweeps before the push returns).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window_done = 0.0
        self.window_cpu = 0.0  # time.thread_time() at the same moment
        self.barge_in = -1
        self.requests: list[_Request] = []
        self._asking: _Request | None = None

    async def _analyze(self, vad: VADAnalyzer, pcm: bytes) -> list[VADEvent]:
        events = await super()._analyze(vad, pcm)
        self.window_done = time.perf_counter()
        self.window_cpu = time.thread_time()
        return events

    async def request_interruption(self, reason: str = "") -> None:
        frame = InterruptionRequestFrame(reason=reason)
        req = _Request(self.barge_in, frame.id, self.window_done, self.clock.now())
        req.cpu_done = self.window_cpu
        self.requests.append(req)
        self._asking = req
        try:
            await self.push_frame(frame, FrameDirection.UPSTREAM)
        finally:
            self._asking = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if type(frame) is InterruptionRequestFrame and direction is FrameDirection.UPSTREAM:
            # Asked for by a processor downstream (the arbiter, from words): the deciding
            # event's time was stamped by the STT just before it pushed that transcript.
            req = _Request(self.barge_in, frame.id, self.window_done, self.clock.now(), "words")
            req.cpu_done = self.window_cpu
            self.requests.append(req)
            self._asking = req
            try:
                await super().process_frame(frame, direction)
            finally:
                self._asking = None
            return
        await super().process_frame(frame, direction)

    async def _lifecycle(self, frame: Frame) -> None:
        if type(frame) is InterruptionFrame and self._asking is not None:
            self._asking.sweep_id = frame.id
        await super()._lifecycle(frame)


class _BenchSTT(FrameProcessor):
    """A scripted STT: what the caller says over the bot, as interim transcripts after the onset.

    Barge-in ``k`` gets, in turn: an interim "wait"; a sentence whose second word is the
    second interim; nothing (the VAD's limit decides). Each transcript is pushed at a random
    0.1-0.5 s after the onset, its arrival stamped on the input transport as the deciding event.
    """

    _SAID = (("wait",), ("I need", "I need some help"), ())

    def __init__(self, inp: _TimedInput, rng: np.random.Generator) -> None:
        super().__init__()
        self.inp = inp
        self.rng = rng

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        number = self.inp.barge_in
        if isinstance(frame, UserStartedSpeakingFrame) and number >= 0:
            said = self._SAID[number % len(self._SAID)]
            at = float(self.rng.uniform(0.1, 0.5))
            for i, text in enumerate(said):
                self.create_task(self._say(at + 0.1 * i, text), interruptible=False)

    async def _say(self, delay: float, text: str) -> None:
        await self.clock.sleep(delay)
        self.inp.window_done = time.perf_counter()
        self.inp.window_cpu = time.thread_time()
        await self.push_frame(InterimTranscriptionFrame(text))


class _TimedOutput(BaseOutputTransport):
    """The output transport, remembering which sweep it is handling when it flushes the wire."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweep_id: int | None = None

    async def _lifecycle(self, frame: Frame) -> None:
        if type(frame) is InterruptionFrame:
            self.sweep_id = frame.id
        try:
            await super()._lifecycle(frame)
        finally:
            self.sweep_id = None


class _TaggingSink(MemorySink):
    """A memory wire that tags each clear with the id of the sweep that sent it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output: _TimedOutput | None = None
        self.clear_perf: dict[int, float] = {}  # sweep id -> perf_counter of its clear
        self.clear_cpu: dict[int, float] = {}  # sweep id -> thread_time of its clear
        self.untagged_clears = 0

    async def send_clear(self) -> None:
        await super().send_clear()
        sweep = self.output.sweep_id if self.output is not None else None
        if sweep is None:
            self.untagged_clears += 1
        else:
            self.clear_perf.setdefault(sweep, self.events[-1].perf)
            self.clear_cpu.setdefault(sweep, time.thread_time())


class _BenchTransport(MemoryTransport):
    input_class = _TimedInput
    output_class = _TimedOutput


@dataclass(slots=True)
class _Request:
    """One interruption the input transport asked for, and the sweep that answered it."""

    barge_in: int
    request_id: int
    window_done: float  # perf_counter when the deciding VAD window (or words) had been processed
    at: float  # call clock
    by: str = "vad"  # what decided: the VAD's window, or the caller's words (the arbiter)
    sweep_id: int | None = None
    cpu_done: float = 0.0  # time.thread_time() with window_done


@dataclass(slots=True)
class BargeIn:
    """What became of one barge-in: the interruption it caused and the clear that followed."""

    number: int
    onset: float  # call clock, when the caller's speech began
    request_id: int | None = None
    sweep_id: int | None = None
    detect_ms: float | None = None  # onset to interruption, call clock
    latency_ms: float | None = None  # deciding VAD window to clear on the wire, wall time
    cpu_ms: float | None = None  # the same span in this thread's CPU time (no preemption)
    by: str = ""  # "vad" or "words"

    @property
    def missed(self) -> bool:
        """No interruption: the bot talked on over a full utterance."""
        return self.request_id is None

    @property
    def unflushed(self) -> bool:
        """Interrupted, but no clear for that sweep reached the wire."""
        return self.request_id is not None and self.latency_ms is None


def pair_barge_ins(
    onsets: list[float],
    requests: list[_Request],
    clear_perf: dict[int, float],
    clear_cpu: dict[int, float] | None = None,
) -> list[BargeIn]:
    """Match every barge-in to its first interruption request, and that request's sweep to its clear.

    Pairing goes by ids (barge-in number, request frame id, sweep frame id), never by
    position: a barge-in that missed, or an extra interruption, cannot shift the others.
    """
    out = [BargeIn(i, onset) for i, onset in enumerate(onsets)]
    for req in requests:
        if not 0 <= req.barge_in < len(out) or out[req.barge_in].request_id is not None:
            continue  # an interruption outside any barge-in, or a second one within it
        b = out[req.barge_in]
        b.request_id = req.request_id
        b.sweep_id = req.sweep_id
        b.detect_ms = (req.at - b.onset) * 1000.0
        b.by = req.by
        if req.sweep_id is not None and req.sweep_id in clear_perf:
            b.latency_ms = (clear_perf[req.sweep_id] - req.window_done) * 1000.0
            if clear_cpu is not None and req.sweep_id in clear_cpu:
                b.cpu_ms = (clear_cpu[req.sweep_id] - req.cpu_done) * 1000.0
    return out


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


def order_statistic(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile as an order statistic (no interpolation); None if it is a miss.

    Misses enter as ``inf``: with more than 1 % of barge-ins missed, the p99 is unbounded and
    reported as None (JSON null), never computed over the barge-ins that happened to work.
    """
    if not values:
        return None
    v = float(np.percentile(np.asarray(values, dtype=float), q, method="inverted_cdf"))
    return v if math.isfinite(v) else None


async def _call(
    n: int,
    clips: list[bytes],
    lead: float,
    seed: int,
    batched: bool,
    vad_params: VADParams,
    mode: Literal["smart", "immediate"],
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    params = TransportParams(audio_in=PHONE, audio_out=PHONE, vad_params=vad_params)
    sink = _TaggingSink(PHONE)
    transport = _BenchTransport(params, sink=sink, batched_vad=BatchedVAD() if batched else None)
    inp = transport.input()
    out = transport.output()
    assert isinstance(inp, _TimedInput) and isinstance(out, _TimedOutput)
    sink.output = out
    bot = ToneBot(PHONE)
    # Stand-ins for STT, filters and aggregators: the sweep crosses them as in a real bot.
    arbiter = InterruptionArbiter(InterruptionParams(mode=mode))
    stt = _BenchSTT(inp, np.random.default_rng(seed + 1)) if mode == "smart" else FrameProcessor()
    pipeline = Pipeline(
        [inp, stt, transport.guard(), arbiter, FrameProcessor(), bot, out, FrameProcessor()]
    )
    task = PipelineTask(pipeline, params=transport.task_params(), end_timeout=5.0)
    runner = asyncio.get_running_loop().create_task(task.run())
    await task.wait_started()
    clock = task.clock
    onsets: list[float] = []  # call-clock instant each barge-in's speech begins
    # Exactly n barge-ins, each a one-second utterance over the bot: every one must
    # interrupt. One that does not is a miss, reported as a failure, not replaced by another.
    for number in range(n):
        await task.queue_frame(TTSSpeakFrame("long reply"))
        while not out.bot_speaking:
            await transport.play_silence(0.02)
        await transport.play_silence(float(rng.uniform(0.3, 1.5)))
        inp.barge_in = number
        onsets.append(clock.now() + lead)
        await transport.play_wire(clips[number % len(clips)])
        # Let the caller's turn end and the bot fall silent before the next round (after a
        # miss the bot talks on to the end of its reply).
        for _ in range(600):
            if not inp.user_speaking and not out.bot_speaking:
                break
            await transport.play_silence(0.02)
        inp.barge_in = -1
    await task.queue_frame(EndFrame())
    await runner

    barge_ins = pair_barge_ins(onsets, inp.requests, sink.clear_perf, sink.clear_cpu)
    # A miss never flushed anything: it counts as infinitely late in the percentiles.
    latencies = [b.latency_ms if b.latency_ms is not None else math.inf for b in barge_ins]
    measured = [b.latency_ms for b in barge_ins if b.latency_ms is not None]
    cpu = [b.cpu_ms if b.cpu_ms is not None else math.inf for b in barge_ins]
    detect = [b.detect_ms for b in barge_ins if b.detect_ms is not None]
    by_words = [b.latency_ms for b in barge_ins if b.by == "words" and b.latency_ms is not None]
    by_vad = [b.latency_ms for b in barge_ins if b.by == "vad" and b.latency_ms is not None]
    missed = [b.number for b in barge_ins if b.missed]
    unflushed = [b.number for b in barge_ins if b.unflushed]
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
        "ok": not missed and not unflushed and stale == 0 and arbiter.backchannels == 0,
        "mode": mode,
        "n": n,
        "barge_ins": n,
        "interruptions": n - len(missed),
        "missed_barge_ins": len(missed),
        "missed_numbers": missed,
        "unflushed_interruptions": len(unflushed),
        "extra_interruptions": len(inp.requests) - (n - len(missed)),
        "interrupt_p50_ms": order_statistic(latencies, 50),
        "interrupt_p99_ms": order_statistic(latencies, 99),
        "interrupt_max_ms": order_statistic(latencies, 100),
        "measured_p50_ms": order_statistic(measured, 50),
        "cpu_p50_ms": order_statistic(cpu, 50),
        "cpu_p99_ms": order_statistic(cpu, 99),
        "decided_by_words": len(by_words),
        "decided_by_vad": len(by_vad),
        "words_p99_ms": order_statistic(by_words, 99),
        "vad_p99_ms": order_statistic(by_vad, 99),
        "pauses": out.pauses,
        "backchannels": arbiter.backchannels,
        "stale_chunks": stale,
        "chunks_dropped": out.chunks_dropped,
        "detect_p50_ms_call_time": statistics.median(detect) if detect else None,
        "call_seconds": clock.now(),
    }


def run_interruption_bench(
    n: int = 100,
    *,
    seed: int = 3,
    batched: bool = False,
    speech_wav: str | Path | None = None,
    vad_params: VADParams | None = None,
    mode: Literal["smart", "immediate"] = "smart",
) -> dict[str, Any]:
    """Run ``n`` barge-ins on a virtual-clock call and report interruption latency and failures.

    Every barge-in is a one-second utterance over the bot and must interrupt it. Keys:
    ``ok`` (no barge-in missed, every interruption flushed the wire, no stale chunk),
    ``interrupt_p50_ms``/``interrupt_p99_ms``/``interrupt_max_ms`` (wall ms from the deciding
    VAD window to the clear at the wire, over all ``n`` barge-ins: a miss counts as
    infinitely late, so a percentile it reaches is None), ``missed_barge_ins`` (and their
    numbers), ``unflushed_interruptions`` (no clear for the sweep), ``measured_p50_ms`` (over
    the interruptions that flushed), ``stale_chunks`` (interrupted reply audio sent after its
    clear), ``chunks_dropped`` (queued bot chunks the flushes discarded),
    ``detect_p50_ms_call_time`` (speech onset to interruption on the call clock: the VAD's
    start and the guard's minimum speech) and ``wall_seconds``. Clears are matched to
    interruptions by the sweep's frame id. ``batched`` runs the VAD through a
    ``BatchedVAD`` as the server does; ``vad_params`` replaces the VAD's defaults.
    ``mode``: ``smart`` (the served default: an interruption arbiter decides from words, or
    the VAD after its ``max_speech_secs``; utterances of 1.2 s so that limit is reached) or
    ``immediate`` (the VAD guard alone, one-second utterances). In smart mode
    ``decided_by_words``/``decided_by_vad`` count what decided, with ``words_p99_ms`` /
    ``vad_p99_ms`` (deciding event to clear), ``pauses`` (the bot's audio paused at an
    onset) and ``backchannels`` (barge-ins wrongly judged backchannels: must be 0).
    ``cpu_p50_ms``/``cpu_p99_ms``: the same span in the event loop thread's CPU time, which a
    shared machine's preemption does not inflate (the work the barge-in costs).
    """
    path = Path(speech_wav) if speech_wav is not None else _DATA / "speech_16k.wav"
    if not path.is_file():
        raise FileNotFoundError(
            f"speech recording {path} not found: run from a voxpipe checkout or pass "
            "speech_wav= a 16 kHz WAV with its .json truth beside it"
        )
    lead = 0.1
    clips = _barge_in_clips(path, lead=lead, length=1.2 if mode == "smart" else 1.0)
    t0 = time.perf_counter()
    vad = vad_params if vad_params is not None else VADParams()
    result = VirtualClock().run(_call(n, clips, lead, seed, batched, vad, mode))
    result["wall_seconds"] = time.perf_counter() - t0
    return result


if __name__ == "__main__":  # pragma: no cover - manual run
    print(json.dumps(run_interruption_bench(), indent=2))
