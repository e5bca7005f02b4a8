"""FrameProcessor: the unit of a pipeline, linked in a chain, passing frames by direct calls.

A pass-through hop is two coroutine calls (``push_frame`` into the next ``process_frame``):
no queue and no task switch. Work that waits on I/O runs in tasks the processor owns
(``create_task``), which interruptions, cancel and end stop for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from voxpipe.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    InterruptionRequestFrame,
    MetricsFrame,
    StartFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.logs import CallLoggerAdapter

if TYPE_CHECKING:
    from voxpipe.pipelines.observer import Observer

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM
T = TypeVar("T")

_processor_ids = itertools.count(1)
_logger = logging.getLogger("voxpipe.processor")


class TaskContext:
    """What a pipeline task hands every processor before the call starts."""

    __slots__ = ("call_id", "clock", "observer", "input_observer")

    def __init__(
        self,
        *,
        call_id: str,
        clock: Clock,
        observer: Observer | None = None,
        input_observer: Observer | None = None,
    ) -> None:
        self.call_id = call_id
        self.clock = clock
        self.observer = observer
        self.input_observer = input_observer


class FrameProcessor:
    """Receives frames in ``process_frame`` and passes them on with ``push_frame``.

    Subclasses override ``process_frame`` (the default passes every frame on) and, when they
    hold state or work, the hooks ``on_start``, ``on_interruption``, ``on_end`` and ``on_cancel``,
    which run before ``process_frame`` sees the frame.
    """

    def __init__(self, *, name: str | None = None) -> None:
        self.name: str = name or f"{type(self).__name__}#{next(_processor_ids)}"
        self._next: FrameProcessor | None = None
        self._prev: FrameProcessor | None = None
        self._observer: Observer | None = None
        self._input_observer: Observer | None = None
        self._tasks: dict[asyncio.Task[Any], bool] = {}  # owned task -> interruptible
        self.clock: Clock = Clock()
        self.call_id: str = ""
        self.logger: logging.LoggerAdapter[logging.Logger] = CallLoggerAdapter(_logger, self)
        self.interruptions_allowed: bool = True
        self.metrics_enabled: bool = False
        self._ttfb_start: float | None = None
        self._processing_start: float | None = None
        self.started: bool = False

    # ------------------------------------------------------------------ wiring

    def link(self, nxt: FrameProcessor) -> FrameProcessor:
        """Link ``nxt`` after this processor; returns ``nxt`` so links chain."""
        self._next = nxt
        nxt._prev = self
        return nxt

    def setup(self, ctx: TaskContext) -> None:
        """Receive the task's clock, call id and observers (called once per call)."""
        self.clock = ctx.clock
        self.call_id = ctx.call_id
        self._observer = ctx.observer
        self._input_observer = ctx.input_observer

    def processors(self) -> Iterator[FrameProcessor]:
        """This processor and, for containers, every processor inside, depth first."""
        yield self

    # ------------------------------------------------------------------ frame flow

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Decide what to do with ``frame``; the default passes it on unchanged."""
        await self.push_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = DOWNSTREAM) -> None:
        """Pass ``frame`` to the neighbour in ``direction`` (nothing happens at a chain end)."""
        nxt = self._next if direction is DOWNSTREAM else self._prev
        if nxt is None:
            return
        if self._observer is not None:
            self._observer.on_push(self, nxt, frame, direction)
        if frame.lifecycle:
            try:
                await nxt._lifecycle(frame)
                await nxt.process_frame(frame, direction)
            except Exception as exc:
                await nxt._processing_error(exc, frame)
            if type(frame) is EndFrame and direction is DOWNSTREAM:
                # This processor has passed the end on: it is done, stop whatever it still owns.
                self._cancel_tasks(interruptible_only=False)
            return
        try:
            await nxt.process_frame(frame, direction)
        except Exception as exc:
            await nxt._processing_error(exc, frame)

    async def push_input(self, frame: Frame) -> None:
        """Push a frame that enters the call from outside (the wire) downstream, for recorders."""
        if self._input_observer is not None:
            self._input_observer.on_input(frame, DOWNSTREAM)
        await self.push_frame(frame, DOWNSTREAM)

    async def push_error(
        self, error: str, *, fatal: bool = False, exc: BaseException | None = None
    ) -> None:
        """Report an error upstream; a fatal one ends the call."""
        await self.push_frame(
            ErrorFrame(error, fatal=fatal, processor=self.name, exception=exc), UPSTREAM
        )

    async def request_interruption(self, reason: str = "") -> None:
        """Ask the task's source to sweep the pipeline with an interruption."""
        await self.push_frame(InterruptionRequestFrame(reason=reason), UPSTREAM)

    # ------------------------------------------------------------------ life cycle

    async def _lifecycle(self, frame: Frame) -> None:
        kind = type(frame)
        if kind is InterruptionFrame:
            self._cancel_tasks(interruptible_only=True)
            await self.on_interruption()
        elif kind is StartFrame:
            assert isinstance(frame, StartFrame)
            self.interruptions_allowed = frame.allow_interruptions
            self.metrics_enabled = frame.enable_metrics
            self.started = True
            await self.on_start(frame)
        elif kind is CancelFrame:
            assert isinstance(frame, CancelFrame)
            self._cancel_tasks(interruptible_only=False)
            await self.on_cancel(frame)
        elif kind is EndFrame:
            assert isinstance(frame, EndFrame)
            await self.on_end(frame)

    async def on_start(self, frame: StartFrame) -> None:
        """The call starts: open connections, start owned tasks."""

    async def on_interruption(self) -> None:
        """Drop queued output; owned interruptible tasks are already cancelled."""

    async def on_end(self, frame: EndFrame) -> None:
        """Drain: finish what is held before the end passes on (default: nothing held)."""

    async def on_cancel(self, frame: CancelFrame) -> None:
        """Stop now: release connections; owned tasks are already cancelled."""

    async def cleanup(self) -> None:
        """Last call from the task when the call is over, however it ended."""
        self._cancel_tasks(interruptible_only=False)

    def dispose(self) -> None:
        """Drop the links that make an ended call a web of cycles (after ``cleanup``).

        Neighbours link each other and processors their logger, tasks and owners, so only the
        cycle collector could free a call: the server's full collections then walk every live
        call to find it. Cut here, reference counting frees the call as it ends. The state a
        run left (counters, collected frames) stays readable; frames pushed from now on go
        nowhere. Subclasses holding more links to the call drop them too and call this.
        """
        self._next = None
        self._prev = None
        self._observer = None
        self._input_observer = None
        self._tasks.clear()
        if isinstance(self.logger, CallLoggerAdapter):
            self.logger.detach()

    async def _processing_error(self, exc: Exception, frame: Frame | None) -> None:
        what = f" while processing {frame.name}" if frame is not None else ""
        self.logger.error("%s failed%s: %s", self.name, what, exc, exc_info=exc)
        await self.push_error(f"{self.name}: {exc}", exc=exc)

    # ------------------------------------------------------------------ owned tasks

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        interruptible: bool = True,
    ) -> asyncio.Task[Any]:
        """Start a task this processor owns: cancelled on interruption (if interruptible), cancel and end."""
        task = asyncio.get_running_loop().create_task(
            self._run_owned(coro), name=f"{self.name}:{name or 'task'}"
        )
        self._tasks[task] = interruptible
        task.add_done_callback(functools.partial(self._forget_task, coro))
        return task

    async def _run_owned(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._processing_error(exc, None)
            return None

    def _forget_task(self, coro: Coroutine[Any, Any, Any], task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        # A task cancelled before its first step never started ``coro``: close it so it
        # is not reported as "never awaited".
        coro.close()
        if task.cancelled():
            # A cancelled task keeps the CancelledError raised in it until someone takes it;
            # its traceback holds this processor's frames, so a processor keeping the task
            # (``self._worker``) would be a cycle. Taking it once drops it from the task.
            with contextlib.suppress(asyncio.CancelledError):
                task.result()

    def _cancel_tasks(self, *, interruptible_only: bool) -> None:
        current = asyncio.current_task()
        for task, interruptible in list(self._tasks.items()):
            if task is current or (interruptible_only and not interruptible):
                continue
            task.cancel()
            self._tasks.pop(task, None)

    async def cancel_task(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel one owned task and wait until it has stopped."""
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:  # already reported by _run_owned
            pass

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound ``fn`` off the event loop; inline on a virtual clock.

        On a virtual clock (replays, tests) time does not pass while the loop waits for a
        thread, so the work runs inline: it then takes no call time and stays deterministic.
        """
        if self.clock.is_virtual:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def wait_for_tasks(self) -> None:
        """Wait until every owned task except the current one has finished (for draining)."""
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    @property
    def owned_tasks(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------------ metrics

    def start_ttfb_metrics(self) -> None:
        """Mark the moment a request went out; the first result closes the measurement."""
        self._ttfb_start = self.clock.now()

    async def stop_ttfb_metrics(self, model: str | None = None) -> float | None:
        """Emit the time to first byte since ``start_ttfb_metrics`` (once per start)."""
        value = self.take_ttfb()
        if value is not None:
            await self.push_ttfb_metrics(value, model)
        return value

    def take_ttfb(self) -> float | None:
        """Close the time-to-first-byte measurement now; emit it later with ``push_ttfb_metrics``.

        For the critical path: the result goes downstream first, its metric right after.
        """
        if self._ttfb_start is None:
            return None
        value = self.clock.now() - self._ttfb_start
        self._ttfb_start = None
        return value

    async def push_ttfb_metrics(self, value: float | None, model: str | None = None) -> None:
        """Emit a time to first byte taken with ``take_ttfb`` (if metrics are on)."""
        if value is not None and self.metrics_enabled:
            await self.push_frame(MetricsFrame(self.name, "ttfb", value, model=model))

    def start_processing_metrics(self) -> None:
        """Mark the start of a unit of work."""
        self._processing_start = self.clock.now()

    async def stop_processing_metrics(self, model: str | None = None) -> float | None:
        """Emit the processing time since ``start_processing_metrics``."""
        if self._processing_start is None:
            return None
        value = self.clock.now() - self._processing_start
        self._processing_start = None
        if self.metrics_enabled:
            await self.push_frame(MetricsFrame(self.name, "processing", value, model=model))
        return value

    def __repr__(self) -> str:
        return f"<{self.name}>"
