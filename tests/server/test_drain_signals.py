"""Two exit signals sent back to back: the second one stops the server, even mid-drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.run import DrainingServer, uvicorn_config


async def _app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] == "lifespan":  # the smallest ASGI app uvicorn will start
        while True:
            message = await receive()  # type: ignore[operator]
            kind = message["type"].split(".")[-1]
            await send({"type": f"lifespan.{kind}.complete"})  # type: ignore[operator]
            if kind == "shutdown":
                return


async def _serve_with_drain(drain: asyncio.Event) -> tuple[DrainingServer, asyncio.Task[None]]:
    async def never_drains() -> None:
        drain.set()
        await asyncio.Event().wait()  # a call that never ends

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(_app, VoxpipeSettings(), host="127.0.0.1", port=0)
    server = DrainingServer(config, drain=never_drains)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)  # uvicorn offers no startup event to await
    return server, task


async def test_back_to_back_signals_stop_a_server_whose_drain_never_ends() -> None:
    drain_started = asyncio.Event()
    server, task = await _serve_with_drain(drain_started)
    # Both arrive before the loop runs anything: the second must not be mistaken for the first.
    server.handle_exit(signal.SIGINT, None)
    server.handle_exit(signal.SIGINT, None)
    async with asyncio.timeout(15):
        await task
    assert server.should_exit


async def test_one_signal_drains_and_keeps_serving_until_the_drain_ends() -> None:
    drain_started = asyncio.Event()
    server, task = await _serve_with_drain(drain_started)
    server.handle_exit(signal.SIGTERM, None)
    async with asyncio.timeout(5):
        await drain_started.wait()
    await asyncio.sleep(0.3)  # uvicorn polls should_exit every 0.1 s: it must still be serving
    assert not task.done() and not server.should_exit
    server.handle_exit(signal.SIGTERM, None)  # the second: stop now
    async with asyncio.timeout(15):
        await task
