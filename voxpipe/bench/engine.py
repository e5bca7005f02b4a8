"""`voxpipe bench engine`: per-hop cost, throughput and idle-session footprint of the engine."""

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


class _PassThrough(FrameProcessor):
    """A processor that looks at each frame and passes it on, as most pipeline stages do."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)


async def _started_task(n_procs: int) -> tuple[PipelineTask, asyncio.Task[None]]:
    task = PipelineTask(Pipeline([_PassThrough() for _ in range(n_procs)]))
    runner = asyncio.get_running_loop().create_task(task.run())
    await task.wait_started()
    return task, runner


async def hop_bench(n_frames: int = 20000, n_procs: int = 10) -> dict[str, float]:
    """Frames through ``n_procs`` pass-through processors via the task queue, timed end to end."""
    task, runner = await _started_task(n_procs)
    arrived = 0
    done = asyncio.Event()
    target = 0

    def count(frame: Frame) -> None:
        nonlocal arrived
        if type(frame) is InputAudioFrame:
            arrived += 1
            if arrived >= target:
                done.set()

    task.on_downstream(count)
    # warm-up
    target = 500
    for _ in range(500):
        await task.queue_frame(InputAudioFrame(AUDIO_20MS_16K, 16000))
    await done.wait()
    arrived, target = 0, n_frames
    done.clear()
    frames = [InputAudioFrame(AUDIO_20MS_16K, 16000) for _ in range(n_frames)]
    t0 = time.perf_counter()
    for f in frames:
        await task.queue_frame(f)
    await done.wait()
    total = time.perf_counter() - t0
    await task.queue_frame(EndFrame())
    await runner
    return {"hop_us": total / (n_frames * n_procs) * 1e6, "frames_per_s": n_frames / total}


async def session_bench(n_sessions: int = 100, n_procs: int = 10) -> dict[str, float]:
    """Memory and asyncio tasks per idle, started session of ``n_procs`` processors."""
    warm, warm_runner = await _started_task(n_procs)
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
    for task, runner in sessions:
        await task.cancel()
        await runner
    return {"session_kb": mem / n_sessions / 1024, "session_tasks": tasks / n_sessions}


async def run_engine_bench(
    n_frames: int = 20000, n_procs: int = 10, n_sessions: int = 100, with_pipecat: bool = True
) -> dict[str, Any]:
    """All engine numbers, and Pipecat's beside them when it is installed."""
    out: dict[str, Any] = {"procs": n_procs, "frames": n_frames, "sessions": n_sessions}
    out.update(await hop_bench(n_frames, n_procs))
    out.update(await session_bench(n_sessions, n_procs))
    if with_pipecat:
        from voxpipe.bench import pipecat_engine

        if pipecat_engine.pipecat_available():
            out.update(await pipecat_engine.pipecat_hop_bench(min(n_frames, 5000), n_procs))
            out.update(await pipecat_engine.pipecat_session_bench(n_sessions, n_procs))
            out["ratio"] = out["pipecat_hop_us"] / out["hop_us"]
        else:
            out["pipecat"] = "not installed (pip install 'voxpipe[bench]')"
    return out
