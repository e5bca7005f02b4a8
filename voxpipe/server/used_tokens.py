"""Sets of one-time values (stream tokens, signed-webhook JWT ids) that may be used only once.

``MemoryUsedTokens`` is per process. ``RedisUsedTokens`` is shared by every worker of a
service (``SET key 1 NX PX ttl``: the first claim wins, the key expires with the token). If
Redis cannot be reached, claims fall back to this process's set and the outage is logged: a
call is still answered, and a token then is single-use per worker until Redis returns (it is
still bound to its call id and expires within its TTL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["MemoryUsedTokens", "RedisUsedTokens", "UsedTokens"]

logger = logging.getLogger(__name__)


class UsedTokens(Protocol):
    """Remembers values until they expire; a value can be claimed once."""

    async def claim(self, key: str, ttl_s: float) -> bool:
        """True the first time ``key`` is claimed within ``ttl_s``; False after."""

    async def close(self) -> None:
        """Release connections."""


class MemoryUsedTokens:
    """Used values in this process."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._used: dict[str, float] = {}  # key -> when it may be forgotten

    async def claim(self, key: str, ttl_s: float) -> bool:
        return self.claim_now(key, ttl_s)

    def claim_now(self, key: str, ttl_s: float) -> bool:
        """``claim`` without awaiting (for the Redis fallback)."""
        now = self._clock()
        if len(self._used) > 256:
            self._used = {k: t for k, t in self._used.items() if t >= now}
        until = self._used.get(key)
        if until is not None and until >= now:
            return False
        self._used[key] = now + ttl_s
        return True

    async def close(self) -> None:
        return None


class RedisUsedTokens:
    """Used values in Redis, under ``{prefix}used:{key}``, seen by every worker."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "voxpipe:",
        fallback: MemoryUsedTokens | None = None,
        owns_client: bool = True,
    ) -> None:
        self._redis = client
        self.prefix = prefix
        self._fallback = fallback or MemoryUsedTokens()
        self._owns_client = owns_client
        self._degraded = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "voxpipe:", socket_timeout_s: float = 2.0
    ) -> RedisUsedTokens:
        """A client for ``url`` (redis://...)."""
        from redis.asyncio import Redis

        client = Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )
        return cls(client, prefix=prefix)

    async def claim(self, key: str, ttl_s: float) -> bool:
        from redis.exceptions import RedisError

        try:
            won = await self._redis.set(
                f"{self.prefix}used:{key}", b"1", nx=True, px=max(1, int(ttl_s * 1000))
            )
        except (RedisError, OSError) as exc:
            if not self._degraded:
                self._degraded = True
                logger.error(
                    "Redis unreachable for one-time tokens (%s): tokens are single-use per worker "
                    "until it returns",
                    exc,
                )
            return self._fallback.claim_now(key, ttl_s)
        if self._degraded:
            self._degraded = False
            logger.warning("Redis reachable again: one-time tokens shared across workers")
        return bool(won)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
