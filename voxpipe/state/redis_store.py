"""Session store in Redis: shared by every worker, so a call's state outlives the worker.

Layout, with `P` the key prefix (default `voxpipe:`):
- `P{session}:meta`  hash: metadata fields as `m:<key>` -> JSON, plus `_created_at`,
  `_heartbeat_at`, `_turn_count`, `_last_turn_id`.
- `P{session}:turns` list of JSON turns, oldest first, trimmed to the last `max_turns`.
- `P{session}:alive` string: the call's last heartbeat `{"worker_id", "at"}` and nothing else;
  written by every beat from the start of a call, also before consent allows a session.
- `Psessions`        sorted set: session id scored by its last heartbeat (for the sweeper).
- `Pgeneration`      a random token set once per Redis dataset. Every write checks it inside its
  script: a Redis that restarted empty (or was flushed) has lost it, so the write is refused
  with `SessionDataLostError` instead of creating a partial session, and the owner writes its
  full state back.
The per-session keys get the TTL on every write, so an abandoned session expires by itself.

With a key-encryption key (``RECORDS_KEK`` or ``TRANSCRIPT_KEY``) every turn and metadata value
is sealed like a transcript (an envelope with its own data key, bound to the session id and
the field) and stored as ``enc:<base64>``; a plain JSON value written before the key was set
still loads, and a value that no longer opens is skipped with a log line, never a crash.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
from voxpipe.state.errors import SessionDataLostError, StoreUnavailableError, TranscriptKeyError
from voxpipe.state.session import Liveness, SessionState, Turn

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Every write script starts with the generation check (KEYS[1] holds the dataset's token):
# returning 0 writes nothing, so a Redis that lost its data never gets a partial session.
_CHECK_GENERATION = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
"""

# Append one turn atomically: push, trim, count, heartbeat, TTL, index. A replay of the same
# turn (its reply was lost, so the caller could not know it landed) is recognised by its id.
_APPEND_SCRIPT = (
    _CHECK_GENERATION
    + """
if redis.call('HGET', KEYS[2], '_last_turn_id') ~= ARGV[3] then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
  redis.call('HINCRBY', KEYS[2], '_turn_count', 1)
  redis.call('HSET', KEYS[2], '_last_turn_id', ARGV[3])
end
redis.call('HSETNX', KEYS[2], '_created_at', ARGV[4])
redis.call('HSET', KEYS[2], '_heartbeat_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[7])
return 1
"""
)

# Activity (set_meta, touch): create the session if needed, merge fields, heartbeat, TTL, index.
# ARGV[5..] are field/value pairs.
_ACTIVITY_SCRIPT = (
    _CHECK_GENERATION
    + """
redis.call('HSETNX', KEYS[2], '_created_at', ARGV[2])
redis.call('HSET', KEYS[2], '_heartbeat_at', ARGV[2])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4])
return 1
"""
)

# Heartbeat: the liveness key always; the session's heartbeat, TTL and index entry only when the
# session exists (a beat never creates one, so a call without consent stores nothing).
_HEARTBEAT_SCRIPT = (
    _CHECK_GENERATION
    + """
redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], '_heartbeat_at', ARGV[2], 'm:worker_id', ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4])
end
return 1
"""
)

_META_PREFIX = "m:"
_SEALED = "enc:"


class _UnreadableValue(Exception):
    """A stored value that neither opens under the keys nor parses as plain JSON."""


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
        cipher: TranscriptCipher | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self._redis = client
        self.key_prefix = key_prefix
        self.ttl_s = int(ttl_s)
        self.max_turns = max_turns
        self._clock = clock
        self._description = description
        self._cipher = cipher
        self._append = client.register_script(_APPEND_SCRIPT)
        self._activity_script = client.register_script(_ACTIVITY_SCRIPT)
        self._heartbeat = client.register_script(_HEARTBEAT_SCRIPT)
        # The dataset token this store writes under (None until the first start or write).
        self._generation: str | None = None
        self.data_losses = 0

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
        cipher: TranscriptCipher | None = None,
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
            cipher=cipher,
        )

    # --- values -------------------------------------------------------------------------------
    def _encode(self, value: Any, session_id: str, field: str) -> str:
        """JSON of ``value``, sealed under the KEK when one is set (bound to session and field)."""
        raw = json.dumps(value)
        if self._cipher is None:
            return raw
        sealed = self._cipher.seal(raw.encode(), session_id, f"session:{field}")
        return _SEALED + base64.b64encode(sealed).decode("ascii")

    def _decode(self, stored: str, session_id: str, field: str) -> Any:
        if not stored.startswith(_SEALED):
            try:
                return json.loads(stored)  # written before a key was set, or without one
            except ValueError as exc:
                raise _UnreadableValue(f"not JSON: {exc}") from exc
        if self._cipher is None:
            raise _UnreadableValue("sealed, and no RECORDS_KEK / TRANSCRIPT_KEY is set")
        try:
            sealed = base64.b64decode(stored[len(_SEALED) :], validate=True)
            return json.loads(self._cipher.open(sealed, session_id, f"session:{field}"))
        except (ValueError, TranscriptKeyError) as exc:
            raise _UnreadableValue(str(exc)) from exc

    def _decode_or_skip(self, stored: str, session_id: str, field: str) -> tuple[bool, Any]:
        try:
            return True, self._decode(stored, session_id, field)
        except _UnreadableValue as exc:
            logger.warning("session %s: ignoring unreadable %s value: %s", session_id, field, exc)
            return False, None

    # --- keys ---------------------------------------------------------------------------------
    def _meta_key(self, session_id: str) -> str:
        return f"{self.key_prefix}{session_id}:meta"

    def _turns_key(self, session_id: str) -> str:
        return f"{self.key_prefix}{session_id}:turns"

    def _alive_key(self, session_id: str) -> str:
        return f"{self.key_prefix}{session_id}:alive"

    @property
    def generation_key(self) -> str:
        """The dataset token every write checks (gone when Redis lost its data)."""
        return f"{self.key_prefix}generation"

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
        """Check Redis answers and read its generation.

        Raises StoreUnavailableError if Redis does not answer, and SessionDataLostError if it
        answers with another dataset than the one this store wrote to before (it restarted
        empty while the store was away): the caller writes its state back.
        """
        await self.ping()
        if await self._adopt_generation():
            raise SessionDataLostError(
                f"{self._description} lost its data since the last write (restarted empty?)"
            )

    async def _adopt_generation(self, what: str = "generation") -> bool:
        """Read (creating it if missing) the dataset's token; True if it is not the one we had."""
        token = uuid.uuid4().hex

        async def run() -> str:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self.generation_key, token, nx=True)
                pipe.get(self.generation_key)
                _, current = await pipe.execute()
            return str(current)

        current = await self._call(what, run)
        changed = self._generation is not None and current != self._generation
        self._generation = current
        if changed:
            self.data_losses += 1
        return changed

    async def _generation_token(self, what: str) -> str:
        if self._generation is None:
            await self._adopt_generation(what)
        assert self._generation is not None
        return self._generation

    async def _lost(self, what: str) -> SessionDataLostError:
        """The generation check refused a write: adopt the new dataset and report the loss."""
        if await self._adopt_generation(what):
            # Once per loss (a concurrent operation may have adopted the new dataset already).
            logger.warning(
                "%s lost its data (restarted empty or flushed): %s refused so that no partial "
                "session is written",
                self._description,
                what,
            )
        return SessionDataLostError(
            f"{self._description} lost its data (restarted empty?): {what} refused; write the "
            "session back whole"
        )

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers PING."""
        await self._call("ping", self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()

    # --- operations ---------------------------------------------------------------------------
    async def load(self, session_id: str) -> SessionState | None:
        async def run() -> tuple[dict[str, str], list[str], str | None]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._meta_key(session_id))
                pipe.lrange(self._turns_key(session_id), 0, -1)
                pipe.get(self.generation_key)
                meta, turns, generation = await pipe.execute()
            return meta, turns, generation

        raw_meta, raw_turns, generation = await self._call("load", run)
        if self._generation is not None and generation != self._generation:
            # Reading "no such session" from an emptied Redis would make the owner forget it.
            raise await self._lost("load")
        if not raw_meta and not raw_turns:
            return None
        meta: dict[str, Any] = {}
        for k, v in raw_meta.items():
            if k.startswith(_META_PREFIX):
                name = k[len(_META_PREFIX) :]
                ok, value = self._decode_or_skip(v, session_id, f"meta:{name}")
                if ok:
                    meta[name] = value
        turns: list[Turn] = []
        for t in raw_turns:
            ok, value = self._decode_or_skip(t, session_id, "turn")
            if not ok:
                continue
            try:
                turns.append(Turn.from_dict(value))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "session %s: ignoring a turn of an unknown shape: %r", session_id, exc
                )
        return SessionState(
            session_id=session_id,
            meta=meta,
            turns=turns,
            turn_count=int(raw_meta.get("_turn_count", len(raw_turns))),
            created_at=float(raw_meta.get("_created_at", 0.0)),
            heartbeat_at=float(raw_meta.get("_heartbeat_at", 0.0)),
        )

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        now = self._clock()
        keys = [
            self.generation_key,
            self._meta_key(session_id),
            self._turns_key(session_id),
            self.index_key,
        ]
        args: list[str | int] = [
            await self._generation_token("append_turn"),
            self._encode(turn.to_dict(), session_id, "turn"),
            turn.turn_id,
            repr(now),
            self.ttl_s,
            self.max_turns,
            session_id,
        ]
        if not await self._call("append_turn", lambda: self._append(keys=keys, args=args)):
            raise await self._lost("append_turn")

    async def set_meta(self, session_id: str, values: Mapping[str, Any]) -> None:
        fields = {
            f"{_META_PREFIX}{k}": self._encode(v, session_id, f"meta:{k}")
            for k, v in values.items()
        }
        await self._activity("set_meta", session_id, fields)

    async def touch(self, session_id: str, worker_id: str | None = None) -> None:
        fields = (
            {}
            if worker_id is None
            else {f"{_META_PREFIX}worker_id": self._encode(worker_id, session_id, "meta:worker_id")}
        )
        await self._activity("touch", session_id, fields)

    async def _activity(self, what: str, session_id: str, fields: dict[str, str]) -> None:
        now = self._clock()
        keys = [
            self.generation_key,
            self._meta_key(session_id),
            self._turns_key(session_id),
            self.index_key,
        ]
        token = await self._generation_token(what)
        args: list[str | int] = [token, repr(now), self.ttl_s, session_id]
        for name, value in fields.items():
            args += [name, value]
        if not await self._call(what, lambda: self._activity_script(keys=keys, args=args)):
            raise await self._lost(what)

    async def heartbeat(self, session_id: str, worker_id: str) -> None:
        now = self._clock()
        keys = [
            self.generation_key,
            self._meta_key(session_id),
            self._turns_key(session_id),
            self.index_key,
            self._alive_key(session_id),
        ]
        args: list[str | int] = [
            await self._generation_token("heartbeat"),
            repr(now),
            self.ttl_s,
            session_id,
            json.dumps({"worker_id": worker_id, "at": now}),
            json.dumps(worker_id),
        ]
        if not await self._call("heartbeat", lambda: self._heartbeat(keys=keys, args=args)):
            raise await self._lost("heartbeat")

    async def liveness(self, session_id: str) -> Liveness | None:
        raw = await self._call("liveness", lambda: self._redis.get(self._alive_key(session_id)))
        if raw is None:
            return None
        data = json.loads(raw)
        return Liveness(str(data["worker_id"]), float(data["at"]))

    async def save(self, state: SessionState) -> None:
        now = self._clock()
        sid = state.session_id
        meta_key, turns_key = self._meta_key(sid), self._turns_key(sid)
        turns = state.turns[-self.max_turns :]
        mapping: dict[Any, Any] = {
            f"{_META_PREFIX}{k}": self._encode(v, sid, f"meta:{k}") for k, v in state.meta.items()
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
                    pipe.rpush(turns_key, *[self._encode(t.to_dict(), sid, "turn") for t in turns])
                pipe.expire(meta_key, self.ttl_s)
                pipe.expire(turns_key, self.ttl_s)
                pipe.zadd(self.index_key, {sid: float(mapping["_heartbeat_at"])})
                await pipe.execute()

        await self._call("save", run)

    async def delete(self, session_id: str) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(
                    self._meta_key(session_id),
                    self._turns_key(session_id),
                    self._alive_key(session_id),
                )
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
