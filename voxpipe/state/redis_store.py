"""Session store in Redis: shared by every worker, so a call's state outlives the worker.

Layout, with `P` the key prefix (default `voxpipe:`):
- `P{session}:meta`  hash: metadata fields as `m:<key>` -> JSON, plus `_created_at`,
  `_heartbeat_at`, `_turn_count`, `_last_turn_id`.
- `P{session}:turns` list of JSON turns, oldest first, trimmed to the last `max_turns`.
- `Psessions`        sorted set: session id scored by its last heartbeat (for the sweeper).
Both per-session keys get the TTL on every write, so an abandoned session expires by itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.state.redis_store needs the 'redis' extra: pip install 'voxpipe[redis]'"
    ) from exc

from voxpipe.config.settings import mask_url_password
from voxpipe.state.errors import StoreUnavailableError
from voxpipe.state.session import SessionState, Turn

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Append one turn atomically: push, trim, count, heartbeat, TTL, index. A replay of the same
# turn (its reply was lost, so the caller could not know it landed) is recognised by its id.
_APPEND_SCRIPT = """
if redis.call('HGET', KEYS[1], '_last_turn_id') ~= ARGV[2] then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
  redis.call('HINCRBY', KEYS[1], '_turn_count', 1)
  redis.call('HSET', KEYS[1], '_last_turn_id', ARGV[2])
end
redis.call('HSETNX', KEYS[1], '_created_at', ARGV[3])
redis.call('HSET', KEYS[1], '_heartbeat_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
return 1
"""

_META_PREFIX = "m:"


class RedisSessionStore:
    """Sessions in Redis with a TTL extended on every activity and the last N turns kept."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str = "voxpipe:",
        ttl_s: int = 3600,
        max_turns: int = 20,
        clock: Callable[[], float] = time.time,
        description: str = "Redis",
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self._redis = client
        self.key_prefix = key_prefix
        self.ttl_s = int(ttl_s)
        self.max_turns = max_turns
        self._clock = clock
        self._description = description
        self._append = client.register_script(_APPEND_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout_s: float = 0.5,
        key_prefix: str = "voxpipe:",
        ttl_s: int = 3600,
        max_turns: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> RedisSessionStore:
        """A store on its own connection pool for `url` (redis://, rediss:// or unix://)."""
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            # One immediate retry heals a pooled connection that died while Redis restarted;
            # more would only delay the fall back to memory while a call waits.
            retry=Retry(NoBackoff(), 1),
        )
        return cls(
            client,
            key_prefix=key_prefix,
            ttl_s=ttl_s,
            max_turns=max_turns,
            clock=clock,
            description=f"Redis at {mask_url_password(url)}",
        )

    # --- keys ---------------------------------------------------------------------------------
    def _meta_key(self, session_id: str) -> str:
        return f"{self.key_prefix}{session_id}:meta"

    def _turns_key(self, session_id: str) -> str:
        return f"{self.key_prefix}{session_id}:turns"

    @property
    def index_key(self) -> str:
        """The sorted set of session ids by last heartbeat."""
        return f"{self.key_prefix}sessions"

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"{self._description} failed during {what}: {exc}") from exc

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Check Redis answers; raises StoreUnavailableError if it does not."""
        await self.ping()

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers PING."""
        await self._call("ping", self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()

    # --- operations ---------------------------------------------------------------------------
    async def load(self, session_id: str) -> SessionState | None:
        async def run() -> tuple[dict[str, str], list[str]]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._meta_key(session_id))
                pipe.lrange(self._turns_key(session_id), 0, -1)
                meta, turns = await pipe.execute()
            return meta, turns

        raw_meta, raw_turns = await self._call("load", run)
        if not raw_meta and not raw_turns:
            return None
        meta = {
            k[len(_META_PREFIX) :]: json.loads(v)
            for k, v in raw_meta.items()
            if k.startswith(_META_PREFIX)
        }
        return SessionState(
            session_id=session_id,
            meta=meta,
            turns=[Turn.from_dict(json.loads(t)) for t in raw_turns],
            turn_count=int(raw_meta.get("_turn_count", len(raw_turns))),
            created_at=float(raw_meta.get("_created_at", 0.0)),
            heartbeat_at=float(raw_meta.get("_heartbeat_at", 0.0)),
        )

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        now = self._clock()
        keys = [self._meta_key(session_id), self._turns_key(session_id), self.index_key]
        args: list[str | int] = [
            json.dumps(turn.to_dict()),
            turn.turn_id,
            repr(now),
            self.ttl_s,
            self.max_turns,
            session_id,
        ]
        await self._call("append_turn", lambda: self._append(keys=keys, args=args))

    async def set_meta(self, session_id: str, values: Mapping[str, Any]) -> None:
        fields = {f"{_META_PREFIX}{k}": json.dumps(v) for k, v in values.items()}
        await self._activity("set_meta", session_id, fields)

    async def touch(self, session_id: str, worker_id: str | None = None) -> None:
        fields = {} if worker_id is None else {f"{_META_PREFIX}worker_id": json.dumps(worker_id)}
        await self._activity("touch", session_id, fields)

    async def _activity(self, what: str, session_id: str, fields: dict[Any, Any]) -> None:
        now = self._clock()
        meta_key, turns_key = self._meta_key(session_id), self._turns_key(session_id)

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(meta_key, "_created_at", repr(now))
                pipe.hset(meta_key, mapping={**fields, "_heartbeat_at": repr(now)})
                pipe.expire(meta_key, self.ttl_s)
                pipe.expire(turns_key, self.ttl_s)
                pipe.zadd(self.index_key, {session_id: now})
                await pipe.execute()

        await self._call(what, run)

    async def save(self, state: SessionState) -> None:
        now = self._clock()
        sid = state.session_id
        meta_key, turns_key = self._meta_key(sid), self._turns_key(sid)
        turns = state.turns[-self.max_turns :]
        mapping: dict[Any, Any] = {
            f"{_META_PREFIX}{k}": json.dumps(v) for k, v in state.meta.items()
        }
        mapping["_created_at"] = repr(state.created_at or now)
        mapping["_heartbeat_at"] = repr(state.heartbeat_at or now)
        mapping["_turn_count"] = str(state.turn_count)
        if turns:
            mapping["_last_turn_id"] = turns[-1].turn_id

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(meta_key, turns_key)
                pipe.hset(meta_key, mapping=mapping)
                if turns:
                    pipe.rpush(turns_key, *[json.dumps(t.to_dict()) for t in turns])
                pipe.expire(meta_key, self.ttl_s)
                pipe.expire(turns_key, self.ttl_s)
                pipe.zadd(self.index_key, {sid: float(mapping["_heartbeat_at"])})
                await pipe.execute()

        await self._call("save", run)

    async def delete(self, session_id: str) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._meta_key(session_id), self._turns_key(session_id))
                pipe.zrem(self.index_key, session_id)
                await pipe.execute()

        await self._call("delete", run)

    async def list_sessions(self) -> list[str]:
        ids = await self._call("list_sessions", lambda: self._redis.zrange(self.index_key, 0, -1))
        return await self._existing([str(i) for i in ids])

    async def stale_sessions(self, older_than_s: float, now: float | None = None) -> list[str]:
        cutoff = (self._clock() if now is None else now) - older_than_s
        ids = await self._call(
            "stale_sessions",
            lambda: self._redis.zrangebyscore(self.index_key, "-inf", f"({cutoff!r}"),
        )
        return await self._existing([str(i) for i in ids])

    async def _existing(self, ids: list[str]) -> list[str]:
        """Drop index entries whose session expired (its keys are gone) and return the rest."""
        if not ids:
            return []

        async def run() -> list[int]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.exists(self._meta_key(sid))
                return list(await pipe.execute())

        flags = await self._call("list_sessions", run)
        gone = [sid for sid, ok in zip(ids, flags, strict=True) if not ok]
        if gone:
            await self._call("list_sessions", lambda: self._redis.zrem(self.index_key, *gone))
        return [sid for sid, ok in zip(ids, flags, strict=True) if ok]
