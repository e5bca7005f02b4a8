"""Session state in Redis is sealed under the records key when one is set."""

from __future__ import annotations

import logging
import os

import pytest

from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.redis_store import RedisSessionStore
from voxpipe.state.session import SessionState, Turn

URL = "redis://127.0.0.1:6379/0"
NUMBER = "+14155550123"
WORDS = "my address is 12 Elm Street"


def _store(prefix: str, key: bytes | None) -> RedisSessionStore:
    cipher = TranscriptCipher(key) if key is not None else None
    return RedisSessionStore.from_url(URL, key_prefix=prefix, cipher=cipher)


async def _raw(redis_client, prefix: str) -> str:  # type: ignore[no-untyped-def]
    meta = await redis_client.hgetall(f"{prefix}call:meta")
    turns = await redis_client.lrange(f"{prefix}call:turns", 0, -1)
    return repr(meta) + repr(turns)


async def test_nothing_about_the_caller_is_plain_in_redis(redis_client, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_prefix, os.urandom(32))
    try:
        await store.set_meta("call", {"caller": NUMBER, "locale": "en-US"})
        await store.append_turn("call", Turn("user", WORDS, 1.0, 2.0))
        await store.save(
            SessionState(
                "call",
                meta={"caller": NUMBER, "summary": WORDS},
                turns=[Turn("user", WORDS, 1.0, 2.0), Turn("assistant", "noted", 2.0, 3.0)],
                turn_count=2,
            )
        )
        raw = await _raw(redis_client, redis_prefix)
        for secret in (NUMBER, "14155550123", "Elm Street", "en-US", "noted"):
            assert secret not in raw
        loaded = await store.load("call")
        assert loaded is not None
        assert loaded.meta["caller"] == NUMBER and loaded.meta["summary"] == WORDS
        assert [t.text for t in loaded.turns] == [WORDS, "noted"]
    finally:
        await store.close()


async def test_a_sealed_value_is_bound_to_its_session(redis_client, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_prefix, os.urandom(32))
    try:
        await store.set_meta("a", {"caller": NUMBER})
        await store.set_meta("b", {"caller": "+440000"})
        # A value copied onto another session's hash does not open there: it is skipped.
        stolen = await redis_client.hget(f"{redis_prefix}a:meta", "m:caller")
        await redis_client.hset(f"{redis_prefix}b:meta", "m:caller", stolen)
        loaded = await store.load("b")
        assert loaded is not None and "caller" not in loaded.meta
    finally:
        await store.close()


async def test_sessions_written_before_the_key_still_load(
    redis_client, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    plain = _store(redis_prefix, None)
    try:
        await plain.set_meta("call", {"caller": NUMBER})
        await plain.append_turn("call", Turn("user", WORDS, 1.0, 2.0))
    finally:
        await plain.close()
    key = os.urandom(32)
    sealed = _store(redis_prefix, key)
    try:
        loaded = await sealed.load("call")
        assert loaded is not None
        assert loaded.meta["caller"] == NUMBER and loaded.turns[0].text == WORDS
        await sealed.append_turn("call", Turn("assistant", "noted", 2.0, 3.0))
    finally:
        await sealed.close()
    # Under another key (or none), sealed values are skipped with a log line; the call goes on.
    other = _store(redis_prefix, os.urandom(32))
    try:
        with caplog.at_level(logging.WARNING):
            loaded = await other.load("call")
        assert loaded is not None
        assert [t.text for t in loaded.turns] == [WORDS]
        assert "unreadable turn" in caplog.text
        await redis_client.rpush(f"{redis_prefix}call:turns", "{not json")
        await redis_client.rpush(f"{redis_prefix}call:turns", '{"odd": 1}')
        loaded = await other.load("call")
        assert loaded is not None and [t.text for t in loaded.turns] == [WORDS]
    finally:
        await other.close()
