"""The end of a call breaks its reference cycles: reference counting frees it at once."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import pytest

from voxpipe.frames import Frame, FrameDirection, StartFrame, TextFrame
from voxpipe.pipelines import ParallelPipeline, Pipeline, PipelineTask
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.scripted import ScriptedLLMService
from voxpipe.processors.outage import OutageTracker


class Worker(FrameProcessor):
    """Keeps its owned task, as services keep their workers, and counts what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self._worker: asyncio.Task[None] | None = None
        self.outage = OutageTracker(self, service="test", provider="test")
        self.seen = 0

    async def on_start(self, frame: StartFrame) -> None:
        self._worker = self.create_task(asyncio.Event().wait(), name="idle")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.seen += 1
        await self.push_frame(frame, direction)


async def _one_call() -> list[weakref.ref[Any]]:
    """Run one call to its end; weak references to its task and processors."""
    llm = ScriptedLLMService()
    first, last = Worker(), Worker()

    async def tool() -> dict[str, Any]:  # a bot's tool closure, holding a processor
        return {"seen": last.seen}

    llm.register_function(tool)
    pipeline = Pipeline([first, ParallelPipeline([Worker()], [Worker()]), llm, last])
    task = PipelineTask(pipeline)
    out: list[Frame] = []
    task.on_downstream(out.append)  # a listener holding what the call produced
    refs: list[weakref.ref[Any]] = [weakref.ref(p) for p in pipeline.processors()]
    runner = asyncio.get_running_loop().create_task(task.run())
    await task.wait_started()
    await task.queue_frame(TextFrame("hello"))
    await task.stop_when_done()
    await runner
    await asyncio.sleep(0)  # the owned tasks' done callbacks
    # What the run left stays readable; frames pushed now go nowhere, logging still works.
    assert first.seen == last.seen > 0 and task.has_finished
    await first.push_frame(TextFrame("late"))
    first.logger.info("after the end")
    assert len(pipeline.processors_list) == 4 and len(list(pipeline.processors())) == len(refs)
    return [*refs, weakref.ref(task)]


async def test_an_ended_task_is_freed_without_the_cycle_collector(no_automatic_gc: None) -> None:
    refs = await _one_call()
    assert [r() for r in refs if r() is not None] == []


async def test_a_pipeline_runs_again_in_another_task() -> None:
    first, last = Worker(), Worker()
    pipeline = Pipeline([first, ParallelPipeline([Worker()], [Worker()]), last])
    for n in (1, 2):
        task = PipelineTask(pipeline)
        out: list[Frame] = []
        task.on_downstream(out.append)
        runner = asyncio.get_running_loop().create_task(task.run())
        await task.wait_started()
        await task.queue_frame(TextFrame(f"run {n}"))
        await task.stop_when_done()
        await runner
        assert [f.text for f in out if isinstance(f, TextFrame)] == [f"run {n}"]


async def test_a_processor_logs_with_its_call_id_after_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = FrameProcessor()
    task = PipelineTask(Pipeline([proc]), call_id="CA-ended")
    runner = asyncio.get_running_loop().create_task(task.run())
    await task.wait_started()
    await task.stop_when_done()
    await runner
    with caplog.at_level(logging.INFO, logger="voxpipe.processor"):
        proc.logger.info("late")
    assert [r.call_id for r in caplog.records] == ["CA-ended"]  # type: ignore[attr-defined]
