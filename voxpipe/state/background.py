"""One background task with a start and a stop that never swallows its caller's cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundTask:
    """Runs ``factory()`` as a named task between ``start()`` and ``stop()``.

    ``stop()`` cancels the task and waits until it has really finished. The task's own
    ``CancelledError`` is expected and absorbed; a cancellation of the code *calling* ``stop()``
    (a server shutting down, a call cancelled while it ends) is re-raised, so stopping a
    background task never turns a cancelled caller into one that carries on.
    """

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._factory = factory
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while the task exists and has not finished."""
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The current task, if started (for tests and diagnostics)."""
        return self._task

    def start(self) -> bool:
        """Start the task unless it is already running; True when a new task was started."""
        if self.running:
            return False
        self._task = asyncio.get_running_loop().create_task(self._factory(), name=self.name)
        return True

    async def stop(self) -> None:
        """Cancel the task and wait for it; re-raise if the caller itself is being cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        if task is asyncio.current_task():
            return  # stopping from inside the task: it ends when this step returns
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller was cancelled while waiting: not ours to swallow
        except Exception:
            # A task that died of a bug has nothing left to stop; say so, but stop cleanly.
            logger.exception("background task %s had failed", self.name)
