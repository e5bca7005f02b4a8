"""Running the app under uvicorn: the production entry point and an in-process test server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from voxpipe.config.settings import VoxpipeSettings

__all__ = ["RunningServer", "running_server", "tune_gc", "uvicorn_config"]

# Largest websocket message uvicorn accepts; beyond it the peer gets close 1009 (message too big).
WS_MAX_SIZE = 256 * 1024


def uvicorn_config(
    app: Any,
    settings: VoxpipeSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "warning",
) -> uvicorn.Config:
    """uvicorn settings for voxpipe: websocket pings and size limit, proxy headers trusted."""
    return uvicorn.Config(
        app,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        ws="websockets-sansio",
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        ws_max_size=WS_MAX_SIZE,
        # Behind a TLS proxy (ngrok, a load balancer) X-Forwarded-Proto makes request URLs https.
        proxy_headers=True,
        log_level=log_level,
        # uvicorn's own loggers go through the root handler voxpipe.logs sets up (one format,
        # JSON included) instead of the handlers uvicorn would install.
        log_config=None,
        access_log=False,
        lifespan="on",
    )


def tune_gc() -> None:
    """Garbage-collector settings for a server process, called once everything is loaded.

    Calls allocate many short-lived objects (frames, messages): with the default thresholds
    the collector runs hundreds of times a minute, and a full collection that walks every
    module, the VAD model and the web framework stalls the event loop for tens of
    milliseconds, longer than the output lead, so callers hear gaps. Freezing what exists at
    start-up takes it out of every later collection; higher thresholds make them rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


@dataclass(slots=True)
class RunningServer:
    """A uvicorn server running in this event loop."""

    server: uvicorn.Server
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def running_server(
    app: Any, settings: VoxpipeSettings, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on ``host`` (an ephemeral port by default) for the duration of the block."""
    config = uvicorn_config(app, settings, host=host, port=port)
    server = uvicorn.Server(config)
    # The embedding program (a test, a benchmark) owns the process's signal handlers.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()  # raises the startup error
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)  # uvicorn offers no startup event to await
        sock = server.servers[0].sockets[0]
        bound_port = sock.getsockname()[1]
        yield RunningServer(server, host, bound_port)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
