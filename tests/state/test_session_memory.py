"""MemorySessionStore specifics: expiry on its own clock."""

from __future__ import annotations

import pytest

from voxpipe.state.memory import MemorySessionStore
from voxpipe.state.session import Turn


async def test_sessions_expire_after_the_ttl_unless_active() -> None:
    now = [1000.0]
    store = MemorySessionStore(ttl_s=60, clock=lambda: now[0])
    await store.append_turn("a", Turn("user", "hi", 1, 2))
    await store.touch("b")
    now[0] += 50
    await store.touch("b")  # activity extends b's TTL, not a's
    now[0] += 20
    assert await store.load("a") is None
    assert await store.list_sessions() == ["b"]
    now[0] += 61
    assert await store.load("b") is None and await store.list_sessions() == []


def test_max_turns_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        MemorySessionStore(max_turns=0)


async def test_expired_sessions_are_purged_without_being_read() -> None:
    now = [0.0]
    store = MemorySessionStore(ttl_s=10, clock=lambda: now[0])
    for i in range(100):
        await store.touch(f"s{i}")
    now[0] += 11
    # No reads: expiry would otherwise never free these (e.g. a mirror of swept sessions).
    for _ in range(1100):
        await store.touch("busy")
    assert len(store._sessions) == 1
    assert store.purge_expired() == 0
