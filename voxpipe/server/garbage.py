"""Frees what ended calls leave to the cycle collector: one full collection now and then.

An ended call is taken apart (``PipelineTask._dispose``) so reference counting frees it at
once; what a bot builds into cycles of its own (tool closures capturing the objects that hold
them) still waits for a full collection, which ``tune_gc`` makes rare because one walking
every live object stalled the event loop. So the server runs one every
``GC_SWEEP_INTERVAL_S`` (60 s) when calls have ended since the last, and times it
(``voxpipe_gc_sweep_seconds``). Measured in 4-minute 100-call echo soaks (calls replaced every
minute): before calls were taken apart, RSS +13-17% without sweeps; now +0.3% without sweeps,
+0.2% with one every 10 s (35 ms each: the walk over the live calls, not the freeing).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

__all__ = ["GarbageSweeper"]

logger = logging.getLogger(__name__)


class GarbageSweeper:
    """A background task that runs a full collection after calls have ended."""

    def __init__(
        self,
        ended_calls: Callable[[], int],
        interval_s: float,
        *,
        observe: Callable[[float, int], None] | None = None,
    ) -> None:
        self._ended_calls = ended_calls  # how many calls have ended so far (monotonic)
        self.interval_s = interval_s
        self._observe = observe  # (seconds the collection took, objects it freed)
        self._seen = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sweeping (no-op when the interval is 0: sweeping is off)."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-sweep")

    async def stop(self) -> None:
        """Stop the background task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def sweep_if_calls_ended(self) -> bool:
        """Run one full collection if a call ended since the last; True when it ran."""
        ended = self._ended_calls()
        if ended == self._seen:
            return False  # nothing new to free: a full walk would be pure cost
        self._seen = ended
        t0 = time.perf_counter()
        freed = gc.collect()
        took = time.perf_counter() - t0
        if self._observe is not None:
            self._observe(took, freed)
        logger.debug("gc sweep: %d objects freed in %.1f ms", freed, took * 1000)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sweep_if_calls_ended()
            except Exception:  # a sweep must never end the sweeping, nor the server
                logger.exception("gc sweep failed")
