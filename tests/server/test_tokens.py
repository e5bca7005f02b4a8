"""Stream tokens: sealed by the webhook, redeemed once by the right carrier's stream before expiry,
once across workers when the used set is in Redis."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from voxpipe.server.tokens import StreamTokenError, StreamTokens
from voxpipe.server.used_tokens import RedisUsedTokens


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_carries_the_signed_call_and_is_redeemed_once() -> None:
    clock = FakeTime()
    tokens = StreamTokens(b"k" * 32, ttl_s=30, clock=clock)
    token = tokens.issue("twilio", "CA1", caller="+4915123456789", called="+1800", country="DE")
    assert "4915123456789" not in token  # sealed, not just signed: no number in the URL/TwiML
    with pytest.raises(StreamTokenError, match="not issued by this service for a telnyx call"):
        await tokens.redeem(token, "telnyx")
    grant = await tokens.redeem(token, "twilio")
    assert (grant.call_id, grant.carrier_signed) == ("CA1", True)
    assert (grant.caller, grant.called, grant.country) == ("+4915123456789", "+1800", "DE")
    with pytest.raises(StreamTokenError, match="already used"):
        await tokens.redeem(token, "twilio")
    made = tokens.issue("vonage", "vonage-abc", carrier_signed=False)
    assert (await tokens.redeem(made, "vonage")).carrier_signed is False


async def test_expired_forged_tampered_and_missing_tokens_are_refused() -> None:
    clock = FakeTime()
    tokens = StreamTokens(b"k" * 32, ttl_s=30, clock=clock)
    token = tokens.issue("twilio", "CA1")
    clock.now += 32
    with pytest.raises(StreamTokenError, match="expired"):
        await tokens.redeem(token, "twilio")
    other = StreamTokens(b"x" * 32, clock=clock)
    with pytest.raises(StreamTokenError, match="not issued by this service"):
        await tokens.redeem(other.issue("twilio", "CA1"), "twilio")
    fresh = tokens.issue("twilio", "CA1")
    flipped = fresh[:-3] + ("A" if fresh[-3] != "A" else "B") + fresh[-2:]
    with pytest.raises(StreamTokenError, match="not issued by this service"):
        await tokens.redeem(flipped, "twilio")
    for bad in ("", None, "a.b", "x.y.z", "!!!", "A" * 2000):
        with pytest.raises(StreamTokenError):
            await tokens.redeem(bad, "twilio")


async def test_workers_sharing_stream_token_secret_accept_each_others_tokens() -> None:
    from tests.server.conftest import ECHO_BOT, make_settings
    from voxpipe.server.app import create_app

    a = create_app(ECHO_BOT, make_settings(stream_token_secret="shared-secret"), batched_vad=None)
    b = create_app(ECHO_BOT, make_settings(stream_token_secret="shared-secret"), batched_vad=None)
    c = create_app(ECHO_BOT, make_settings(stream_token_secret="other-secret"), batched_vad=None)
    token = a.state.voxpipe.tokens.issue("twilio", "CA1")
    assert (await b.state.voxpipe.tokens.redeem(token, "twilio")).call_id == "CA1"
    token = a.state.voxpipe.tokens.issue("twilio", "CA2")
    with pytest.raises(StreamTokenError):
        await c.state.voxpipe.tokens.redeem(token, "twilio")


async def test_a_token_is_used_once_across_workers_sharing_redis(
    redis_client: Any, redis_prefix: str
) -> None:
    """Issue 10 pt 13: two workers (two StreamTokens) on one Redis accept a token once in all."""
    from redis.asyncio import Redis

    from tests.server.conftest import servers

    REDIS_URL = servers.REDIS_URL
    workers = [
        StreamTokens(
            b"shared" * 6,
            used=RedisUsedTokens(Redis.from_url(REDIS_URL), prefix=redis_prefix),
        )
        for _ in range(2)
    ]
    try:
        token = workers[0].issue("twilio", "CA1")
        assert (await workers[1].redeem(token, "twilio")).call_id == "CA1"
        with pytest.raises(StreamTokenError, match="already used"):
            await workers[0].redeem(token, "twilio")
        with pytest.raises(StreamTokenError, match="already used"):
            await workers[1].redeem(token, "twilio")
        # The used mark expires with the token: nothing is left behind in Redis for ever.
        keys = [k async for k in redis_client.scan_iter(f"{redis_prefix}used:*")]
        assert len(keys) == 1
        ttl = await redis_client.pttl(keys[0])
        assert 0 < ttl <= (workers[0].ttl_s + 2) * 1000
    finally:
        for w in workers:
            await w.close()


async def test_redis_down_falls_back_to_this_worker_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from redis.asyncio import Redis

    from tests.server.conftest import servers

    free_port = servers.free_port

    used = RedisUsedTokens(
        Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    )
    tokens = StreamTokens(b"k" * 32, used=used)
    token = tokens.issue("twilio", "CA1")
    with caplog.at_level(logging.ERROR, logger="voxpipe.server.used_tokens"):
        assert (await tokens.redeem(token, "twilio")).call_id == "CA1"
    assert "single-use per worker" in caplog.text
    with pytest.raises(StreamTokenError, match="already used"):
        await tokens.redeem(token, "twilio")
    await tokens.close()


@pytest.mark.slow
async def test_a_stream_token_used_on_one_worker_is_refused_by_another(
    redis_client: Any, redis_prefix: str, tmp_path: Any
) -> None:
    """Two servers (workers) behind one load balancer share Redis: a replayed stream is refused."""
    from tests.server.conftest import ECHO_BOT, make_settings, serve, servers
    from voxpipe.server.app import create_app
    from voxpipe.testing.twilio_caller import TwilioCaller

    def worker_settings(name: str) -> Any:
        return make_settings(
            stream_token_secret="shared-secret",
            redis_url=servers.REDIS_URL,
            redis_key_prefix=redis_prefix,
            sqlite_path=str(tmp_path / f"{name}.sqlite3"),
            spool_dir=str(tmp_path / f"{name}-spool"),
        )

    sa, sb = worker_settings("a"), worker_settings("b")
    a = create_app(ECHO_BOT, sa, batched_vad=None)
    b = create_app(ECHO_BOT, sb, batched_vad=None)
    async with serve(a, sa) as srv_a, serve(b, sb) as srv_b:
        dialled = await TwilioCaller.dial(srv_a.url, audio=b"\xff" * 800)
        params, sid = dialled.custom_parameters, dialled.call_sid
        started_b = b.state.voxpipe.metrics.calls_started
        # The carrier's stream lands on worker b (the webhook was answered by a).
        first = TwilioCaller(
            f"{srv_b.ws_url}/twilio/stream",
            audio=b"\xff" * 800,
            custom_parameters=params,
            call_sid=sid,
        )
        log = await first.run(until=lambda _: started_b["twilio"] == 1, timeout=15)
        assert started_b["twilio"] == 1 and not log.closed_by_server
        # Someone replays the same start to worker a: the token was used, on the other worker.
        replay = TwilioCaller(
            f"{srv_a.ws_url}/twilio/stream",
            audio=b"\xff" * 800,
            custom_parameters=params,
            call_sid=sid,
        )
        log = await replay.run(timeout=15)
        assert log.close_code == 1008 and "already used" in log.close_reason
    assert a.state.voxpipe.metrics.calls_started["twilio"] == 0
