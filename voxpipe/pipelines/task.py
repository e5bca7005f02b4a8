"""PipelineTask: runs one call's pipeline from start to end or cancel."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    CancelFrame,
    CancelTaskFrame,
    EndFrame,
    EndTaskFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    InterruptionRequestFrame,
    StartFrame,
    SystemFrame,
    UserStartedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock, clock_for_running_loop
from voxpipe.pipelines.logs import CallLoggerAdapter, current_call_id
from voxpipe.pipelines.observer import Observer, combine
from voxpipe.processors.base import FrameProcessor, TaskContext

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM

_task_ids = itertools.count(1)
_logger = logging.getLogger("voxpipe.task")

FrameCallback = Callable[[Frame], Any]


@dataclass(slots=True)
class TaskParams:
    """Call-wide settings handed to every processor in the StartFrame."""

    audio_in_sample_rate: int = 16000
    audio_out_sample_rate: int = 16000
    allow_interruptions: bool = True
    enable_metrics: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


class _Source(FrameProcessor):
    """Head of the task: turns upstream requests into actions (interruption sweep, end, cancel)."""

    def __init__(self, task: PipelineTask) -> None:
        super().__init__(name=f"{task.name}.source")
        self._task: PipelineTask | None = task

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWNSTREAM:
            await self.push_frame(frame, DOWNSTREAM)
            return
        task = self._task
        if task is None:  # the call is over
            return
        await task._upstream_out(frame)
        kind = type(frame)
        if kind is InterruptionRequestFrame:
            # "Interruptions propagate backward": any processor asks, the source sweeps.
            # The sweep runs in a task of its own: the requester may be an owned task that the
            # sweep cancels, and cancelling it must not cut the sweep short half-way.
            sweep = asyncio.get_running_loop().create_task(
                self.push_frame(InterruptionFrame(), DOWNSTREAM), name=f"{self.name}:sweep"
            )
            await asyncio.shield(sweep)
        elif kind is EndTaskFrame:
            await task.queue_frame(EndFrame(reason=getattr(frame, "reason", "")))
        elif kind is CancelTaskFrame:
            await task.cancel(reason=getattr(frame, "reason", ""))
        elif kind is ErrorFrame and getattr(frame, "fatal", False):
            self.logger.error("fatal error, cancelling the call: %s", getattr(frame, "error", ""))
            await task.cancel(reason="fatal error")

    def dispose(self) -> None:
        """Also let go of the task (which holds this source)."""
        super().dispose()
        self._task = None


class _Sink(FrameProcessor):
    """Tail of the task: hands frames to the task's listeners and notices the end."""

    def __init__(self, task: PipelineTask) -> None:
        super().__init__(name=f"{task.name}.sink")
        self._task: PipelineTask | None = task

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is UPSTREAM:
            await self.push_frame(frame, UPSTREAM)
            return
        task = self._task
        if task is not None:  # else the call is over
            await task._downstream_out(frame)

    def dispose(self) -> None:
        """Also let go of the task (which holds this sink)."""
        super().dispose()
        self._task = None


class PipelineTask:
    """Owns a pipeline for one call: accepts frames from outside and runs until end or cancel.

    Data and control frames queued from outside are delivered in order by one pump;
    system frames are delivered at once, overtaking the queue. An end that does not
    reach the sink within ``end_timeout`` becomes a cancel; with ``idle_timeout`` set, a
    call with no input and no bot or caller speech for that long is ended.
    """

    def __init__(
        self,
        pipeline: FrameProcessor,
        *,
        params: TaskParams | None = None,
        clock: Clock | None = None,
        observers: Iterable[Observer] = (),
        call_id: str | None = None,
        idle_timeout: float | None = None,
        end_timeout: float = 10.0,
    ) -> None:
        self.name = f"task#{next(_task_ids)}"
        self.call_id = call_id or self.name
        self.pipeline = pipeline
        self.params = params or TaskParams()
        self._clock = clock
        self.observers: list[Observer] = list(observers)
        self.idle_timeout = idle_timeout
        self.end_timeout = end_timeout
        self._source = _Source(self)
        self._sink = _Sink(self)
        self._source.link(pipeline)
        pipeline.link(self._sink)
        self._queue: asyncio.Queue[Frame | None] | None = None
        self._finished: asyncio.Event | None = None
        self._done = False
        self._started = False
        self._ending = False
        self._downstream_handlers: list[FrameCallback] = []
        self._upstream_handlers: list[FrameCallback] = []
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.end_reason = ""
        self._start_sent = False
        self._started_event: asyncio.Event | None = None
        self._input_obs: Observer | None = None
        self.logger = CallLoggerAdapter(_logger, self)

    # ------------------------------------------------------------------ listeners

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = clock_for_running_loop()
        return self._clock

    def on_downstream(self, handler: FrameCallback) -> None:
        """Call ``handler(frame)`` for each frame leaving the pipeline downstream."""
        self._downstream_handlers.append(handler)

    def on_upstream(self, handler: FrameCallback) -> None:
        """Call ``handler(frame)`` for each frame leaving the pipeline upstream."""
        self._upstream_handlers.append(handler)

    def add_observer(self, observer: Observer) -> None:
        """Attach an observer before the task runs."""
        if self._started:
            raise RuntimeError("observers must be added before the task runs")
        self.observers.append(observer)

    async def _downstream_out(self, frame: Frame) -> None:
        kind = type(frame)
        if kind is BotStartedSpeakingFrame or kind is UserStartedSpeakingFrame:
            self._last_activity = self.clock.now()
        for h in self._downstream_handlers:
            r = h(frame)
            if asyncio.iscoroutine(r):
                await r
        if kind is EndFrame or kind is CancelFrame:
            self._finish(getattr(frame, "reason", ""))

    async def _upstream_out(self, frame: Frame) -> None:
        for h in self._upstream_handlers:
            r = h(frame)
            if asyncio.iscoroutine(r):
                await r

    # ------------------------------------------------------------------ input

    async def queue_frame(self, frame: Frame, direction: FrameDirection = DOWNSTREAM) -> None:
        """Hand a frame to the call: system frames go at once, others in order."""
        if self._done:
            return
        self._last_activity = self.clock.now()
        obs = self._input_obs
        if obs is not None:
            obs.on_input(frame, direction)
        if direction is UPSTREAM:
            await self._sink.push_frame(frame, UPSTREAM)
        elif isinstance(frame, SystemFrame) and self._start_sent:
            await self._deliver(frame)
        else:
            self._ensure_queue().put_nowait(frame)

    async def inject(self, frame: Frame) -> None:
        """Deliver a downstream frame at once, bypassing the queue (wire order kept by the caller)."""
        if self._done:
            return
        self._last_activity = self.clock.now()
        if self._input_obs is not None:
            self._input_obs.on_input(frame, DOWNSTREAM)
        await self._deliver(frame)

    async def queue_frames(self, frames: Iterable[Frame]) -> None:
        """Queue several frames in order."""
        for f in frames:
            await self.queue_frame(f)

    async def stop_when_done(self, reason: str = "") -> None:
        """End gracefully once everything queued so far has been processed."""
        await self.queue_frame(EndFrame(reason=reason))

    async def cancel(self, reason: str = "") -> None:
        """Stop now: a cancel sweeps the pipeline and owned tasks are cancelled."""
        if self._done:
            return
        if not self._started:
            self._finish(reason or "cancelled before start")
            return
        await self._deliver(CancelFrame(reason=reason))
        self._finish(reason or "cancelled")

    def _ensure_queue(self) -> asyncio.Queue[Frame | None]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def _deliver(self, frame: Frame) -> None:
        await self._source.push_frame(frame, DOWNSTREAM)

    # ------------------------------------------------------------------ running

    @property
    def has_finished(self) -> bool:
        return self._done

    def _started_signal(self) -> asyncio.Event:
        if self._started_event is None:
            self._started_event = asyncio.Event()
        return self._started_event

    async def wait_started(self) -> None:
        """Wait until the StartFrame has gone through the pipeline (or the call ended first)."""
        if not self._start_sent and not self._done:
            await self._started_signal().wait()

    def _finish(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        self.end_reason = reason
        self._started_signal().set()  # nobody waits for a start that will not come
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._finished is not None:
            self._finished.set()
        self._ensure_queue().put_nowait(None)  # wake the pump

    def _all_processors(self) -> list[FrameProcessor]:
        return [self._source, *self.pipeline.processors(), self._sink]

    def _setup(self) -> None:
        hop_observers = [o for o in self.observers if o.watches_hops]
        ctx = TaskContext(
            call_id=self.call_id,
            clock=self.clock,
            observer=combine(hop_observers),
            input_observer=combine(self.observers),
        )
        self._input_obs = ctx.input_observer
        for p in self._all_processors():
            p.setup(ctx)

    async def run(self) -> None:
        """Run the call until an end frame reaches the sink or the call is cancelled."""
        if self._started:
            raise RuntimeError(f"{self.name} was already run")
        self._started = True
        clock = self.clock
        call_token = current_call_id.set(self.call_id)
        self._finished = asyncio.Event()
        queue = self._ensure_queue()
        try:
            self._setup()
            self._last_activity = clock.now()
            if self.idle_timeout is not None:
                self._arm_idle_timer(self.idle_timeout)
            p = self.params
            start = StartFrame(
                audio_in_sample_rate=p.audio_in_sample_rate,
                audio_out_sample_rate=p.audio_out_sample_rate,
                allow_interruptions=p.allow_interruptions,
                enable_metrics=p.enable_metrics,
                metadata=p.metadata,
            )
            if not self._done:
                self._start_sent = True
                await self._deliver(start)
            self._started_signal().set()
            # The pump runs apart so that a delivery stuck in a processor (an end that cannot
            # drain) cannot keep the call alive once it has been cancelled.
            pump = asyncio.get_running_loop().create_task(
                self._pump(queue), name=f"{self.name}:pump"
            )
            try:
                await self._finished.wait()
            finally:
                if not pump.done():
                    pump.cancel()
                    await asyncio.gather(pump, return_exceptions=True)
        except asyncio.CancelledError:
            if not self._done:
                await self._deliver(CancelFrame(reason="task cancelled"))
                self._finish("task cancelled")
            raise
        finally:
            self._started_signal().set()  # a run that failed before its start wakes waiters too
            for proc in self._all_processors():
                try:
                    await proc.cleanup()
                except Exception:
                    self.logger.exception("cleanup of %s failed", proc.name)
            for obs in self.observers:
                obs.on_finish()
            current_call_id.reset(call_token)
            self._dispose()

    def _dispose(self) -> None:
        """Break the ended call's reference cycles so reference counting frees it at once.

        Left whole, a call (processors and their neighbours, tasks and their callbacks) waits
        for a full collection of the cycle collector, which walks every live call to find it.
        """
        for proc in self._all_processors():
            proc.dispose()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._downstream_handlers.clear()
        self._upstream_handlers.clear()
        self._input_obs = None
        self.logger.detach()

    async def _pump(self, queue: asyncio.Queue[Frame | None]) -> None:
        while not self._done:
            frame = await queue.get()
            if frame is None or self._done:
                continue
            if type(frame) is EndFrame and not self._ending:
                self._ending = True
                self._arm_end_timer()
            await self._deliver(frame)

    # ------------------------------------------------------------------ timers

    def _arm_end_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

        def expired() -> None:
            if not self._done:
                self.logger.warning("end did not drain within %.1fs: cancelling", self.end_timeout)
                asyncio.get_running_loop().create_task(self.cancel(reason="end timeout"))

        self._timer = self.clock.call_later(self.end_timeout, expired)

    def _arm_idle_timer(self, delay: float) -> None:
        def check() -> None:
            if self._done or self._ending or self.idle_timeout is None:
                return
            idle_for = self.clock.now() - self._last_activity
            if idle_for >= self.idle_timeout:
                self.logger.info("idle for %.1fs: ending the call", idle_for)
                self._ensure_queue().put_nowait(EndFrame(reason="idle timeout"))
            else:
                self._arm_idle_timer(self.idle_timeout - idle_for)

        self._timer = self.clock.call_later(delay, check)
