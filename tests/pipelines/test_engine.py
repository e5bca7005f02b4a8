"""Engine semantics: ordering, system frames, interruptions, end/cancel, errors, nesting."""

from __future__ import annotations

import asyncio

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    InterruptionRequestFrame,
    TextFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
)
from voxpipe.pipelines import ParallelPipeline, Pipeline, PipelineTask
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.base import FrameProcessor
from voxpipe.testing import Sleep, run_frames

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


def texts(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TextFrame)]


class Upper(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and direction is DOWN:
            frame = TextFrame(frame.text.upper())
        await self.push_frame(frame, direction)


class Speaker(FrameProcessor):
    """Turns a TTSSpeakFrame into one TextFrame per word, 100 ms apart, from an owned task."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TTSSpeakFrame):
            self.create_task(self._speak(frame.text), name="speak")
        else:
            await self.push_frame(frame, direction)

    async def _speak(self, text: str) -> None:
        try:
            for word in text.split():
                await self.clock.sleep(0.1)
                await self.push_frame(TextFrame(word))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def on_end(self, frame: EndFrame) -> None:
        await self.wait_for_tasks()


class Buffer(FrameProcessor):
    """Holds text frames and releases one every 50 ms: queued output an interruption must drop."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[Frame] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    async def on_start(self, frame: Frame) -> None:
        self.worker = self.create_task(self._drain())

    async def on_interruption(self) -> None:
        # The worker (interruptible) is already cancelled, with whatever frame it held.
        self.queue = asyncio.Queue()
        self.worker = self.create_task(self._drain())

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame | EndFrame) and direction is DOWN:
            self.queue.put_nowait(frame)
        else:
            await self.push_frame(frame, direction)

    async def _drain(self) -> None:
        while True:
            frame = await self.queue.get()
            if isinstance(frame, TextFrame):
                await self.clock.sleep(0.05)
            await self.push_frame(frame)


class Boom(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "boom":
            raise ValueError("kaboom")
        await self.push_frame(frame, direction)


class Reflect(FrameProcessor):
    """Sends every text frame back upstream too."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and direction is DOWN:
            await self.push_frame(TextFrame("up:" + frame.text), UP)
        await self.push_frame(frame, direction)


async def test_order_preserved_downstream_and_upstream() -> None:
    words = [f"w{i}" for i in range(50)]
    r = await run_frames([Upper(), Reflect(), FrameProcessor()], [TextFrame(w) for w in words])
    assert texts(r.downstream) == [w.upper() for w in words]
    assert texts(r.upstream) == ["up:" + w.upper() for w in words]
    assert isinstance(r.downstream[-1], EndFrame)


async def test_system_frame_overtakes_queued_data_frames() -> None:
    gate = asyncio.Event()

    class Gate(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await gate.wait()
            await self.push_frame(frame, direction)

    task = PipelineTask(Pipeline([Gate()]), clock=Clock())
    out: list[Frame] = []
    task.on_downstream(out.append)
    runner = asyncio.create_task(task.run())
    for i in range(5):
        await task.queue_frame(TextFrame(str(i)))
    await task.wait_started()
    await task.queue_frame(UserStartedSpeakingFrame())
    # The system frame arrived while every text frame is still queued or held.
    kinds = [type(f).__name__ for f in out]
    assert "UserStartedSpeakingFrame" in kinds
    assert not any(isinstance(f, TextFrame) for f in out)
    gate.set()
    await task.stop_when_done()
    await runner
    assert texts(out) == ["0", "1", "2", "3", "4"]


async def test_interruption_cancels_owned_tasks_and_drops_queued_output() -> None:
    speaker, buffer = Speaker(), Buffer()
    r = await run_frames(
        [speaker, buffer],
        [
            TTSSpeakFrame("one two three four five six seven eight"),
            Sleep(0.35),  # three words generated, some still queued in the buffer
            InterruptionFrame(),
            TextFrame("after"),
            Sleep(1.0),
        ],
    )
    assert speaker.cancelled == 1
    out = r.downstream
    cut = next(i for i, f in enumerate(out) if isinstance(f, InterruptionFrame))
    before, after = texts(out[:cut]), texts(out[cut:])
    assert after == ["after"], "nothing generated before the interruption may come out after it"
    assert before and len(before) < 3
    assert set(before) <= {"one", "two", "three"}


async def test_interruption_request_upstream_becomes_the_sweep() -> None:
    class Asker(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "stop":
                await self.request_interruption("barge-in")
                return
            await self.push_frame(frame, direction)

    seen: list[str] = []

    class Witness(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            seen.append(type(frame).__name__)
            await self.push_frame(frame, direction)

    r = await run_frames([Witness(), Asker()], [TextFrame("stop")])
    assert any(isinstance(f, InterruptionRequestFrame) for f in r.upstream)
    assert "InterruptionFrame" in seen  # the sweep started at the source, ahead of the asker
    assert any(isinstance(f, InterruptionFrame) for f in r.downstream)


async def test_end_drains_and_cancel_does_not() -> None:
    r = await run_frames([Speaker(), Buffer()], [TTSSpeakFrame("a b c d")])
    assert texts(r.downstream) == ["a", "b", "c", "d"]
    assert isinstance(r.downstream[-1], EndFrame)

    r = await run_frames(
        [Speaker(), Buffer()],
        [TTSSpeakFrame("a b c d"), Sleep(0.15), CancelFrame()],
        send_end=False,
    )
    assert len(texts(r.downstream)) <= 1
    assert isinstance(r.downstream[-1], CancelFrame)


async def test_end_that_cannot_drain_becomes_cancel() -> None:
    class Stuck(FrameProcessor):
        async def on_end(self, frame: EndFrame) -> None:
            await asyncio.Event().wait()

    r = await run_frames([Stuck()], [TextFrame("x")], end_timeout=5.0)
    assert r.end_reason == "end timeout"
    assert isinstance(r.downstream[-1], CancelFrame)


async def test_exception_becomes_error_frame_and_pipeline_survives() -> None:
    r = await run_frames(
        [Boom(), Upper(), FrameProcessor()], [TextFrame("a"), TextFrame("boom"), TextFrame("b")]
    )
    errors = r.of_type(ErrorFrame, UP)
    assert len(errors) == 1 and "kaboom" in errors[0].error and not errors[0].fatal
    assert texts(r.downstream) == ["A", "B"]


async def test_fatal_error_cancels_the_call() -> None:
    class Fatal(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await self.push_error("cannot go on", fatal=True)
                return
            await self.push_frame(frame, direction)

    r = await run_frames([Fatal()], [TextFrame("x")], send_end=False)
    assert r.end_reason == "fatal error"
    assert isinstance(r.downstream[-1], CancelFrame)


async def test_nested_pipelines_pass_frames_both_ways() -> None:
    inner = Pipeline([Upper(), Pipeline([Reflect()])])
    r = await run_frames(
        [FrameProcessor(), inner, FrameProcessor()], [TextFrame("x"), TextFrame("y")]
    )
    assert texts(r.downstream) == ["X", "Y"]
    assert texts(r.upstream) == ["up:X", "up:Y"]


async def test_parallel_pipeline_branches_see_every_frame_and_merge() -> None:
    class Tag(FrameProcessor):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag
            self.seen: list[str] = []

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                self.seen.append(f"{direction.name}:{frame.text}")
                if direction is DOWN and not frame.text.startswith(self.tag):
                    await self.push_frame(TextFrame(f"{self.tag}{frame.text}"), direction)
            await self.push_frame(frame, direction)

    a, b = Tag("a:"), Tag("b:")
    r = await run_frames(
        [ParallelPipeline([a], [b]), Reflect()],
        [TextFrame("x"), BotStartedSpeakingFrame()],
    )
    assert sorted(texts(r.downstream)) == ["a:x", "b:x", "x"]  # original passed once
    assert sum(isinstance(f, BotStartedSpeakingFrame) for f in r.downstream) == 1
    assert sum(isinstance(f, EndFrame) for f in r.downstream) == 1
    # upstream frames from after the parallel pipeline reach both branches and leave once
    assert "UPSTREAM:up:x" in a.seen and "UPSTREAM:up:x" in b.seen
    assert texts(r.upstream).count("up:x") == 1


async def test_interruption_requested_from_an_owned_task_cancels_that_task() -> None:
    """The sweep runs apart from the requester, so the requester's own task is cancelled too."""

    class SelfInterrupting(FrameProcessor):
        def __init__(self) -> None:
            super().__init__()
            self.after_request = 0
            self.cancelled = asyncio.Event()

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TTSSpeakFrame):
                self.create_task(self._work())
            await self.push_frame(frame, direction)

        async def _work(self) -> None:
            try:
                await self.request_interruption("from inside")
                self.after_request += 1  # must not run: the task was cancelled by the sweep
                await self.clock.sleep(1.0)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

    proc = SelfInterrupting()
    r = await run_frames([proc], [TTSSpeakFrame("go"), Sleep(2.0)])
    assert proc.cancelled.is_set()
    assert proc.after_request == 0
    assert any(isinstance(f, InterruptionFrame) for f in r.downstream)
