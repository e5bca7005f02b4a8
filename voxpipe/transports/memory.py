"""In-memory wire for tests and benchmarks: records what the bot sends and plays it like a phone.

``MemorySink`` is a ``WireSink`` that keeps every send (audio chunk, clear, mark) with the
call-clock time and a ``time.perf_counter`` stamp, and simulates the far end's player the
way Twilio behaves: audio plays in real time from the moment it arrives, a clear discards
what was buffered but not yet played, and marks are echoed once the audio sent before them
has played (or at once, on a clear). ``MemoryTransport`` pairs it with the transport
processors and feeds caller audio paced on the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxpipe.audio.convert import AudioConverter, bytes_per_sample, to_pcm16
from voxpipe.audio.mulaw import MULAW_SILENCE
from voxpipe.pipelines.clock import clock_for_running_loop
from voxpipe.processors.vad.analyzer import VADAnalyzer
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.base import Transport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

__all__ = ["MemorySink", "MemoryTransport", "PlayedAudio", "SentEvent", "silence"]


def silence(fmt: AudioFormat, seconds: float) -> bytes:
    """``seconds`` of digital silence in ``fmt``."""
    samples = round(fmt.sample_rate * seconds)
    if fmt.encoding == "mulaw":
        return bytes([MULAW_SILENCE]) * samples
    return bytes(2 * samples)


@dataclass(slots=True)
class SentEvent:
    """One thing the output transport sent: ``kind`` is "audio", "clear" or "mark"."""

    kind: str
    time: float  # call clock
    perf: float  # time.perf_counter() when the sink got it
    audio: bytes = b""
    name: str = ""
    play_start: float = 0.0  # audio: when the far end starts playing it


@dataclass(slots=True)
class PlayedAudio:
    """A chunk the far end played (``audio`` cut short where a clear stopped it)."""

    start: float
    audio: bytes


@dataclass(slots=True)
class _Buffered:
    start: float
    audio: bytes


class MemorySink:
    """A ``WireSink`` that records sends and simulates the far end's playback, clears and marks.

    ``on_mark`` (set by ``MemoryTransport`` to the output's ``mark_played``) receives echoes,
    ``echo_delay`` seconds after the audio before the mark finished playing (network time).
    After ``close()`` every send raises ``ConnectionError``, like a dead socket.
    """

    def __init__(
        self,
        audio_format: AudioFormat | None = None,
        *,
        supports_marks: bool = True,
        echo_marks: bool = True,
        echo_delay: float = 0.0,
    ) -> None:
        self.audio_format = audio_format if audio_format is not None else AudioFormat()
        self.supports_marks = supports_marks
        self.echo_marks = echo_marks
        self.echo_delay = echo_delay
        self.on_mark: Callable[[str], None] | None = None
        self.events: list[SentEvent] = []
        self.closed = False
        self._bytes_per_sec = self.audio_format.sample_rate * bytes_per_sample(
            self.audio_format.encoding
        )
        self._width = bytes_per_sample(self.audio_format.encoding)
        self._play_end = 0.0
        self._buffer: list[_Buffered] = []  # what the far end played or will play
        self._marks: dict[str, asyncio.TimerHandle] = {}
        self.echoed: list[str] = []

    # ------------------------------------------------------------------ WireSink

    async def send_audio(self, audio: bytes) -> None:
        now = self._check()
        start = max(self._play_end, now)
        self._play_end = start + len(audio) / self._bytes_per_sec
        self.events.append(
            SentEvent("audio", now, time.perf_counter(), audio=bytes(audio), play_start=start)
        )
        self._buffer.append(_Buffered(start, bytes(audio)))

    async def send_clear(self) -> None:
        now = self._check()
        self.events.append(SentEvent("clear", now, time.perf_counter()))
        # Chunks are in play order: only the tail still playing or waiting is affected.
        buf = self._buffer
        i = len(buf)
        while i and buf[i - 1].start + len(buf[i - 1].audio) / self._bytes_per_sec > now:
            i -= 1
        tail = buf[i:]
        del buf[i:]
        for b in tail:
            if b.start < now:  # cut where the clear stopped it; later chunks never played
                played = int((now - b.start) * self._bytes_per_sec) // self._width * self._width
                buf.append(_Buffered(b.start, b.audio[:played]))
        self._play_end = min(self._play_end, now)
        # Like Twilio: every pending mark comes back at once.
        pending, self._marks = self._marks, {}
        for name, handle in pending.items():
            handle.cancel()
            self._echo(name)

    async def send_mark(self, name: str) -> None:
        now = self._check()
        self.events.append(SentEvent("mark", now, time.perf_counter(), name=name))
        if not self.echo_marks:
            return
        delay = max(0.0, self._play_end - now) + self.echo_delay
        loop = asyncio.get_running_loop()
        self._marks[name] = loop.call_later(delay, self._echo_later, name)

    # ------------------------------------------------------------------ the far end

    def _check(self) -> float:
        if self.closed:
            raise ConnectionError("the call's connection is closed")
        return clock_for_running_loop().now()

    def _echo_later(self, name: str) -> None:
        self._marks.pop(name, None)
        self._echo(name)

    def _echo(self, name: str) -> None:
        self.echoed.append(name)
        if self.on_mark is not None:
            self.on_mark(name)

    def close(self) -> None:
        """The far end hangs up: sends fail from now on."""
        self.closed = True
        for handle in self._marks.values():
            handle.cancel()
        self._marks.clear()

    # ------------------------------------------------------------------ inspection

    @property
    def audio_events(self) -> list[SentEvent]:
        return [e for e in self.events if e.kind == "audio"]

    @property
    def clears(self) -> list[SentEvent]:
        return [e for e in self.events if e.kind == "clear"]

    def played(self) -> list[PlayedAudio]:
        """Audio the far end has played (or will play, if nothing clears it), in order."""
        return [PlayedAudio(b.start, b.audio) for b in self._buffer if b.audio]

    def played_seconds(self, until: float | None = None) -> float:
        """Seconds of audio the far end played up to ``until`` (default: all it holds)."""
        total = 0.0
        for b in self._buffer:
            d = len(b.audio) / self._bytes_per_sec
            if until is not None:
                d = max(0.0, min(d, until - b.start))
            total += d
        return total

    def render_pcm16(self, start: float = 0.0, end: float | None = None) -> bytes:
        """What the caller heard from ``start`` (call clock) as PCM16, silence between utterances."""
        rate = self.audio_format.sample_rate
        chunks = self.played()
        if end is None:
            end = max((c.start + len(c.audio) / self._bytes_per_sec for c in chunks), default=start)
        n = max(0, round((end - start) * rate))
        out = np.zeros(n, dtype="<i2")
        for c in chunks:
            pcm = np.frombuffer(to_pcm16(c.audio, self.audio_format.encoding), dtype="<i2")
            at = round((c.start - start) * rate)
            lo, hi = max(0, at), min(n, at + len(pcm))
            if hi > lo:
                out[lo:hi] = pcm[lo - at : hi - at]
        return out.tobytes()


class MemoryTransport(Transport):
    """A transport whose wire is a ``MemorySink``, with helpers to play the caller's side.

    ``await transport.play_caller(pcm, rate)`` converts PCM16 to the wire format and feeds it
    in ``chunk_ms`` chunks paced on the call clock, like a telephony socket delivers it.
    """

    def __init__(
        self,
        params: TransportParams | None = None,
        *,
        sink: MemorySink | None = None,
        vad: VADAnalyzer | None = None,
        batched_vad: BatchedVAD | None = None,
        name: str = "memory",
    ) -> None:
        params = params if params is not None else TransportParams()
        if sink is None:
            sink = MemorySink(params.audio_out)
        super().__init__(sink, params, vad=vad, batched_vad=batched_vad, name=name)
        self.memory_sink: MemorySink = sink
        sink.on_mark = self.output().mark_played
        self._next_feed: float | None = None

    @property
    def input_chunk_bytes(self) -> int:
        fmt = self.params.audio_in
        return fmt.sample_rate * self.params.chunk_ms // 1000 * bytes_per_sample(fmt.encoding)

    def to_wire(self, pcm: bytes, sample_rate: int) -> bytes:
        """PCM16 audio at ``sample_rate`` in the wire's input format."""
        fmt = self.params.audio_in
        conv = AudioConverter("pcm16", sample_rate, fmt.encoding, fmt.sample_rate)
        return conv.process(pcm) + conv.flush()

    async def play_wire(self, audio: bytes) -> None:
        """Feed wire-format audio in real-time-paced chunks (continuing the previous feed's pace)."""
        clock = clock_for_running_loop()
        size = self.input_chunk_bytes
        step = self.params.chunk_ms / 1000
        t = self._next_feed if self._next_feed is not None else clock.now()
        t = max(t, clock.now() - step)  # after a pause, do not rush to catch up
        for i in range(0, len(audio), size):
            await clock.sleep_until(t)
            await self.push_wire_audio(audio[i : i + size])
            t += step
        self._next_feed = t

    async def play_caller(self, pcm: bytes, sample_rate: int) -> None:
        """Feed PCM16 caller audio (converted to the wire format), paced on the clock."""
        await self.play_wire(self.to_wire(pcm, sample_rate))

    async def play_silence(self, seconds: float) -> None:
        """Feed ``seconds`` of line silence, paced on the clock."""
        await self.play_wire(silence(self.params.audio_in, seconds))
