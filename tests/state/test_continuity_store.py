"""Callback continuity in the stores: caller-keyed records on real Redis (isolated per test) and
in memory, live-call leases, the TTL, withheld numbers and records this version cannot read."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from voxpipe.config.settings import VoxpipeSettings
from voxpipe.state.continuity import (
    CallerContinuity,
    ContinuityStore,
    MemoryContinuityStore,
    PriorMessage,
    ResumableConversation,
    continuity_key,
    continuity_secret,
    encode_conversation,
)
from voxpipe.state.continuity_redis import RedisContinuityStore
from voxpipe.state.crypto import TranscriptCipher

NUMBER = "+44 7700-900123"
KEY_B64 = base64.b64encode(bytes(range(32))).decode()


class FakeTime:
    """A wall clock the test moves by hand (the record's age is what the TTL is checked on)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(prefix: str = "voxpipe:", **kw: Any) -> VoxpipeSettings:
    return VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        redis_key_prefix=prefix,
        transcript_key=KEY_B64,
        session_ttl_s=600,
        heartbeat_timeout_s=30.0,
        **kw,
    )


def conversation(call_id: str, saved_at: float, text: str = "Where is my order?") -> Any:
    return ResumableConversation(
        call_id=call_id,
        saved_at=saved_at,
        messages=[
            PriorMessage({"role": "user", "content": text}),
            PriorMessage({"role": "assistant", "content": "Which order?"}),
        ],
        topic="order",
        locale="en-GB",
    )


@pytest.fixture(params=["redis", "memory"])
async def store(request: Any, redis_prefix: str, redis_client: Any) -> AsyncIterator[Any]:
    clock = FakeTime()
    if request.param == "memory":
        yield MemoryContinuityStore(clock=clock), clock, redis_prefix
        return
    from voxpipe.state.continuity_redis import RedisContinuityStore

    redis = RedisContinuityStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    yield redis, clock, redis_prefix
    await redis.close()


def handle(
    store: ContinuityStore, clock: Callable[[], float], caller: str, call_id: str, **kw: Any
) -> CallerContinuity:
    return CallerContinuity.for_call(settings(**kw), store, caller, call_id, clock=clock)


async def test_a_callback_within_the_ttl_continues(store: Any) -> None:
    st, clock, _ = store
    first = handle(st, clock, NUMBER, "CA1")
    assert await first.begin() is None and first.owner
    assert await first.save(conversation("CA1", clock()))
    await first.end()

    clock.now += 590  # the callback, just inside SESSION_TTL_S=600
    second = handle(st, clock, "+447700900123", "CA2")  # same number, other spelling
    earlier = await second.begin()
    assert earlier is not None and second.owner
    assert earlier.call_id == "CA1"
    assert [m.message["content"] for m in earlier.messages] == [
        "Where is my order?",
        "Which order?",
    ]
    assert earlier.topic == "order" and earlier.locale == "en-GB"


async def test_a_callback_after_the_ttl_starts_fresh(store: Any) -> None:
    st, clock, _ = store
    first = handle(st, clock, NUMBER, "CA1")
    await first.begin()
    await first.save(conversation("CA1", clock()))
    await first.end()

    clock.now += 601
    second = handle(st, clock, NUMBER, "CA2")
    assert await second.begin() is None
    # The memory store expires it itself; on Redis (whose clock the test cannot move) the age
    # check does.
    assert second.fresh_reason in (
        "earlier conversation older than SESSION_TTL_S",
        "no earlier conversation",
    )


async def test_the_redis_record_expires_with_session_ttl_s(
    redis_prefix: str, redis_client: Any
) -> None:
    st = RedisContinuityStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    try:
        h = CallerContinuity.for_call(settings(redis_prefix), st, NUMBER, "CA1")
        await h.begin()
        await h.save(conversation("CA1", 0.0))
        key = continuity_key(NUMBER, continuity_secret(settings()))
        assert key is not None
        ttl_ms = await redis_client.pttl(st.data_key(key))
        assert 0 < ttl_ms <= 600_000  # Redis drops it by itself after SESSION_TTL_S
        lease_ms = await redis_client.pttl(st.lease_key(key))
        assert 0 < lease_ms <= 30_000  # a dead worker's lease frees itself
    finally:
        await st.close()


async def test_the_key_is_an_hmac_never_the_number_and_the_record_is_sealed(
    redis_prefix: str, redis_client: Any
) -> None:
    st = RedisContinuityStore.from_url("redis://127.0.0.1:6379/0", key_prefix=redis_prefix)
    try:
        h = CallerContinuity.for_call(settings(redis_prefix), st, NUMBER, "CA1")
        await h.begin()
        await h.save(conversation("CA1", 0.0))
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
        assert keys, "nothing was saved"
        for k in keys:
            # After the prefix: the test's prefix is random hex, which may hold "7700" by chance.
            name = k[len(redis_prefix) :]
            assert "7700" not in name and "900123" not in name
            if not k.endswith(":live"):
                raw = await st._redis.get(k)  # bytes: the store's own client
                assert raw and b"order" not in raw  # sealed with AES-256-GCM under TRANSCRIPT_KEY
    finally:
        await st.close()


@pytest.mark.parametrize("caller", ["anonymous", "Restricted", "", "+266696687", "unknown"])
async def test_a_withheld_number_never_continues_nor_saves(store: Any, caller: str) -> None:
    st, clock, prefix = store
    first = handle(st, clock, caller, "CA1")
    assert await first.begin() is None
    assert first.fresh_reason == "caller id withheld"
    assert not await first.save(conversation("CA1", clock()))
    second = handle(st, clock, caller, "CA2")
    assert await second.begin() is None


async def test_two_simultaneous_calls_from_one_number_stay_separate(store: Any) -> None:
    st, clock, _ = store
    earlier = handle(st, clock, NUMBER, "CA0")
    await earlier.begin()
    await earlier.save(conversation("CA0", clock(), "my router is broken"))
    await earlier.end()

    first = handle(st, clock, NUMBER, "CA1")
    assert (await first.begin()) is not None  # continues CA0
    second = handle(st, clock, NUMBER, "CA2")  # while CA1 is live
    assert await second.begin() is None
    assert second.fresh_reason == "another call from this caller id is live"
    assert not second.owner
    # The second call cannot overwrite or forget the first's conversation.
    assert not await second.save(conversation("CA2", clock(), "something else"))
    await second.forget()
    await second.end()  # and cannot free the first call's lease
    assert await handle(st, clock, NUMBER, "CA3").begin() is None

    assert await first.save(conversation("CA1", clock(), "my router is still broken"))
    await first.end()
    after = handle(st, clock, NUMBER, "CA4")
    resumed = await after.begin()
    assert resumed is not None and resumed.call_id == "CA1"
    assert resumed.messages[0].message["content"] == "my router is still broken"


async def test_a_dead_workers_lease_expires(store: Any) -> None:
    st, clock, _ = store
    first = handle(st, clock, NUMBER, "CA1")
    await first.begin()
    await first.save(conversation("CA1", clock()))
    # The worker dies: no end(), no renewals. After the lease the number may continue.
    if isinstance(st, MemoryContinuityStore):
        clock.now += 31
    else:
        await st._redis.delete(st.lease_key(first.key or ""))  # what PEXPIRE does at 30 s
    second = handle(st, clock, NUMBER, "CA2")
    assert (await second.begin()) is not None
    assert not await first.renew()  # the dead call's lease is gone for good


async def test_forget_drops_the_conversation(store: Any) -> None:
    st, clock, _ = store
    h = handle(st, clock, NUMBER, "CA1")
    await h.begin()
    await h.save(conversation("CA1", clock()))
    await h.forget()
    await h.end()
    assert await handle(st, clock, NUMBER, "CA2").begin() is None


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"version": 0, "call_id": "CAold", "turns": []}).encode(),  # an older format
        json.dumps({"version": 99, "call_id": "CAnew"}).encode(),  # a newer one
        json.dumps({"version": 1, "call_id": "CA", "saved_at": "soon"}).encode(),  # damaged
        json.dumps({"version": 1, "call_id": "CA", "saved_at": 1, "messages": [7]}).encode(),
        b"\x00\xffnot json at all",
        b"",
    ],
)
async def test_a_record_this_version_cannot_read_is_ignored_with_a_log_line(
    store: Any, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    st, clock, _ = store
    s = settings()
    key = continuity_key(NUMBER, continuity_secret(s))
    assert key is not None
    sealed = TranscriptCipher(s.transcript_key_bytes() or b"").seal(payload, key)
    await st.put(key, sealed, 600)
    h = CallerContinuity.for_call(s, st, NUMBER, "CA2", clock=clock)
    with caplog.at_level(logging.WARNING, logger="voxpipe.state.continuity"):
        assert await h.begin() is None
    assert h.fresh_reason == "unreadable earlier conversation"
    assert "earlier conversation ignored" in caplog.text
    # The call goes on and its own conversation replaces the unreadable one.
    assert await h.save(conversation("CA2", clock()))
    await h.end()
    assert (await handle(st, clock, NUMBER, "CA3").begin()) is not None


async def test_a_record_sealed_under_another_key_is_ignored(store: Any) -> None:
    st, clock, _ = store
    s = settings()
    key = continuity_key(NUMBER, continuity_secret(s))
    assert key is not None
    other = TranscriptCipher(bytes(32))
    await st.put(key, encode_conversation(conversation("CA1", clock()), key, other), 600)
    h = CallerContinuity.for_call(s, st, NUMBER, "CA2", clock=clock)
    assert await h.begin() is None
    assert h.fresh_reason == "unreadable earlier conversation"


async def test_continuity_off_neither_loads_nor_saves(store: Any) -> None:
    st, clock, _ = store
    on = handle(st, clock, NUMBER, "CA1")
    await on.begin()
    await on.save(conversation("CA1", clock()))
    await on.end()
    off = handle(st, clock, NUMBER, "CA2", callback_continuity="off")
    assert await off.begin() is None and off.fresh_reason == "continuity off"
    assert not await off.save(conversation("CA2", clock()))


async def test_redis_unreachable_means_a_fresh_call_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from voxpipe.state.continuity_redis import RedisContinuityStore

    dead = RedisContinuityStore.from_url("redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    try:
        h = CallerContinuity.for_call(settings(), dead, NUMBER, "CA1")
        with caplog.at_level(logging.WARNING, logger="voxpipe.state.continuity"):
            assert await h.begin() is None
        assert h.fresh_reason == "store unavailable"
        assert "starts fresh" in caplog.text
        assert not await h.save(conversation("CA1", 0.0))  # not the owner: nothing attempted
    finally:
        await dead.close()


def test_without_transcript_key_the_caller_key_is_still_keyed() -> None:
    plain = VoxpipeSettings(_env_file=None)  # type: ignore[call-arg]
    secret = continuity_secret(plain)
    key = continuity_key(NUMBER, secret)
    import hashlib

    assert key is not None
    # Not a bare hash of the number, which anyone could reverse by trying every number.
    assert key != hashlib.sha256(b"+447700900123").hexdigest()
    assert continuity_key(NUMBER, continuity_secret(plain)) == key  # stable in this process
    assert continuity_key(NUMBER, continuity_secret(settings())) != key
