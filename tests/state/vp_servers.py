"""Helpers for tests against real Redis and Postgres: availability, a stoppable TCP proxy, and a
private redis-server process that a test may stop and restart (the shared one is never touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("VOXPIPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("VOXPIPE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SKIP_ENV = "VOXPIPE_ALLOW_SKIP_SERVICES"


def service_missing(name: str, where: str, exc: BaseException) -> None:
    """Fail loudly (CI), or skip when VOXPIPE_ALLOW_SKIP_SERVICES=1 (local runs only)."""
    message = f"{name} is not reachable at {where}: {type(exc).__name__}: {exc}."
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(message)
    pytest.fail(
        f"{message} Start it (.ci/run does) or set {SKIP_ENV}=1 to skip these tests locally.",
        pytrace=False,
    )


def unique_name(prefix: str) -> str:
    """A name no other test run uses (schemas, key prefixes)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `stop()` closes the port and cuts every connection,
    which to a client is exactly a server (or the network to it) going away."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update((writer.transport, up_writer.transport))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class RedisServer:
    """A private redis-server on its own port and directory, really stopped and restarted."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server binary", "PATH", FileNotFoundError("redis-server"))
        self._proc = subprocess.Popen(
            [
                binary or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Poll for readiness; the deadline is only a guard against a server that never starts.
        deadline = time.monotonic() + timeout
        while not _port_accepts(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Really stop it (SIGTERM, then wait): its in-memory data is gone."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


# --- fixtures (re-exported by tests/state/conftest.py and tests/config/conftest.py) ------------


@pytest.fixture
async def redis_client():  # type: ignore[no-untyped-def]
    """A client on the shared Redis (127.0.0.1:6379); never flushed, only our keys deleted."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        service_missing("Redis", REDIS_URL, exc)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client):  # type: ignore[no-untyped-def]
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    prefix = unique_name("vptest:") + ":"
    yield prefix
    keys = [k async for k in redis_client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def pg_schema():  # type: ignore[no-untyped-def]
    """A Postgres schema unique to this test, dropped (with everything in it) afterwards."""
    import asyncpg

    schema = unique_name("vpt_")
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except Exception as exc:
        service_missing("Postgres", PG_DSN, exc)
    await conn.close()
    yield schema
    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_dsn() -> str:
    return PG_DSN


@pytest.fixture
def private_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A redis-server of this test's own, which the test may really stop and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
