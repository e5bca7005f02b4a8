"""A Redis that restarts empty between two writes is noticed and the session written back whole
(issue 18 #6). Every test runs its own redis-server and really restarts it; the shared one on
6379 is never touched."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from voxpipe.state.errors import SessionDataLostError
from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.resilient import ResilientSessionStore
from voxpipe.state.session import Turn

META = {"call_id": "CA1", "caller": "+447700900123", "locale": "en-GB", "bot": "support_agent"}


def turn(i: int) -> Turn:
    return Turn("user" if i % 2 == 0 else "assistant", f"turn {i}", i, i + 0.5)


def resilient(url: str) -> ResilientSessionStore:
    return ResilientSessionStore(
        RedisSessionStore.from_url(url, key_prefix="vp:"),
        MemorySessionStore(),
        retry_interval_s=0.05,
    )


async def stored(url: str, session_id: str):  # type: ignore[no-untyped-def]
    """What another worker reads from Redis."""
    other = RedisSessionStore.from_url(url, key_prefix="vp:")
    try:
        return await other.load(session_id)
    finally:
        await other.close()


def restart(server) -> None:  # type: ignore[no-untyped-def]
    """Stop and start it again on the same port: a fraction of a second, and its data is gone."""
    server.stop()
    server.start()


async def test_a_quick_restart_between_two_writes_is_noticed_and_the_session_rewritten(
    private_redis,  # type: ignore[no-untyped-def]
) -> None:
    store = resilient(private_redis.url)
    await store.start()
    try:
        await store.set_meta("CA1", META)
        for i in range(10):
            await store.append_turn("CA1", turn(i))

        restart(private_redis)

        for i in range(10, 15):
            await store.append_turn("CA1", turn(i))
        state = await stored(private_redis.url, "CA1")
        assert state is not None
        assert [t.text for t in state.turns] == [f"turn {i}" for i in range(15)]
        assert state.turn_count == 15
        assert state.meta == META
        assert store.data_losses == 1 and store.healthy and store.pending_sessions == 0
    finally:
        await store.close()


async def test_a_silent_call_is_rewritten_by_its_next_heartbeat(private_redis) -> None:  # type: ignore[no-untyped-def]
    store = resilient(private_redis.url)
    await store.start()
    try:
        await store.set_meta("CA1", META)
        for i in range(3):
            await store.append_turn("CA1", turn(i))
        await store.set_meta("CA2", {"caller": "+33612345678"})  # another call of this worker

        restart(private_redis)

        await store.heartbeat("CA1", "worker-1")  # nothing said: only the call's heartbeat
        for sid in ("CA1", "CA2"):
            assert await stored(private_redis.url, sid) is not None, f"{sid} not written back"
        state = await stored(private_redis.url, "CA1")
        assert [t.text for t in state.turns] == ["turn 0", "turn 1", "turn 2"]
        assert state.meta == {**META, "worker_id": "worker-1"}
        beat = await store.liveness("CA1")
        assert beat is not None and beat.worker_id == "worker-1"
    finally:
        await store.close()


async def test_a_restart_during_a_longer_outage_rewrites_every_session_of_the_worker(
    private_redis,  # type: ignore[no-untyped-def]
) -> None:
    store = resilient(private_redis.url)
    await store.start()
    try:
        await store.set_meta("CA1", META)
        await store.append_turn("CA1", turn(0))
        await store.set_meta("CA2", {"caller": "+33612345678"})
        await store.append_turn("CA2", turn(0))

        private_redis.stop()
        await store.append_turn("CA1", turn(1))  # only CA1 is written during the outage
        assert not store.healthy
        private_redis.start()  # back, empty

        assert await store.wait_healthy(timeout=10)
        one, two = await stored(private_redis.url, "CA1"), await stored(private_redis.url, "CA2")
        assert one is not None and [t.text for t in one.turns] == ["turn 0", "turn 1"]
        assert two is not None and [t.text for t in two.turns] == ["turn 0"]
        assert two.meta == {"caller": "+33612345678"}
    finally:
        await store.close()


async def test_the_redis_store_refuses_a_write_into_an_emptied_redis(private_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisSessionStore.from_url(private_redis.url, key_prefix="vp:")
    try:
        await store.start()
        await store.set_meta("CA1", META)
        await store.append_turn("CA1", turn(0))

        restart(private_redis)

        with pytest.raises(SessionDataLostError, match="lost its data"):
            await store.append_turn("CA1", turn(1))
        client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
        try:
            # Nothing partial was written: only the new dataset's generation token.
            assert await client.keys("vp:*") == ["vp:generation"]
        finally:
            await client.aclose()
        assert store.data_losses == 1
        # The loss is reported once; the owner writes back and carries on.
        await store.append_turn("CA1", turn(2))
        state = await store.load("CA1")
        assert state is not None and [t.text for t in state.turns] == ["turn 2"]
    finally:
        await store.close()
