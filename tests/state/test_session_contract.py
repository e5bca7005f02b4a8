"""The SessionStore contract, run against every implementation (memory, Redis, resilient)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.resilient import ResilientSessionStore
from voxpipe.state.session import SessionState, SessionStore, Turn


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def turn(i: int, role: str = "user", **kw: object) -> Turn:
    return Turn(role=role, text=f"utterance {i}", started_at=100.0 + i, ended_at=100.5 + i, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis", "resilient"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param != "memory":
        request.getfixturevalue("redis_prefix")
    return str(request.param)


@pytest.fixture
async def store(
    kind: str, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[SessionStore]:
    s: SessionStore
    if kind == "memory":
        s = MemorySessionStore(ttl_s=3600, max_turns=5, clock=clock)
    else:
        prefix = request.getfixturevalue("redis_prefix")  # already set up by `kind`
        redis = RedisSessionStore.from_url(
            "redis://127.0.0.1:6379/0", key_prefix=prefix, ttl_s=3600, max_turns=5, clock=clock
        )
        s = (
            redis
            if kind == "redis"
            else ResilientSessionStore(
                redis, MemorySessionStore(ttl_s=3600, max_turns=5, clock=clock)
            )
        )
    await s.start()
    yield s
    await s.close()


async def test_missing_session_loads_as_none(store: SessionStore) -> None:
    assert await store.load("nope") is None
    await store.delete("nope")  # not an error


async def test_turns_meta_and_heartbeat_round_trip(store: SessionStore, clock: Clock) -> None:
    created = clock.now
    await store.set_meta("s1", {"caller": "+447700900123", "locale": "en-GB", "n": {"x": [1, 2]}})
    t = turn(1, interrupted=True, timings={"stt_ms": 120.0, "llm_ttfb_ms": 310.5})
    t.tool_calls.append({"name": "lookup", "arguments": {"id": 7}, "result": "ok"})
    clock.now += 5
    await store.append_turn("s1", t)
    await store.append_turn("s1", turn(2, role="assistant"))
    state = await store.load("s1")
    assert isinstance(state, SessionState)
    assert state.meta == {"caller": "+447700900123", "locale": "en-GB", "n": {"x": [1, 2]}}
    assert [x.text for x in state.turns] == ["utterance 1", "utterance 2"]
    assert state.turns[0] == t
    assert state.turn_count == 2
    assert state.created_at == pytest.approx(created)
    assert state.heartbeat_at == pytest.approx(created + 5)
    clock.now += 7
    await store.touch("s1", worker_id="worker-a")
    state = await store.load("s1")
    assert state is not None
    assert state.heartbeat_at == pytest.approx(created + 12)
    assert state.meta["worker_id"] == "worker-a"


async def test_only_the_last_max_turns_are_kept(store: SessionStore) -> None:
    for i in range(8):
        await store.append_turn("s", turn(i))
    state = await store.load("s")
    assert state is not None
    assert [t.text for t in state.turns] == [f"utterance {i}" for i in range(3, 8)]
    assert state.turn_count == 8


async def test_save_replaces_the_whole_session(store: SessionStore) -> None:
    await store.append_turn("s", turn(0))
    await store.set_meta("s", {"old": True})
    replacement = SessionState("s", meta={"new": 1}, turns=[turn(5), turn(6)], turn_count=9)
    await store.save(replacement)
    state = await store.load("s")
    assert state is not None
    assert state.meta == {"new": 1}
    assert [t.text for t in state.turns] == ["utterance 5", "utterance 6"]
    assert state.turn_count == 9


async def test_delete_list_and_stale(store: SessionStore, clock: Clock) -> None:
    await store.touch("old")
    clock.now += 100
    await store.touch("fresh")
    assert sorted(await store.list_sessions()) == ["fresh", "old"]
    assert await store.stale_sessions(50, now=clock.now) == ["old"]
    assert sorted(await store.stale_sessions(0, now=clock.now + 1)) == ["fresh", "old"]
    await store.delete("old")
    assert await store.list_sessions() == ["fresh"]
    assert await store.load("old") is None
    assert await store.stale_sessions(50, now=clock.now) == []


async def test_loaded_state_is_a_copy(store: SessionStore) -> None:
    await store.append_turn("s", turn(1))
    state = await store.load("s")
    assert state is not None
    state.turns[0].text = "changed"
    state.meta["x"] = 1
    again = await store.load("s")
    assert again is not None and again.turns[0].text == "utterance 1" and "x" not in again.meta


async def test_a_heartbeat_is_liveness_only(store: SessionStore, clock: Clock) -> None:
    # Before the call may store anything: liveness, and no session at all.
    await store.heartbeat("CA1", "w1")
    beat = await store.liveness("CA1")
    assert beat is not None and (beat.worker_id, beat.at) == ("w1", clock.now)
    assert await store.load("CA1") is None and await store.list_sessions() == []
    # Once the session exists, a beat keeps it fresh (and so away from the sweeper).
    await store.set_meta("CA1", {"caller": "+44"})
    clock.now += 50
    assert await store.stale_sessions(40) == ["CA1"]
    await store.heartbeat("CA1", "w2")
    assert await store.stale_sessions(40) == []
    state = await store.load("CA1")
    assert state is not None and state.heartbeat_at == clock.now
    assert state.meta == {"caller": "+44", "worker_id": "w2"}
    await store.delete("CA1")
    assert await store.liveness("CA1") is None
