"""`voxpipe bench engine`: per-hop cost, throughput and idle-session footprint of the engine.

With Pipecat installed (the ``bench`` extra), ``voxpipe.bench.pipecat_engine`` runs the same
workload on it: the same number of frames, the same warm-up, the same processors (n - 1
pass-throughs and a counting one that passes frames on to the framework's own sink). Both
sides report the workload they actually ran and ``same_workload`` checks it.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from typing import Any

from voxpipe.frames import EndFrame, Frame, FrameDirection, InputAudioFrame
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.base import FrameProcessor

AUDIO_20MS_16K = b"\x00\x01" * 320  # 20 ms of 16 kHz mono PCM16
# The workload both engines run (voxpipe here, Pipecat in ``pipecat_engine``): the same
# frames, the same warm-up, the same processors (n - 1 pass-throughs and a counting one).
WARMUP_FRAMES = 500


class _PassThrough(FrameProcessor):
    """A processor that looks at each frame and passes it on, as most pipeline stages do."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)


class _Counter(FrameProcessor):
    """The last measured processor: counts audio frames and passes everything on."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, n: int) -> None:
        self.count, self.target = 0, n
        self.done.clear()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if type(frame) is InputAudioFrame:
            self.count += 1
            if self.count == self.target:
                self.done.set()
        await self.push_frame(frame, direction)


async def _started_task(n_procs: int) -> tuple[PipelineTask, asyncio.Task[None], _Counter]:
    counter = _Counter()
    procs: list[FrameProcessor] = [_PassThrough() for _ in range(n_procs - 1)]
    pipeline = Pipeline([*procs, counter])
    task = PipelineTask(pipeline)
    runner = asyncio.get_running_loop().create_task(task.run())
    await task.wait_started()
    return task, runner, counter


async def _push_audio(task: PipelineTask, counter: _Counter, n_frames: int) -> float:
    """Queue ``n_frames`` audio frames; seconds until the last processor has counted them all."""
    frames = [InputAudioFrame(AUDIO_20MS_16K, 16000) for _ in range(n_frames)]
    counter.expect(n_frames)
    gc.collect()
    t0 = time.perf_counter()
    for f in frames:
        await task.queue_frame(f)
    await counter.done.wait()
    return time.perf_counter() - t0


async def hop_bench(
    n_frames: int = 20000, n_procs: int = 10, warmup: int = WARMUP_FRAMES
) -> dict[str, float]:
    """Frames through ``n_procs`` processors via the task queue, timed end to end.

    Also returns the workload as run (``frames`` counted at the last processor,
    ``warmup_frames``, ``procs``), so a comparison can check both engines ran the same.
    """
    if n_procs < 1 or n_frames < 1:
        raise ValueError("hop_bench needs n_procs >= 1 and n_frames >= 1")
    task, runner, counter = await _started_task(n_procs)
    assert isinstance(task.pipeline, Pipeline)
    procs = len(task.pipeline.processors_list)
    if warmup:
        await _push_audio(task, counter, warmup)
    total = await _push_audio(task, counter, n_frames)
    counted = counter.count
    await task.queue_frame(EndFrame())
    await runner
    return {
        "hop_us": total / (n_frames * n_procs) * 1e6,
        "frames_per_s": n_frames / total,
        "frames": counted,
        "warmup_frames": warmup,
        "procs": procs,
    }


async def session_bench(n_sessions: int = 100, n_procs: int = 10) -> dict[str, float]:
    """Memory and asyncio tasks per idle, started session of ``n_procs`` processors."""
    warm, warm_runner, _ = await _started_task(n_procs)
    await warm.cancel()
    await warm_runner
    gc.collect()
    tracemalloc.start()
    base_mem = tracemalloc.get_traced_memory()[0]
    base_tasks = len(asyncio.all_tasks())
    sessions = [await _started_task(n_procs) for _ in range(n_sessions)]
    gc.collect()
    mem = tracemalloc.get_traced_memory()[0] - base_mem
    tasks = len(asyncio.all_tasks()) - base_tasks
    tracemalloc.stop()
    for task, runner, _ in sessions:
        await task.cancel()
        await runner
    return {"session_kb": mem / n_sessions / 1024, "session_tasks": tasks / n_sessions}


async def run_engine_bench(
    n_frames: int = 20000, n_procs: int = 10, n_sessions: int = 100, with_pipecat: bool = True
) -> dict[str, Any]:
    """All engine numbers, and Pipecat's beside them on the same workload when it is installed."""
    out: dict[str, Any] = {"sessions": n_sessions}
    out.update(await hop_bench(n_frames, n_procs, WARMUP_FRAMES))
    out.update(await session_bench(n_sessions, n_procs))
    if with_pipecat:
        from voxpipe.bench import pipecat_engine

        if pipecat_engine.pipecat_available():
            out.update(await pipecat_engine.pipecat_hop_bench(n_frames, n_procs, WARMUP_FRAMES))
            out.update(await pipecat_engine.pipecat_session_bench(n_sessions, n_procs))
            out["ratio"] = out["pipecat_hop_us"] / out["hop_us"]
            out["same_workload"] = all(
                out[k] == out[f"pipecat_{k}"] for k in ("frames", "warmup_frames", "procs")
            )
        else:
            out["pipecat"] = "not installed (pip install 'voxpipe[bench]')"
    return out
