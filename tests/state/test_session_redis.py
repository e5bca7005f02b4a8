"""RedisSessionStore against the real Redis: TTL, trimming, restarts, replays, outages."""

from __future__ import annotations

import time

import pytest

from voxpipe.state.errors import StoreUnavailableError
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.session import Turn

URL = "redis://127.0.0.1:6379/0"


def turn(i: int) -> Turn:
    return Turn(role="user" if i % 2 else "assistant", text=f"t{i}", started_at=i, ended_at=i + 0.5)


def make(prefix: str, **kw: object) -> RedisSessionStore:
    return RedisSessionStore.from_url(URL, key_prefix=prefix, **kw)  # type: ignore[arg-type]


async def test_ttl_is_set_and_extended_on_every_activity(redis_client, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    store = make(redis_prefix, ttl_s=3600)
    meta, turns = f"{redis_prefix}call:meta", f"{redis_prefix}call:turns"
    try:
        await store.append_turn("call", turn(1))
        assert 3590 < await redis_client.ttl(meta) <= 3600
        assert 3590 < await redis_client.ttl(turns) <= 3600
        # Time passes (simulated by shortening the TTL), then each kind of activity extends it.
        for activity in (
            lambda: store.append_turn("call", turn(2)),
            lambda: store.set_meta("call", {"locale": "en-GB"}),
            lambda: store.touch("call"),
        ):
            await redis_client.expire(meta, 5)
            await redis_client.expire(turns, 5)
            await activity()
            assert await redis_client.ttl(meta) > 3590
            assert await redis_client.ttl(turns) > 3590
    finally:
        await store.close()


async def test_only_the_last_20_turns_are_kept(redis_client, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    store = make(redis_prefix)  # default max_turns is the documented 20
    try:
        for i in range(25):
            await store.append_turn("call", turn(i))
        assert await redis_client.llen(f"{redis_prefix}call:turns") == 20
        state = await store.load("call")
        assert state is not None
        assert [t.text for t in state.turns] == [f"t{i}" for i in range(5, 25)]
        assert state.turn_count == 25
    finally:
        await store.close()


async def test_session_survives_a_worker_restart(redis_prefix: str) -> None:
    worker1 = make(redis_prefix)
    await worker1.set_meta("call", {"caller": "+447700900123", "locale": "en-GB"})
    for i in range(3):
        await worker1.append_turn("call", turn(i))
    # The worker dies without any cleanup: its connections just go away.
    await worker1._redis.connection_pool.disconnect()
    del worker1

    worker2 = make(redis_prefix)
    try:
        state = await worker2.load("call")
        assert state is not None
        assert [t.text for t in state.turns] == ["t0", "t1", "t2"]
        assert state.meta["locale"] == "en-GB"
        await worker2.append_turn("call", turn(3))
        state = await worker2.load("call")
        assert state is not None and state.turn_count == 4
    finally:
        await worker2.close()


async def test_a_replayed_append_is_stored_once(redis_prefix: str) -> None:
    store = make(redis_prefix)
    try:
        t = turn(1)
        await store.append_turn("call", t)
        await store.append_turn("call", t)  # e.g. retried after a lost reply
        await store.append_turn("call", turn(2))
        state = await store.load("call")
        assert state is not None
        assert [x.text for x in state.turns] == ["t1", "t2"] and state.turn_count == 2
    finally:
        await store.close()


async def test_expired_sessions_leave_the_index(redis_client, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    store = make(redis_prefix)
    try:
        await store.touch("gone")
        await store.touch("live")
        # TTL ran out for "gone": Redis removed its keys, the index still names it.
        await redis_client.delete(f"{redis_prefix}gone:meta", f"{redis_prefix}gone:turns")
        assert await store.list_sessions() == ["live"]
        assert await redis_client.zrange(store.index_key, 0, -1) == ["live"]
        assert await store.stale_sessions(0, now=time.time() + 10) == ["live"]
    finally:
        await store.close()


async def test_unreachable_redis_fails_fast_with_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisSessionStore.from_url(f"redis://:secret-pw@127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            await store.append_turn("call", turn(1))
        assert time.monotonic() - started < 2
        assert f"127.0.0.1:{port}" in str(info.value) and "append_turn" in str(info.value)
        assert "secret-pw" not in str(info.value)
    finally:
        await store.close()
