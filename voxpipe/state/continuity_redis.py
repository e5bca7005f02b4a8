"""Resumable conversations and live-call leases in Redis, shared by every worker.

Keys, with ``P`` the key prefix and ``K`` the caller's HMAC key:
- ``Pcontinuity:K``       the saved conversation (bytes), expiring SESSION_TTL_S after its last save.
- ``Pcontinuity:K:live``  the id of the call that owns it, expiring unless renewed.
They are not session ids: the session index and the orphan sweeper never see them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.state.continuity_redis needs the 'redis' extra: pip install 'voxpipe[redis]'"
    ) from exc

from voxpipe.config.settings import mask_url_password
from voxpipe.state.errors import StoreUnavailableError

T = TypeVar("T")

# Compare-and-set on the lease: only its holder renews or releases it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisContinuityStore:
    """``ContinuityStore`` on Redis: SET NX PX leases, values with a TTL."""

    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str = "voxpipe:", description: str = "Redis"
    ) -> None:
        self._redis = client
        self.key_prefix = key_prefix
        self._description = description
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout_s: float = 0.5, key_prefix: str = "voxpipe:"
    ) -> RedisContinuityStore:
        """A store on its own connection pool for ``url``."""
        client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )
        return cls(client, key_prefix=key_prefix, description=f"Redis at {mask_url_password(url)}")

    def data_key(self, key: str) -> str:
        """The Redis key of a caller's saved conversation."""
        return f"{self.key_prefix}continuity:{key}"

    def lease_key(self, key: str) -> str:
        """The Redis key of a caller's live-call lease."""
        return f"{self.key_prefix}continuity:{key}:live"

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"{self._description} failed during {what}: {exc}") from exc

    async def start(self) -> None:
        """Nothing to do up front: a Redis outage only means calls start fresh."""

    async def close(self) -> None:
        await self._redis.aclose()

    async def claim(self, key: str, call_id: str, lease_s: float) -> bool:
        lease = self.lease_key(key)
        taken = await self._call(
            "claim", lambda: self._redis.set(lease, call_id, nx=True, px=_ms(lease_s))
        )
        if taken:
            return True
        # A call claiming again (a reconnect of the same call) keeps its own lease.
        return await self.renew(key, call_id, lease_s)

    async def renew(self, key: str, call_id: str, lease_s: float) -> bool:
        keys = [self.lease_key(key)]
        args: list[str | int] = [call_id, _ms(lease_s)]
        done = await self._call("renew", lambda: self._renew(keys=keys, args=args))
        return bool(done)

    async def release(self, key: str, call_id: str) -> None:
        keys, args = [self.lease_key(key)], [call_id]
        await self._call("release", lambda: self._release(keys=keys, args=args))

    async def get(self, key: str) -> bytes | None:
        value = await self._call("get", lambda: self._redis.get(self.data_key(key)))
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        await self._call("put", lambda: self._redis.set(self.data_key(key), data, px=_ms(ttl_s)))

    async def forget(self, key: str) -> None:
        await self._call("forget", lambda: self._redis.delete(self.data_key(key)))
