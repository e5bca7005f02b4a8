"""Stream tokens: issued by the webhook, accepted once by the right stream before expiry."""

from __future__ import annotations

import pytest

from voxpipe.server.tokens import StreamTokenError, StreamTokens


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_token_accepted_once_for_its_call() -> None:
    clock = FakeTime()
    tokens = StreamTokens(b"k" * 32, ttl_s=30, clock=clock)
    token = tokens.issue("twilio", "CA1")
    with pytest.raises(StreamTokenError, match="does not match"):
        tokens.check(token, "twilio", "CA2")
    with pytest.raises(StreamTokenError, match="does not match"):
        tokens.check(token, "telnyx", "CA1")
    tokens.check(token, "twilio", "CA1")
    with pytest.raises(StreamTokenError, match="already used"):
        tokens.check(token, "twilio", "CA1")


def test_expired_forged_and_missing_tokens_are_refused() -> None:
    clock = FakeTime()
    tokens = StreamTokens(b"k" * 32, ttl_s=30, clock=clock)
    token = tokens.issue("twilio", "CA1")
    clock.now += 32
    with pytest.raises(StreamTokenError, match="expired"):
        tokens.check(token, "twilio", "CA1")
    other = StreamTokens(b"x" * 32, clock=clock)
    with pytest.raises(StreamTokenError, match="does not match"):
        tokens.check(other.issue("twilio", "CA1"), "twilio", "CA1")
    expiry, nonce, mac = tokens.issue("twilio", "CA1").split(".")
    with pytest.raises(StreamTokenError, match="does not match"):
        tokens.check(f"{int(expiry) + 999}.{nonce}.{mac}", "twilio", "CA1")
    for bad in ("", None, "a.b", "x.y.z", "1.2.3.4"):
        with pytest.raises(StreamTokenError):
            tokens.check(bad, "twilio", "CA1")


def test_workers_sharing_stream_token_secret_accept_each_others_tokens() -> None:
    from tests.server.conftest import ECHO_BOT, make_settings
    from voxpipe.server.app import create_app

    a = create_app(ECHO_BOT, make_settings(stream_token_secret="shared-secret"))
    b = create_app(ECHO_BOT, make_settings(stream_token_secret="shared-secret"))
    c = create_app(ECHO_BOT, make_settings(stream_token_secret="other-secret"))
    token = a.state.voxpipe.tokens.issue("twilio", "CA1")
    b.state.voxpipe.tokens.check(token, "twilio", "CA1")  # raises if refused
    token = a.state.voxpipe.tokens.issue("twilio", "CA2")
    with pytest.raises(StreamTokenError):
        c.state.voxpipe.tokens.check(token, "twilio", "CA2")
