"""ResilientSessionStore: Redis stopped or cut off mid-call; the call goes on and is reconciled."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.resilient import ResilientSessionStore
from voxpipe.state.session import Turn

servers = __import__("sys").modules["voxpipe_tests_vp_servers"]


def turn(i: int) -> Turn:
    return Turn(role="user" if i % 2 else "assistant", text=f"t{i}", started_at=i, ended_at=i + 0.5)


def resilient(url: str, prefix: str = "vp:", max_turns: int = 20) -> ResilientSessionStore:
    redis = RedisSessionStore.from_url(url, key_prefix=prefix, max_turns=max_turns)
    return ResilientSessionStore(
        redis, MemorySessionStore(max_turns=max_turns), retry_interval_s=0.05
    )


@pytest.fixture
async def proxy() -> AsyncIterator[object]:
    """A stoppable path to the shared Redis: stopping it is a network partition."""
    p = servers.TcpProxy("127.0.0.1", 6379)
    await p.start()
    yield p
    await p.stop()


async def test_redis_really_stopped_mid_call_then_reconciled(
    private_redis,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    store = resilient(private_redis.url)
    await store.start()
    try:
        await store.set_meta("call", {"caller": "+447700900123", "locale": "en-GB"})
        await store.append_turn("call", turn(0))
        await store.append_turn("call", turn(1))
        assert store.healthy

        private_redis.stop()  # really gone: process ended, its data with it

        with caplog.at_level(logging.WARNING, logger="voxpipe.state.resilient"):
            # The call goes on: every operation succeeds, against memory.
            for i in range(2, 6):
                await store.append_turn("call", turn(i))
                await store.touch("call", worker_id="w1")
            await store.set_meta("call", {"escalated": True})
            await store.set_meta("other", {"caller": "+33612345678"})
            state = await store.load("call")
        assert state is not None
        assert [t.text for t in state.turns] == [f"t{i}" for i in range(6)]
        assert not store.healthy and store.pending_sessions == 2
        outage_logs = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(outage_logs) == 1, "an outage is logged once, not per operation"

        private_redis.start()  # back, empty
        assert await store.wait_healthy(timeout=10), "background recovery did not happen"
        assert store.pending_sessions == 0

        # Reconciled: a fresh client (another worker) sees the whole state in Redis.
        other = RedisSessionStore.from_url(private_redis.url, key_prefix="vp:")
        try:
            remote = await other.load("call")
            assert remote is not None
            assert [t.text for t in remote.turns] == [f"t{i}" for i in range(6)]
            assert remote.turn_count == 6
            assert remote.meta == {
                "caller": "+447700900123",
                "locale": "en-GB",
                "escalated": True,
                "worker_id": "w1",
            }
            assert sorted(await other.list_sessions()) == ["call", "other"]
            client = aioredis.Redis.from_url(private_redis.url)
            assert await client.ttl("vp:call:meta") > 3500
            await client.aclose()
        finally:
            await other.close()
        # And the store writes through to Redis again.
        await store.append_turn("call", turn(6))
        other = RedisSessionStore.from_url(private_redis.url, key_prefix="vp:")
        remote = await other.load("call")
        await other.close()
        assert remote is not None and remote.turns[-1].text == "t6"
    finally:
        await store.close()


async def test_partition_merges_with_what_redis_kept(
    proxy,
    redis_prefix: str,  # type: ignore[no-untyped-def]
) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    # Worker A ran the call for a while, then crashed.
    worker_a = RedisSessionStore.from_url(url, key_prefix=redis_prefix)
    for i in range(3):
        await worker_a.append_turn("call", turn(i))
    await worker_a.close()

    # Worker B picks the call up; Redis becomes unreachable before B has read anything.
    store = resilient(url, prefix=redis_prefix)
    await store.start()
    try:
        await proxy.stop()
        for i in range(3, 5):
            await store.append_turn("call", turn(i))
        await store.set_meta("call", {"picked_up_by": "B"})
        await store.delete("finished")  # a delete during the outage is carried over too
        assert not store.healthy

        await proxy.start()
        assert await store.reconcile()

        direct = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
        try:
            state = await direct.load("call")
            assert state is not None
            assert [t.text for t in state.turns] == ["t0", "t1", "t2", "t3", "t4"]
            assert state.turn_count == 5
            assert state.meta["picked_up_by"] == "B"
        finally:
            await direct.close()
    finally:
        await store.close()


@pytest.mark.parametrize("mirror_complete", [True, False])
async def test_a_write_that_landed_before_the_failure_is_not_duplicated(
    proxy,
    redis_prefix: str,
    mirror_complete: bool,  # type: ignore[no-untyped-def]
) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = resilient(url, prefix=redis_prefix)
    await store.start()
    try:
        await store.append_turn("call", turn(0))
        landed = turn(1)
        # The turn reaches Redis (directly), but this worker never heard back.
        direct = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
        await direct.append_turn("call", landed)
        await proxy.stop()
        if not mirror_complete:
            # As if this worker had not seen the stored history: write-back merges by turn id.
            store._complete.discard("call")
        await store.append_turn("call", landed)
        await store.append_turn("call", turn(2))
        await proxy.start()
        assert await store.reconcile()
        state = await direct.load("call")
        await direct.close()
        assert state is not None
        assert [t.text for t in state.turns] == ["t0", "t1", "t2"]
        assert state.turn_count == 3
    finally:
        await store.close()


async def test_deleted_during_outage_is_deleted_in_redis(proxy, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = resilient(url, prefix=redis_prefix)
    await store.start()
    try:
        await store.append_turn("call", turn(0))
        await proxy.stop()
        await store.delete("call")
        assert await store.load("call") is None
        await proxy.start()
        assert await store.reconcile()
        direct = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
        assert await direct.load("call") is None
        assert await direct.list_sessions() == []
        await direct.close()
    finally:
        await store.close()


async def test_starts_degraded_when_redis_is_down_and_recovers(redis_prefix: str) -> None:
    proxy = servers.TcpProxy("127.0.0.1", 6379)  # not started: its port is closed
    store = resilient(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix)
    await store.start()  # does not raise: the server can take calls on memory
    try:
        assert not store.healthy
        await store.append_turn("call", turn(0))
        assert await store.stale_sessions(0, now=1e12) == ["call"]  # memory answers
        await proxy.start()
        assert await store.wait_healthy(timeout=10)
        direct = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
        state = await direct.load("call")
        await direct.close()
        assert state is not None and [t.text for t in state.turns] == ["t0"]
    finally:
        await store.close()
        await proxy.stop()


async def test_close_writes_back_when_redis_returned(proxy, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = resilient(url, prefix=redis_prefix)
    store.retry_interval_s = 3600  # no background recovery: close() must do it
    await store.start()
    await proxy.stop()
    await store.append_turn("call", turn(0))
    await proxy.start()
    await store.close()
    direct = RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    state = await direct.load("call")
    await direct.close()
    assert state is not None and state.turn_count == 1
