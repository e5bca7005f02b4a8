"""The engine benchmark workload run on Pipecat, for a side-by-side comparison."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

# 20 ms of 16 kHz mono PCM16: 320 samples * 2 bytes.
_SAMPLE_RATE = 16000
_AUDIO_20MS = bytes(640)
# Guards against a wedged pipeline; never reached on a healthy run.
_GUARD_TIMEOUT_S = 120.0


def pipecat_available() -> bool:
    """Return True if pipecat-ai (the 'bench' extra) can be imported."""
    return importlib.util.find_spec("pipecat") is not None


def _require_pipecat() -> None:
    if not pipecat_available():
        raise ImportError(
            "voxpipe.bench.pipecat_engine needs the 'bench' extra: pip install 'voxpipe[bench]'"
        )


@contextlib.contextmanager
def _pipecat_logging_silenced() -> Iterator[None]:
    """Mute Pipecat's loguru output (its import banner included) for the duration."""
    # Pipecat logs at DEBUG for every lifecycle step; that would skew the timings and
    # flood the terminal. Only the "pipecat" namespace is muted, so other loguru users
    # in the process are untouched.
    from loguru import logger

    logger.disable("pipecat")
    try:
        yield
    finally:
        logger.enable("pipecat")


def _processor_classes() -> tuple[type, type]:
    """Build the pass-through and counting processor classes (pipecat imported lazily)."""
    from pipecat.frames.frames import Frame, InputAudioRawFrame, StartFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class PassThrough(FrameProcessor):
        """Forwards every frame unchanged."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class Counter(FrameProcessor):
        """The last measured processor: counts audio frames and forwards every frame.

        As voxpipe's counter does, it passes the frames on to the pipeline's own sink, so
        both engines run the same processors and the same framework hops after them.
        """

        def __init__(self) -> None:
            super().__init__()
            self.started = asyncio.Event()
            self.done = asyncio.Event()
            self.count = 0
            self._target = 0

        def expect(self, n: int) -> asyncio.Event:
            self.count = 0
            self._target = n
            self.done = asyncio.Event()
            return self.done

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                self.count += 1
                if self.count == self._target:
                    self.done.set()
            await self.push_frame(frame, direction)
            if isinstance(frame, StartFrame):
                self.started.set()

    return PassThrough, Counter


class _Session:
    """One Pipecat session: pipeline + worker running in a task, with minimal features."""

    def __init__(self, n_procs: int, classes: tuple[type, type]) -> None:
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineWorker
        from pipecat.utils.asyncio.task_manager import TaskManager
        from pipecat.workers.base_worker import WorkerParams

        pass_through, counter = classes
        # n_procs processors in all, the last one counting: the workload of voxpipe's bench.
        self.sink = counter()
        procs = [pass_through() for _ in range(n_procs - 1)]
        self.pipeline = Pipeline([*procs, self.sink])
        self.worker = PipelineWorker(
            self.pipeline,
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )
        # Run the worker directly instead of through a WorkerRunner: no bus, no
        # signal handlers, just the worker's own tasks.
        self._params = WorkerParams(task_manager=TaskManager())
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.worker.run(self._params))
        await asyncio.wait_for(self.sink.started.wait(), _GUARD_TIMEOUT_S)

    async def end(self) -> None:
        """End gracefully: an EndFrame drains the pipeline, then the worker finishes."""
        from pipecat.frames.frames import EndFrame

        await self.worker.queue_frame(EndFrame())
        assert self._task is not None
        await asyncio.wait_for(self._task, _GUARD_TIMEOUT_S)

    async def cancel(self) -> None:
        await self.worker.cancel()
        assert self._task is not None
        await asyncio.wait_for(self._task, _GUARD_TIMEOUT_S)


async def _push_audio(session: _Session, n_frames: int) -> float:
    """Queue n_frames audio frames and return seconds until the sink counted them all."""
    from pipecat.frames.frames import InputAudioRawFrame

    frames = [
        InputAudioRawFrame(audio=_AUDIO_20MS, sample_rate=_SAMPLE_RATE, num_channels=1)
        for _ in range(n_frames)
    ]
    done = session.sink.expect(n_frames)
    gc.collect()
    t0 = time.perf_counter()
    await session.worker.queue_frames(frames)
    await asyncio.wait_for(done.wait(), _GUARD_TIMEOUT_S)
    return time.perf_counter() - t0


async def pipecat_hop_bench(
    n_frames: int = 20000, n_procs: int = 10, warmup: int = 500
) -> dict[str, float]:
    """µs per hop and frames/s through ``n_procs`` Pipecat processors (the last one counting).

    The workload of ``voxpipe.bench.engine.hop_bench``; the ``pipecat_frames`` (counted at
    the last processor), ``pipecat_warmup_frames`` and ``pipecat_procs`` it returns say so.
    """
    _require_pipecat()
    if n_procs < 1 or n_frames < 1:
        raise ValueError("pipecat_hop_bench needs n_procs >= 1 and n_frames >= 1")
    with _pipecat_logging_silenced():
        return await _hop_bench(n_frames, n_procs, warmup)


async def _hop_bench(n_frames: int, n_procs: int, warmup: int) -> dict[str, float]:
    session = _Session(n_procs, _processor_classes())
    await session.start()
    try:
        if warmup:
            await _push_audio(session, warmup)
        total_s = await _push_audio(session, n_frames)
        counted = session.sink.count
    finally:
        await session.end()
    return {
        "pipecat_hop_us": total_s / (n_frames * n_procs) * 1e6,
        "pipecat_frames_per_s": n_frames / total_s,
        "pipecat_frames": counted,
        "pipecat_warmup_frames": warmup,
        "pipecat_procs": len(session.pipeline.processors) - 2,  # less its own source and sink
    }


async def pipecat_session_bench(n_sessions: int = 100, n_procs: int = 10) -> dict[str, float]:
    """Measure memory (KB) and asyncio tasks per idle started Pipecat session."""
    _require_pipecat()
    with _pipecat_logging_silenced():
        return await _session_bench(n_sessions, n_procs)


async def _session_bench(n_sessions: int, n_procs: int) -> dict[str, float]:
    classes = _processor_classes()
    # Warm-up: one-time imports, class creation and caches are not per-session cost.
    warm = _Session(n_procs, classes)
    await warm.start()
    await warm.end()
    del warm

    sessions: list[_Session] = []
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        gc.collect()
        mem0 = tracemalloc.get_traced_memory()[0]
        tasks0 = len(asyncio.all_tasks())
        for _ in range(n_sessions):
            s = _Session(n_procs, classes)
            await s.start()
            sessions.append(s)
        gc.collect()
        mem1 = tracemalloc.get_traced_memory()[0]
        tasks1 = len(asyncio.all_tasks())
    finally:
        if started_tracing:
            tracemalloc.stop()
        results: list[Any] = await asyncio.gather(
            *(s.cancel() for s in sessions), return_exceptions=True
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} Pipecat sessions did not cancel cleanly") from errors[0]
    return {
        "pipecat_session_kb": (mem1 - mem0) / n_sessions / 1024,
        "pipecat_session_tasks": (tasks1 - tasks0) / n_sessions,
    }
