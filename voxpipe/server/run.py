"""Running the app under uvicorn: the production entry point and an in-process test server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from voxpipe.config.settings import VoxpipeSettings

__all__ = ["DrainingServer", "RunningServer", "running_server", "tune_gc", "uvicorn_config"]

logger = logging.getLogger(__name__)

# Largest websocket message uvicorn accepts; beyond it the peer gets close 1009 (message too big).
WS_MAX_SIZE = 256 * 1024
# What uvicorn gives open connections and tasks once it is shutting down (after any drain).
GRACEFUL_SHUTDOWN_S = 10


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
        # By the time uvicorn shuts down, live calls were drained (or a second signal asked to
        # stop now): a connection still open then is stuck, and must not hold the exit forever.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
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


def limit_native_threads() -> None:
    """One thread for numpy's BLAS in a server process, called once everything is loaded.

    OpenBLAS starts a worker thread per extra core at import and lets it spin after each small
    matrix product (Smart Turn's mel projection, resampling): measured on a 2-core machine
    with 20 full-agent calls, that idle spinning thread used a quarter of the server's CPU
    (3.1 s of 12 s) and did nothing the calling thread could not; calls are the parallelism
    here, not BLAS threads.
    """
    import numpy  # noqa: F401  (loads OpenBLAS, so the limit reaches it even if nothing has yet)

    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # the audio extra is not installed: no numpy-heavy work in this server
        return
    threadpool_limits(limits=1)


class DrainingServer(uvicorn.Server):
    """uvicorn that drains live calls on SIGTERM/SIGINT before it stops (issue 15).

    The first signal runs ``drain`` (no new calls, live ones finish up to DRAIN_TIMEOUT_S,
    then are ended cleanly) while the server keeps answering /healthz, /readyz (unready) and
    the live calls' sockets; then uvicorn shuts down as usual. A second signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set in the signal handler itself, not when the loop gets to it: two signals sent back
        # to back (Ctrl-C twice, a supervisor forwarding both) otherwise both looked like the
        # first, the "stop now" was lost and the worker sat in a drain nobody asked for.
        self._drain_requested = False

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain_requested or self.should_exit:
            super().handle_exit(sig, frame)  # not started yet, or a second signal: stop now
            return
        self._drain_requested = True
        # Not kept for uvicorn to re-raise after its shutdown: a drained server exits with 0.
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        if self._drain_task is None and self._loop is not None:
            self._drain_task = self._loop.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        except Exception:
            logger.exception("draining failed: stopping now")
        finally:
            self.should_exit = True


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
