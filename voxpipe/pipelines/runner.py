"""PipelineRunner: runs many pipeline tasks and stops them cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from voxpipe.pipelines.task import PipelineTask

_logger = logging.getLogger("voxpipe.runner")


class PipelineRunner:
    """Runs tasks until they finish; the first signal ends them gracefully, a second cancels them."""

    def __init__(self, *, handle_signals: bool = True) -> None:
        self._handle_signals = handle_signals
        self._tasks: dict[PipelineTask, asyncio.Task[None]] = {}
        self._signalled = 0
        self._idle = asyncio.Event()

    @property
    def tasks(self) -> list[PipelineTask]:
        return list(self._tasks)

    def start(self, task: PipelineTask) -> asyncio.Task[None]:
        """Start running ``task`` now and return the asyncio task that runs it."""
        runner = asyncio.get_running_loop().create_task(task.run(), name=task.name)
        self._tasks[task] = runner
        self._idle.clear()
        runner.add_done_callback(functools.partial(self._done, task))
        return runner

    def _done(self, task: PipelineTask, _runner: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not self._tasks:
            self._idle.set()

    async def run(self, *tasks: PipelineTask) -> None:
        """Run ``tasks`` (and any started later) until all have finished."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self._handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # not the main thread
                    pass
        try:
            for t in tasks:
                self.start(t)
            if self._tasks:
                await self._idle.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signalled += 1
        graceful = self._signalled == 1
        _logger.info(
            "%s: %s %d call(s)", sig.name, "ending" if graceful else "cancelling", len(self._tasks)
        )
        loop = asyncio.get_running_loop()
        for task in list(self._tasks):
            if graceful:
                loop.create_task(task.stop_when_done(reason=sig.name))
            else:
                loop.create_task(task.cancel(reason=sig.name))

    async def stop(self, *, graceful: bool = True) -> None:
        """End (or cancel) every running task and wait for them."""
        for task in list(self._tasks):
            if graceful:
                await task.stop_when_done(reason="runner stop")
            else:
                await task.cancel(reason="runner stop")
        running = list(self._tasks.values())
        if running:
            await asyncio.gather(*running, return_exceptions=True)
