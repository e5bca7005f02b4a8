"""What every fake shares: async context management and waiting on what it has recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["FakeServer"]


class FakeServer:
    """Base of the fake provider servers: `async with Fake() as fake:` starts and stops it."""

    def __init__(self) -> None:
        self.port = 0
        self._changed = asyncio.Event()

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def go_down(self) -> None:
        """Start an outage: drop open connections, refuse new ones."""
        raise NotImplementedError

    async def come_back(self) -> None:
        """End an outage: serve again at the same address."""
        raise NotImplementedError

    def _notify(self) -> None:
        """Wake whoever waits in `wait_for`: something recorded has changed."""
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Return once `predicate()` is true, re-checking whenever the fake records something.

        Raises TimeoutError (with the predicate's name) if it stays false for `timeout` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            name = getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(
                f"{type(self).__name__}: condition {name} still false after {timeout} s"
            ) from None
