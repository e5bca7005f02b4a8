"""Who may use the browser and operator endpoints, over a real socket: WEBRTC modes and tokens,
ephemeral TURN credentials on /webrtc/config, METRICS_TOKEN on /metrics."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.server.conftest import ECHO_BOT, make_settings, serve
from voxpipe.server.app import create_app
from voxpipe.server.bind import is_loopback

NOT_AN_OFFER = b"not json"  # past the access check, an offer this bad gets 400


@contextlib.asynccontextmanager
async def _client(app: Any, settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app, settings) as srv, httpx.AsyncClient(base_url=srv.url) as client:
        yield client


def _security(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "voxpipe.security" and getattr(r, "event", None) == event
    ]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


async def test_offer_without_token_is_refused_when_not_on_loopback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # Listening on every interface (HOST=0.0.0.0): WEBRTC defaults to token. The test's socket
    # itself stays on loopback.
    settings = make_settings(
        host="0.0.0.0", webrtc_token="operator-secret", allow_unsigned_webhooks=False
    )
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    st = app.state.voxpipe
    assert st.webrtc_access.mode == "token"
    async with _client(app, settings) as client:
        no_token = await client.post("/webrtc/offer", content=NOT_AN_OFFER)
        assert no_token.status_code == 401, no_token.text
        assert no_token.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.post(
            "/webrtc/offer", content=NOT_AN_OFFER, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert (await client.get("/webrtc/config")).status_code == 401
        # The page itself is static and harmless; it sends the token from its URL fragment.
        assert (await client.get("/")).status_code == 200
        right = await client.post(
            "/webrtc/offer",
            content=NOT_AN_OFFER,
            headers={"Authorization": "Bearer operator-secret"},
        )
        assert right.status_code == 400 and "must be JSON" in right.text
    assert st.metrics.calls_refused["webrtc", "unauthorized"] == 3
    assert len(st.registry) == 0 and st.call_limiter.total == 0
    refused = _security(caplog, "webrtc_token_refused")
    assert len(refused) == 3
    assert all(r.levelno == logging.WARNING and r.client == "127.0.0.1" for r in refused)
    assert all("127.0.0.1" in r.getMessage() for r in refused)


async def test_short_lived_jwts_minted_by_the_operator() -> None:
    secret = "k" * 32
    settings = make_settings(webrtc="token", webrtc_token=secret)
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    now = int(time.time())
    cases = {
        "valid": (jwt.encode({"exp": now + 60, "sub": "visitor-1"}, secret, "HS256"), 400),
        "expired": (jwt.encode({"exp": now - 60}, secret, "HS256"), 401),
        "no exp": (jwt.encode({"sub": "visitor-1"}, secret, "HS256"), 401),
        "other key": (jwt.encode({"exp": now + 60}, "x" * 32, "HS256"), 401),
        "alg none": (jwt.encode({"exp": now + 60}, None, "none"), 401),
    }
    async with _client(app, settings) as client:
        for name, (token, status) in cases.items():
            resp = await client.post(
                "/webrtc/offer", content=NOT_AN_OFFER, headers={"Authorization": f"Bearer {token}"}
            )
            assert resp.status_code == status, (name, resp.text)
        expired = await client.post(
            "/webrtc/offer",
            content=NOT_AN_OFFER,
            headers={"Authorization": f"Bearer {cases['expired'][0]}"},
        )
        assert "expired" in expired.json()["error"]


async def test_loopback_default_is_open_and_off_removes_the_routes() -> None:
    open_settings = make_settings()  # HOST 127.0.0.1: the README's `voxpipe serve` works as is
    app = create_app(ECHO_BOT, open_settings, batched_vad=None)
    assert app.state.voxpipe.webrtc_access.mode == "open"
    async with _client(app, open_settings) as client:
        resp = await client.post("/webrtc/offer", content=NOT_AN_OFFER)
        assert resp.status_code == 400
        assert (await client.get("/webrtc/config")).status_code == 200

    off = make_settings(webrtc="off")
    app = create_app(ECHO_BOT, off, batched_vad=None)
    async with _client(app, off) as client:
        for method, path in (
            ("GET", "/"),
            ("GET", "/static/app.js"),
            ("GET", "/webrtc/config"),
            ("POST", "/webrtc/offer"),
        ):
            resp = await client.request(method, path, content=b"{}" if method == "POST" else None)
            assert resp.status_code in (404, 405), (path, resp.status_code)
        assert (await client.get("/healthz")).status_code == 200

    # token mode with no WEBRTC_TOKEN: refused, not open.
    locked = make_settings(webrtc="token")
    app = create_app(ECHO_BOT, locked, batched_vad=None)
    async with _client(app, locked) as client:
        resp = await client.post(
            "/webrtc/offer", content=NOT_AN_OFFER, headers={"Authorization": "Bearer anything"}
        )
        assert resp.status_code == 401 and "WEBRTC_TOKEN" in resp.text


def _turn_credential(secret: str, username: str) -> str:
    # The TURN REST API (coturn use-auth-secret), written out independently of voxpipe.turn.
    return base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()


async def test_webrtc_config_gives_expiring_turn_credentials_never_a_static_password() -> None:
    servers = json.dumps(
        [
            {"urls": "stun:stun.example.org:3478"},
            {
                "urls": ["turn:turn.example.org:3478", "turns:turn.example.org:5349"],
                "username": "static-user",
                "credential": "static-hunter2",
            },
        ]
    )
    settings = make_settings(
        webrtc_ice_servers=servers, turn_secret="shared-turn-secret", turn_ttl_s=600
    )
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    async with _client(app, settings) as client:
        before = time.time()
        resp = await client.get("/webrtc/config")
        after = time.time()
        second = (await client.get("/webrtc/config")).json()
    assert resp.status_code == 200
    assert "no-store" in resp.headers["cache-control"]
    assert "hunter2" not in resp.text and "static-user" not in resp.text
    ice = resp.json()["iceServers"]
    assert {"urls": "stun:stun.example.org:3478"} in ice
    (turn,) = [s for s in ice if "username" in s]
    assert turn["urls"] == ["turn:turn.example.org:3478", "turns:turn.example.org:5349"]
    expiry, _, user = turn["username"].partition(":")
    assert user and int(before) + 600 <= int(expiry) <= int(after) + 600
    assert turn["credential"] == _turn_credential("shared-turn-secret", turn["username"])
    # A fresh name per request: one visitor's credentials say nothing about another's.
    (turn2,) = [s for s in second["iceServers"] if "username" in s]
    assert turn2["username"] != turn["username"]

    # Without TURN_SECRET the static password is still never served: TURN is left out.
    settings = make_settings(webrtc_ice_servers=servers)
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    async with _client(app, settings) as client:
        resp = await client.get("/webrtc/config")
    assert "hunter2" not in resp.text
    assert resp.json() == {"iceServers": [{"urls": "stun:stun.example.org:3478"}]}


async def test_metrics_needs_the_token_when_set(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(metrics_token="scrape-me")
    app = create_app(ECHO_BOT, settings, batched_vad=None)
    async with _client(app, settings) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
        assert wrong.status_code == 401
        basic = await client.get("/metrics", headers={"Authorization": "Basic scrape-me"})
        assert basic.status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "voxpipe_active_calls" in ok.text
        assert (await client.get("/healthz")).status_code == 200  # load balancers: no token
    refused = _security(caplog, "metrics_token_refused")
    assert len(refused) == 3 and all(r.client == "127.0.0.1" for r in refused)

    open_settings = make_settings()
    app = create_app(ECHO_BOT, open_settings, batched_vad=None)
    async with _client(app, open_settings) as client:
        assert (await client.get("/metrics")).status_code == 200
