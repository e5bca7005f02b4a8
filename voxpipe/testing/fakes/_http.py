"""Run an aiohttp application on 127.0.0.1 with an ephemeral port, in the caller's event loop."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.testing.fakes needs the 'testing' extra (aiohttp, websockets): "
        "pip install 'voxpipe[testing]'"
    ) from exc

__all__ = ["AppServer", "web"]


class AppServer:
    """Serves one aiohttp app on a free loopback port; `start()` returns the port."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Handlers parked forever (a "hang" fault) wait on this so stop() can release them.
        self.stopping = asyncio.Event()

    async def start(self, port: int = 0) -> int:
        """Serve on ``port`` (0: a free one); returns the port."""
        self.stopping = asyncio.Event()
        # handler_cancellation: a client that gives up (timeout) cancels the handler, like a
        # real server noticing the disconnect; shutdown_timeout keeps stop() quick.
        self._runner = web.AppRunner(
            self._app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        address: Any = self._runner.addresses[0]
        self.port = int(address[1])
        return self.port

    async def stop(self) -> None:
        self.stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
