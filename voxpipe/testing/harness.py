"""run_frames: run processors on a frame list and collect what comes out, for tests and bot authors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from voxpipe.frames import EndFrame, Frame, FrameDirection, StartFrame, SystemFrame
from voxpipe.pipelines.clock import Clock, VirtualClock, current_clock_is_virtual
from voxpipe.pipelines.observer import Observer
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask, TaskParams
from voxpipe.processors.base import FrameProcessor

F = TypeVar("F", bound=Frame)


@dataclass(slots=True)
class Sleep:
    """In a ``run_frames`` input list: let ``seconds`` of (virtual) time pass before the next frame."""

    seconds: float


@dataclass(slots=True)
class RunResult:
    """Frames that left the pipeline, in order, each direction apart."""

    downstream: list[Frame] = field(default_factory=list)
    upstream: list[Frame] = field(default_factory=list)
    # (time on the call clock, frame) for each downstream frame
    downstream_times: list[float] = field(default_factory=list)
    end_reason: str = ""

    def of_type(
        self, cls: type[F], direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> list[F]:
        frames = self.downstream if direction is FrameDirection.DOWNSTREAM else self.upstream
        return [f for f in frames if isinstance(f, cls)]

    def types(self, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> list[str]:
        frames = self.downstream if direction is FrameDirection.DOWNSTREAM else self.upstream
        return [type(f).__name__ for f in frames]


async def _run(
    processors: Sequence[FrameProcessor],
    frames: Iterable[Frame | Sleep],
    *,
    params: TaskParams,
    send_end: bool,
    observers: Sequence[Observer],
    end_timeout: float,
    ordered: bool,
) -> RunResult:
    result = RunResult()
    pipeline = Pipeline(list(processors))
    task = PipelineTask(pipeline, params=params, observers=observers, end_timeout=end_timeout)

    def down(f: Frame) -> None:
        if not isinstance(f, StartFrame):
            result.downstream.append(f)
            result.downstream_times.append(task.clock.now())

    task.on_downstream(down)
    task.on_upstream(result.upstream.append)
    runner = asyncio.get_running_loop().create_task(task.run())
    # Let the task deliver its StartFrame before the first input frame.
    await task.wait_started()
    clock = task.clock
    for item in frames:
        if isinstance(item, Sleep):
            await clock.sleep(item.seconds)
        elif ordered and not isinstance(item, SystemFrame):
            # Deliver at once, in list order, as a transport pushing from the wire does.
            await task.inject(item)
        else:
            await task.queue_frame(item)
    if send_end:
        await task.queue_frame(EndFrame(reason="run_frames"))
    await runner
    result.end_reason = task.end_reason
    return result


async def run_frames(
    processors: Sequence[FrameProcessor],
    frames: Iterable[Frame | Sleep],
    *,
    clock: Clock | None = None,
    params: TaskParams | None = None,
    send_end: bool = True,
    observers: Sequence[Observer] = (),
    end_timeout: float = 30.0,
    ordered: bool = True,
) -> RunResult:
    """Run ``processors`` as a pipeline over ``frames`` and return what came out.

    By default the call runs on a virtual clock (a fresh event loop in a worker thread, so
    this works from inside any async test); pass ``clock=Clock()`` to run on the current
    loop in real time (needed when processors talk to servers over sockets). With
    ``ordered`` (the default) every frame is delivered in list order; otherwise frames go
    through the task's queue, where system frames overtake queued ones. An ``EndFrame``
    follows the last input unless ``send_end`` is false (then the processors must end or
    cancel the call themselves).
    """
    params = params or TaskParams()
    kwargs = dict(
        params=params,
        send_end=send_end,
        observers=observers,
        end_timeout=end_timeout,
        ordered=ordered,
    )
    frames = list(frames)
    if clock is None:
        clock = VirtualClock()
    if isinstance(clock, VirtualClock) and not current_clock_is_virtual():
        vclock = clock
        return await asyncio.to_thread(
            lambda: vclock.run(_run(processors, frames, **kwargs))  # type: ignore[arg-type]
        )
    return await _run(processors, frames, **kwargs)  # type: ignore[arg-type]


def run_frames_sync(
    processors: Sequence[FrameProcessor],
    frames: Iterable[Frame | Sleep],
    **kwargs: object,
) -> RunResult:
    """``run_frames`` for synchronous code: runs on a virtual clock unless told otherwise."""
    clock = kwargs.pop("clock", None) or VirtualClock()
    assert isinstance(clock, Clock)
    if isinstance(clock, VirtualClock):
        return clock.run(run_frames(processors, frames, clock=clock, **kwargs))  # type: ignore[arg-type]
    return asyncio.run(run_frames(processors, frames, clock=clock, **kwargs))  # type: ignore[arg-type]
