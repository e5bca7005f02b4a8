"""The Redis registry of workers and their load, so a full server sends new calls elsewhere.

Every worker publishes its load (``Capacity.load()``) with the URL its server is reached at
(``WORKER_URL``) every ``WORKER_HEARTBEAT_S`` into one Redis hash (``<prefix>workers``), and
at once when it starts draining. A voice webhook landing on a full or draining worker asks
:meth:`WorkerRegistry.find_room` for another server: the servers are the distinct
``WORKER_URL``s, a server's room is the free capacity of its fresh, non-draining workers
(the kernel spreads one server's streams over its workers), and the roomiest wins. The
webhook then answers with that server's stream URL; the stream token it carries is valid on
every worker of the service (one ``STREAM_TOKEN_SECRET``). Entries older than three heartbeats
(a crashed worker) are ignored and removed. Redis unreachable: no overflow (busy answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerRegistry", "stream_base"]

logger = logging.getLogger(__name__)

UNLIMITED_ROOM = 1_000_000  # a worker without a capacity limit


def stream_base(url: str) -> str:
    """``https://host`` -> ``wss://host`` (``http`` -> ``ws``), no trailing slash."""
    url = url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


class WorkerRegistry:
    """This worker's entry in the shared registry, and the lookup of a server with room."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        url: str | None,
        heartbeat_s: float,
        load: Callable[[], dict[str, Any]],
        owns_client: bool = True,
    ) -> None:
        self._redis = client
        self.key = f"{prefix}workers"
        self.url = url.rstrip("/") if url else None
        self.heartbeat_s = heartbeat_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._load = load
        self._owns_client = owns_client
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @classmethod
    def from_url(
        cls, redis_url: str, *, socket_timeout_s: float = 2.0, **kwargs: Any
    ) -> WorkerRegistry:
        """A registry on ``redis_url`` (redis://...)."""
        from redis.asyncio import Redis

        client = Redis.from_url(
            redis_url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )
        return cls(client, **kwargs)

    def entry(self) -> dict[str, Any]:
        """What this worker publishes: its load, its server's URL, the time."""
        return {**self._load(), "url": self.url, "ts": time.time(), "id": self.worker_id}

    async def publish(self) -> bool:
        """Write this worker's entry now; False when Redis is unreachable."""
        from redis.exceptions import RedisError

        try:
            await self._redis.hset(self.key, self.worker_id, json.dumps(self.entry()))
        except (RedisError, OSError) as exc:
            if not self._failing:
                self._failing = True
                logger.error("worker registry: Redis unreachable (%s); no overflow", exc)
            return False
        self._failing = False
        return True

    def start(self) -> None:
        """Publish every heartbeat until ``stop()``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._beat(), name="voxpipe-worker-registry"
            )

    async def _beat(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.heartbeat_s)

    async def stop(self) -> None:
        """Stop publishing and remove this worker's entry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._redis.hdel(self.key, self.worker_id)
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    async def workers(self) -> list[dict[str, Any]]:
        """The fresh entries of every worker (stale ones are removed)."""
        raw: dict[bytes, bytes] = await self._redis.hgetall(self.key)
        fresh: list[dict[str, Any]] = []
        stale: list[bytes] = []
        oldest = time.time() - 3 * self.heartbeat_s
        for field, value in raw.items():
            try:
                entry = json.loads(value)
                ts = float(entry["ts"])
            except (ValueError, KeyError, TypeError):
                stale.append(field)
                continue
            if ts >= oldest:
                fresh.append(entry)
            else:
                stale.append(field)
        if stale:
            await self._redis.hdel(self.key, *stale)
        return fresh

    async def find_room(self) -> str | None:
        """The stream base URL (wss://...) of the other server with the most room, or None."""
        from redis.exceptions import RedisError

        try:
            entries = await self.workers()
        except (RedisError, OSError) as exc:
            logger.error("worker registry: Redis unreachable (%s); answering busy", exc)
            return None
        room: dict[str, int] = {}
        for e in entries:
            url = e.get("url")
            if not url or url == self.url or e.get("draining"):
                continue
            capacity = int(e.get("capacity") or 0)
            free = UNLIMITED_ROOM if capacity <= 0 else capacity - int(e.get("held_slots", 0))
            room[url] = room.get(url, 0) + max(free, 0)
        best = max(room.items(), key=lambda kv: kv[1], default=None)
        if best is None or best[1] <= 0:
            return None
        return stream_base(best[0])
