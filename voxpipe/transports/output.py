"""BaseOutputTransport: bot audio to the wire, paced, flushed on interruption, text released when heard."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any

from voxpipe.audio.chunker import Chunker
from voxpipe.audio.convert import AudioConverter, bytes_per_sample
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    InterruptionFrame,
    OutputAudioFrame,
    PauseBotOutputFrame,
    ResumeBotOutputFrame,
    StartFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.frames import (
    DisableInterruptionsFrame,
    EnableInterruptionsFrame,
    InterruptionsAllowedFrame,
)
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import WireSink

__all__ = ["BaseOutputTransport"]

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM


class _Queue:
    """FIFO with an awaitable "not empty" and a count of items taken but not yet finished."""

    __slots__ = ("items", "_ready", "_unfinished", "_idle")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, item: Any) -> None:
        self.items.append(item)
        self._unfinished += 1
        self._idle.clear()
        self._ready.set()

    async def wait_item(self) -> None:
        """Return once an item is queued (without taking it)."""
        while not self.items:
            self._ready.clear()
            await self._ready.wait()

    async def get(self) -> Any:
        await self.wait_item()
        return self.items.popleft()

    def task_done(self) -> None:
        self._unfinished -= 1
        if self._unfinished <= 0:
            self._idle.set()

    async def join(self) -> None:
        """Return once every item put has been taken and finished."""
        await self._idle.wait()


class _Pending:
    """An ordered frame, queued after its audio and then waiting until that audio has played."""

    __slots__ = ("frame", "tail", "release_at", "mark")

    def __init__(self, frame: Frame, tail: float = 0.0) -> None:
        self.frame = frame
        # Seconds of its audio still in the chunker when it was queued: they go out at the
        # head of the next chunk, so the frame waits that much past the chunks before it.
        self.tail = tail
        self.release_at = 0.0  # clock time the audio before it ends playing (estimate)
        self.mark: asyncio.Future[bool] | None = None  # echoed once the chunks before it played


class BaseOutputTransport(FrameProcessor):
    """Last stop before the wire: paces bot audio out, keeps frames in step with what was heard.

    ``OutputAudioFrame``s (any encoding and rate) are converted to ``params.audio_out`` and
    cut into ``chunk_ms`` chunks, all of the same size (the last of a reply is padded with
    silence, as some wires take whole frames only); every ordered (data/control) frame joins
    the same queue.
    A sender task writes chunks to the ``WireSink`` on ``self.clock``, keeping the far end's
    buffer ``output_lead_secs`` ahead of real time. An ordered frame goes on downstream only
    once the audio queued before it has *played*: on the clock estimate (the far end plays
    from the moment audio arrives), or, where the wire echoes marks, when the mark sent right
    after that audio comes back. So ``TTSTextFrame``s reach the assistant aggregator as the
    caller hears them, and an ``EndFrame`` passes only after the last audio played.

    ``BotStartedSpeakingFrame`` (when the first chunk of an utterance goes out) and
    ``BotStoppedSpeakingFrame`` (once its last chunk played, or at a flush) are pushed both
    downstream and upstream.

    On ``InterruptionFrame`` everything queued is dropped (an ``EndFrame`` is kept), a chunk
    being written is awaited, then the wire's ``send_clear`` goes out: no chunk queued before
    the interruption can follow the clear, since the old sender is cancelled at a point
    where it is not writing and re-checks an epoch after every wait. ``played_seconds`` and
    ``interrupted_at`` tell how much of the bot's speech the caller heard.

    ``PauseBotOutputFrame`` (while the caller's speech over the bot is being judged) stops the
    sending at a chunk boundary and keeps everything not sent; what was sent plays out (the
    far end holds at most ``output_lead_secs``), so once paused the caller has heard exactly
    what was sent. ``ResumeBotOutputFrame`` (a backchannel) sends on from the first byte not
    sent: nothing repeated, nothing skipped. While paused the bot counts as speaking (no
    ``BotStoppedSpeakingFrame``); an interruption flushes as usual; a pause nobody resumes ends
    by itself after the frame's ``timeout_secs``. Once a reply's audio has all been sent there
    is nothing to pause: the bot stops when it has played, as it would have.
    """

    def __init__(
        self,
        sink: WireSink | None = None,
        params: TransportParams | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.params = params if params is not None else TransportParams()
        self.sink = sink
        fmt = self.params.audio_out
        self._bytes_per_sec = float(fmt.sample_rate * bytes_per_sample(fmt.encoding))
        self._chunker = Chunker(self.params.chunk_bytes)
        self._pad = b"\xff" if fmt.encoding == "mulaw" else b"\x00"  # silence
        self._converter: AudioConverter | None = None
        self._queue = _Queue()
        self._pending = _Queue()
        self._epoch = 0
        self._sender: asyncio.Task[None] | None = None
        self._releaser: asyncio.Task[None] | None = None
        self._writing = False  # inside a sink call from the sender
        self._sender_waiting = False  # the sender waits for the queue to fill
        self._send_lock = asyncio.Lock()  # held while an item is taken and sent
        self.closed = False
        self._over = False  # cleaned up: the call is over
        self.bot_speaking = False
        self._span_active = False
        self._reply_over = False
        # Positions, in seconds of audio: sent to the wire (minus what a clear discarded), and
        # confirmed played by mark echoes. The far end ends playing what it has at _play_end.
        self._sent = 0.0
        self._confirmed = 0.0
        self._play_end = 0.0
        self._utterance_start = 0.0
        self.interrupted_at: float | None = None
        # A pause while the caller's speech over the bot is judged: the sender waits on this.
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._pause_timer: asyncio.TimerHandle | None = None
        self._paused_since = 0.0
        self.pause_position: float | None = None  # utterance seconds sent when last paused
        # Marks: name -> (future, position after the audio before it), in sending order.
        self._marks_ok = bool(sink is not None and sink.supports_marks and self.params.use_marks)
        self._marks: dict[str, tuple[asyncio.Future[bool], float]] = {}
        self._mark_seq = 0
        self._last_mark: asyncio.Future[bool] | None = None
        self._unmarked = False  # audio sent since the last mark
        # Call recorders (voxpipe.records.recording): told of each chunk sent, with the time it
        # starts playing, and of each flush (what was not played by then was never heard).
        self.audio_taps: list[Any] = []
        # Counters for metrics and tests.
        self.chunks_sent = 0
        self.chunks_dropped = 0
        self.clears_sent = 0
        self.marks_sent = 0
        self.pauses = 0
        self.resumes = 0
        self.paused_seconds: list[float] = []  # how long each pause that was resumed lasted

    # ------------------------------------------------------------------ positions

    @property
    def sent_seconds(self) -> float:
        """Seconds of bot audio sent to the wire in this call (minus what flushes discarded)."""
        return self._sent

    @property
    def played_seconds(self) -> float:
        """Seconds of bot audio the caller has heard in this call.

        Confirmed by mark echoes where the wire has marks (a lower bound); otherwise the
        clock estimate: what was sent minus what the far end still holds.
        """
        if self._marks_ok:
            return self._confirmed
        return self._sent - max(0.0, self._play_end - self.clock.now())

    @property
    def utterance_played_seconds(self) -> float:
        """Seconds heard of the current (or last) bot utterance."""
        return max(0.0, self.played_seconds - self._utterance_start)

    @property
    def paused(self) -> bool:
        """Whether the bot's audio is held back while the caller's speech is judged."""
        return self._paused

    @property
    def marks_enabled(self) -> bool:
        """Whether played positions come from the wire's mark echoes."""
        return self._marks_ok

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing waiting to be released and the bot silent."""
        return (
            not self.bot_speaking
            and not self._queue.items
            and not self._pending.items
            and self._chunker.pending == 0
        )

    # ------------------------------------------------------------------ the wire side

    def set_sink(self, sink: WireSink) -> None:
        """Attach the wire (before the call starts) when it was not known at construction."""
        self.sink = sink
        self._marks_ok = bool(sink.supports_marks and self.params.use_marks)

    def mark_played(self, name: str) -> None:
        """The wire echoed mark ``name``: the audio before it (and every earlier mark) played.

        Names this transport did not send, or sent before a flush, are ignored (a flush makes
        Twilio return every pending mark at once, and that audio was not played).
        """
        if name not in self._marks:
            return
        marks = self._marks
        while marks:
            first = next(iter(marks))
            fut, position = marks.pop(first)
            self._confirmed = max(self._confirmed, position)
            if not fut.done():
                fut.set_result(True)
            if first == name:
                break

    async def on_wire_closed(self) -> None:
        """The far end is gone: stop sending, drop what was never heard, pass the rest on."""
        if self.closed:
            return
        self.closed = True
        self._epoch += 1
        for task in (self._sender, self._releaser):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        # Frames that do not speak keep their order; text whose audio was never heard goes.
        keep: list[Frame] = []
        for item in (*self._pending.items, *self._queue.items):
            if isinstance(item, bytes):
                self.chunks_dropped += 1
            elif not isinstance(item.frame, TTSTextFrame):
                keep.append(item.frame)
        self._forget_audio()
        if self.bot_speaking:
            await self._bot_stopped()
        await self._end_span()
        if self.started:
            self._restart(keep)

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is UPSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, OutputAudioFrame):
            self._enqueue_audio(frame)
            if not self.bot_speaking and self._sender_waiting and not self._send_lock.locked():
                await self._send_first()
            return
        if isinstance(frame, SystemFrame) or isinstance(frame, InputAudioFrame):
            if isinstance(frame, PauseBotOutputFrame):
                self._pause(frame)
            elif isinstance(frame, ResumeBotOutputFrame):
                self._resume(frame.reason)
            await self.push_frame(frame, direction)
            if type(frame) is InterruptionFrame and self.bot_speaking:
                # After the interruption itself, so aggregators see it first.
                await self._bot_stopped()
            return
        # Ordered frames follow the audio queued before them. The end of a reply (or call)
        # sends what is left of its audio; other frames leave a partial chunk where it is.
        if type(frame) in (TTSStoppedFrame, EndFrame):
            for chunk in self._flush_audio():
                self._queue.put(chunk)
        self._queue.put(_Pending(frame, self._chunker.pending / self._bytes_per_sec))

    def _enqueue_audio(self, frame: OutputAudioFrame) -> None:
        if self.closed:
            return
        if frame.num_channels != 1:
            self.logger.error(
                "dropping %d-channel bot audio: the output sends mono; mix down in the TTS",
                frame.num_channels,
            )
            return
        conv = self._converter
        if conv is None or conv.in_encoding != frame.encoding or conv.in_rate != frame.sample_rate:
            if conv is not None:
                tail = conv.flush()
                for chunk in self._chunker.push(tail) if tail else ():
                    self._queue.put(chunk)
            fmt = self.params.audio_out
            conv = self._converter = AudioConverter(
                frame.encoding, frame.sample_rate, fmt.encoding, fmt.sample_rate
            )
        data = conv.process(frame.audio)
        if data:
            for chunk in self._chunker.push(data):
                self._queue.put(chunk)

    def _flush_audio(self) -> list[bytes]:
        """The end of a stream: the converter's tail and the last chunk, padded with silence."""
        out: list[bytes] = []
        if self._converter is not None:
            tail = self._converter.flush()
            if tail:
                out += self._chunker.push(tail)
        rest = self._chunker.flush(pad=self._pad)
        if rest:
            out.append(rest)
        return out

    # ------------------------------------------------------------------ life cycle

    async def on_start(self, frame: StartFrame) -> None:
        if self.sink is None:
            raise RuntimeError(
                f"{self.name} has no WireSink: pass sink= or call set_sink() before the call starts"
            )
        fmt = self.params.audio_out
        if frame.audio_out_sample_rate != fmt.sample_rate:
            self.logger.warning(
                "StartFrame says bot audio is %d Hz but the wire takes %d Hz; output will be "
                "resampled (build the task with TransportParams.task_params() to avoid it)",
                frame.audio_out_sample_rate,
                fmt.sample_rate,
            )
        self._play_end = self.clock.now()
        self._restart([])

    async def on_interruption(self) -> None:
        # The sender and releaser (interruptible) were cancelled by the base already.
        self._epoch += 1
        old = self._sender
        ends: list[Frame] = [
            item.frame
            for item in (*self._pending.items, *self._queue.items)
            if isinstance(item, _Pending) and type(item.frame) is EndFrame
        ]
        dropped = sum(1 for item in self._queue.items if isinstance(item, bytes))
        self.chunks_dropped += dropped
        if self._writing and old is not None and old is not asyncio.current_task():
            # A chunk is being written: let that write finish (or abort) before the clear, so
            # the wire never sees audio from before the interruption after it.
            await self.cancel_task(old)
        in_flight = self._play_end > self.clock.now()
        self.interrupted_at = self.utterance_played_seconds if self.bot_speaking else None
        self._forget_audio()
        if (in_flight or self.bot_speaking) and not self.closed and self.sink is not None:
            self.clears_sent += 1
            try:
                await self.sink.send_clear()
            except Exception as exc:
                self.logger.warning("clear failed, the wire is probably gone: %s", exc)
        await self._end_span()
        self._restart(ends)

    async def on_cancel(self, frame: CancelFrame) -> None:
        self._epoch += 1
        self._forget_audio()

    async def cleanup(self) -> None:
        self._over = True
        await super().cleanup()

    # ------------------------------------------------------------------ pause and resume

    def _pause(self, frame: PauseBotOutputFrame) -> None:
        if self._paused or not self.bot_speaking or self.closed or self._span_active:
            return  # nothing playing, or the caller may not interrupt this span
        if self._reply_over and not self._audio_queued():
            # All of the reply was sent, its last words are playing: nothing to hold back, and
            # the bot is about to stop, so what the caller says is a turn (an answer), not an
            # overlap to judge.
            return
        self._paused = True
        self._resumed.clear()
        self._paused_since = self.clock.now()
        self.pause_position = self._sent - self._utterance_start
        self.pauses += 1
        self._pause_timer = self.clock.call_later(frame.timeout_secs, self._pause_expired)
        self.logger.debug("bot audio paused at %.2fs: %s", self.pause_position, frame.reason)

    def _audio_queued(self) -> bool:
        return self._chunker.pending > 0 or any(isinstance(i, bytes) for i in self._queue.items)

    def _pause_expired(self) -> None:
        self._pause_timer = None
        if self._paused:
            self.logger.info("bot audio paused and never resumed nor interrupted: resuming")
            self._resume("pause timed out")

    def _resume(self, reason: str) -> None:
        if not self._paused:
            return
        self._end_pause()
        self.resumes += 1
        self.paused_seconds.append(self.clock.now() - self._paused_since)
        self.logger.debug("bot audio resumed: %s", reason)

    def _end_pause(self) -> None:
        self._paused = False
        self._resumed.set()
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    def _forget_audio(self) -> None:
        """Drop queued chunks and half-converted audio; the far end's buffer counts as gone."""
        now = self.clock.now()
        for tap in self.audio_taps:
            tap.bot_flushed(now)
        heard = self._sent - max(0.0, self._play_end - now)
        self._sent = heard
        self._play_end = now
        if self._marks_ok:
            # Never behind what the wire confirmed, even if the clock ran ahead of it.
            self._sent = max(heard, self._confirmed)
        # Marks still pending come back at a flush without having played: forget them.
        for fut, _ in self._marks.values():
            if not fut.done():
                fut.set_result(False)
        self._marks.clear()
        self._last_mark = None
        self._unmarked = False
        self._end_pause()
        self._chunker.clear()
        if self._converter is not None:
            self._converter.reset()
        self._queue = _Queue()
        self._pending = _Queue()

    def _restart(self, frames: list[Frame]) -> None:
        """New sender and releaser on fresh queues, with ``frames`` queued in order."""
        if self._over:
            # The wire closing after the call ended: nobody would ever stop these tasks, and
            # they would keep this transport (a cycle through their frames) until collected.
            return
        epoch = self._epoch
        for f in frames:
            self._queue.put(_Pending(f))
        self._sender = self._start(self._send_loop(epoch), "send")
        self._releaser = self._start(self._release_loop(epoch), "release")

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self.create_task(coro, name=name)
        # A flush right after a restart cancels the task before it ran: close the coroutine
        # so it is not reported as never awaited (a no-op once it has run).
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _end_span(self) -> None:
        if self._span_active:
            # The span's EnableInterruptionsFrame was dropped with the queue: re-enable here.
            self._span_active = False
            await self.push_frame(
                InterruptionsAllowedFrame(allowed=True, reason="flushed"), UPSTREAM
            )

    # ------------------------------------------------------------------ sending

    async def _send_loop(self, epoch: int) -> None:
        queue = self._queue
        while True:
            if self._paused:
                await self._resumed.wait()
                if epoch != self._epoch:
                    return
                continue
            if not queue.items and self.bot_speaking and not self.closed:
                await self._idle(epoch)
                if epoch != self._epoch:
                    return
                continue
            if not queue.items:
                self._sender_waiting = True
                try:
                    await queue.wait_item()
                finally:
                    self._sender_waiting = False
            # One writer at a time: process_frame may be sending an utterance's first chunk.
            async with self._send_lock:
                if epoch != self._epoch:
                    return
                if not queue.items:
                    continue  # taken by process_frame meanwhile
                item = await self._take_and_send(queue, epoch)
                if isinstance(item, _Pending) and type(item.frame) is EndFrame:
                    return
            if epoch != self._epoch:
                return

    async def _send_first(self) -> None:
        """Send an utterance's first chunk from process_frame (and the frames queued before it).

        The sender would get to it only on its next turn of the event loop, after whatever the
        producer and the providers' sockets do in this one (measured: 0.65 ms to the wire);
        the caller waits for exactly this chunk.
        """
        epoch = self._epoch
        queue = self._queue
        async with self._send_lock:
            while queue.items and epoch == self._epoch:
                head = queue.items[0]
                if isinstance(head, _Pending) and type(head.frame) is EndFrame:
                    return  # the end of the call stays with the sender
                if isinstance(await self._take_and_send(queue, epoch), bytes):
                    return

    async def _take_and_send(self, queue: _Queue, epoch: int) -> bytes | _Pending:
        """Take the queue's head and send it (a chunk) or hand it over (a frame); under the lock."""
        item: bytes | _Pending = queue.items.popleft()
        queue.task_done()
        if isinstance(item, bytes):
            await self._send_chunk(item, epoch)
        else:
            await self._hand_over(item)
        return item

    async def _send_chunk(self, chunk: bytes, epoch: int) -> None:
        if self.closed:
            self.chunks_dropped += 1
            return
        clock = self.clock
        while True:
            wait = self._play_end - clock.now() - self.params.output_lead_secs
            if wait > 0:
                await clock.sleep(wait)
                if epoch != self._epoch:
                    return
            if not self._paused:
                break
            # Paused during the lead's wait: this chunk is the first one sent on resuming.
            await self._resumed.wait()
            if epoch != self._epoch:
                return
        first = not self.bot_speaking
        if first:
            self._begin_utterance()
        sink = self.sink
        assert sink is not None
        self._writing = True
        try:
            await sink.send_audio(chunk)
        except Exception as exc:
            self._writing = False
            await self._wire_failed(exc)
            return
        finally:
            self._writing = False
        now = clock.now()
        duration = len(chunk) / self._bytes_per_sec
        if self.audio_taps:
            fmt = self.params.audio_out
            for tap in self.audio_taps:
                tap.bot_audio(chunk, fmt.encoding, fmt.sample_rate, max(self._play_end, now))
        self._play_end = max(self._play_end, now) + duration
        self._sent += duration
        self._unmarked = True
        self.chunks_sent += 1
        if first:
            # Announced after the first chunk is on the wire: the caller hears it sooner.
            await self._announce_started()

    async def _mark_now(self) -> asyncio.Future[bool] | None:
        """A future resolved when everything sent so far has played (sends a mark if needed)."""
        if not self._marks_ok:
            return None
        if self._unmarked and self.sink is not None:
            self._mark_seq += 1
            name = f"vp-{self._mark_seq}"
            fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._marks[name] = (fut, self._sent)
            self._last_mark = fut
            self._unmarked = False
            self._writing = True
            try:
                await self.sink.send_mark(name)
                self.marks_sent += 1
            except Exception as exc:
                self._writing = False
                await self._wire_failed(exc)
                return None
            finally:
                self._writing = False
        return self._last_mark

    async def _hand_over(self, entry: _Pending) -> None:
        """An ordered frame reached the head of the queue: release it once its audio played."""
        frame = entry.frame
        kind = type(frame)
        if kind is TTSStoppedFrame:
            self._reply_over = True  # no more audio of this reply: stop as soon as it played
        elif kind is TTSStartedFrame:
            self._reply_over = False
        elif kind is DisableInterruptionsFrame and not self.closed:
            # The span starts as its first audio goes out (the audio before it may still play).
            self._span_active = True
            reason = getattr(frame, "reason", "")
            await self.push_frame(InterruptionsAllowedFrame(allowed=False, reason=reason), UPSTREAM)
        if self.closed:
            if not isinstance(frame, TTSTextFrame):  # its audio was never heard
                self._pending.put(entry)
            return
        entry.mark = await self._mark_now()
        entry.release_at = max(self._play_end, self.clock.now()) + entry.tail
        self._pending.put(entry)

    async def _idle(self, epoch: int) -> None:
        """Nothing queued while the bot speaks: wait for more audio, or report the bot stopped."""
        queue = self._queue
        if await self._wait_item_until(self._play_end):
            return
        rest = self._flush_audio()
        if rest:
            for chunk in rest:
                queue.put(chunk)
            return
        mark = await self._mark_now()
        if epoch != self._epoch:
            return
        if mark is not None and not mark.done():
            if await self._wait_item_or(mark, self.params.mark_timeout_secs):
                return
            if epoch != self._epoch:
                return
            if not mark.done():
                self._marks_failed()
        delay = 0.0 if self._reply_over else self.params.bot_stop_secs
        if delay > 0 and await self._wait_item_until(self.clock.now() + delay):
            return
        # Text bound to the last audio goes out before the bot is reported stopped.
        await self._pending.join()
        if self._paused:
            return  # held while the caller's speech is judged: the bot keeps the floor
        if epoch == self._epoch and not queue.items and self.bot_speaking:
            await self._bot_stopped()

    async def _wait_item_until(self, when: float) -> bool:
        queue = self._queue
        if queue.items:
            return True
        delay = when - self.clock.now()
        if delay <= 0:
            return False
        try:
            await self.clock.wait_for(queue.wait_item(), delay)
        except TimeoutError:
            pass
        return bool(queue.items)

    async def _wait_item_or(self, fut: asyncio.Future[bool], timeout: float) -> bool:
        queue = self._queue
        if queue.items:
            return True
        waiter: asyncio.Future[None] = asyncio.ensure_future(queue.wait_item())
        waits: set[asyncio.Future[Any]] = {waiter, fut}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return bool(queue.items)

    def _marks_failed(self) -> None:
        self.logger.warning(
            "the wire did not echo a mark within %.1fs of play-out: using clock estimates "
            "for played audio from now on",
            self.params.mark_timeout_secs,
        )
        self._marks_ok = False
        for fut, _ in self._marks.values():
            if not fut.done():
                fut.set_result(False)
        self._marks.clear()

    async def _wire_failed(self, exc: Exception) -> None:
        self.logger.warning("sending to the wire failed, treating it as closed: %s", exc)
        await self.on_wire_closed()

    # ------------------------------------------------------------------ releasing

    async def _release_loop(self, epoch: int) -> None:
        pending = self._pending
        clock = self.clock
        while True:
            entry: _Pending = await pending.get()
            try:
                if epoch != self._epoch:
                    return
                mark = entry.mark
                if mark is not None and self._marks_ok:
                    if not mark.done():
                        timeout = (
                            max(0.0, entry.release_at - clock.now()) + self.params.mark_timeout_secs
                        )
                        try:
                            await clock.wait_for(asyncio.shield(mark), timeout)
                        except TimeoutError:
                            if epoch == self._epoch and self._marks_ok:
                                self._marks_failed()
                    if entry.tail > 0:
                        await clock.sleep(entry.tail)
                elif entry.release_at > clock.now():
                    await clock.sleep_until(entry.release_at)
                if epoch != self._epoch:
                    return
                await self._release(entry.frame)
            finally:
                pending.task_done()
            if type(entry.frame) is EndFrame:
                return

    async def _release(self, frame: Frame) -> None:
        kind = type(frame)
        if kind is EnableInterruptionsFrame and self._span_active:
            self._span_active = False
            await self.push_frame(InterruptionsAllowedFrame(allowed=True), UPSTREAM)
        elif kind is EndFrame and self.bot_speaking:
            await self._bot_stopped()
        await self.push_frame(frame, DOWNSTREAM)

    # ------------------------------------------------------------------ bot speaking

    def _begin_utterance(self) -> None:
        self.bot_speaking = True
        self._reply_over = False
        self._utterance_start = self._sent
        self.interrupted_at = None

    async def _announce_started(self) -> None:
        await self.push_frame(BotStartedSpeakingFrame(), DOWNSTREAM)
        await self.push_frame(BotStartedSpeakingFrame(), UPSTREAM)

    async def _bot_stopped(self) -> None:
        self.bot_speaking = False
        await self.push_frame(BotStoppedSpeakingFrame(), DOWNSTREAM)
        await self.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
