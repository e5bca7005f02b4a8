"""What the carrier REST fakes share: an aiohttp app on loopback, an HTTP client for the
webhooks they post, and the background steps of their scripted agents."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from voxpipe.testing.fakes._base import FakeServer
from voxpipe.testing.fakes._http import AppServer, web

__all__ = ["CarrierFake"]


class CarrierFake(FakeServer):
    """Base of the Twilio, Telnyx and Vonage REST fakes: serves ``app``, posts webhooks with ``_http``."""

    def __init__(self, app: web.Application) -> None:
        super().__init__()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._server = AppServer(app)

    @property
    def url(self) -> str:
        """The base URL in place of the carrier's API host."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=10)
        self.port = await self._server.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()
        if self._http is not None:
            await self._http.aclose()

    async def settle(self) -> None:
        """Wait for the scripted agents' pending steps and webhooks."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
