"""Issue 10 pt 12 and issue 18 pt 1: every carrier's call start is authenticated.

Twilio's ``bodySHA256`` form (the twilio package as oracle), Telnyx Ed25519 with a replay
window, Vonage signed JWTs; which carriers are served (CARRIERS, the secrets, and
ALLOW_UNSIGNED_WEBHOOKS on loopback only), with refusals logged as security events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server.conftest import ECHO_BOT, make_settings, serve
from voxpipe.server.app import UnsafeSettingsError, create_app
from voxpipe.server.signature import compute_signature
from voxpipe.testing.carrier_signing import TelnyxSigner, vonage_jwt
from voxpipe.testing.twilio_caller import parse_twiml_stream

TWILIO_TOKEN = "b5e0a3f2c1d4e6f7a8b9c0d1e2f3a4b5"
VONAGE_SECRET = "a-vonage-signature-secret-32-chars"
FORM = b"CallSid=v3%3Aabc&From=%2B4915123456789&To=%2B18005551212"


@contextlib.asynccontextmanager
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    # With the app's lifespan, as a server runs it: its shutdown closes the stores the
    # requests opened (httpx's ASGI transport alone runs no lifespan).
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def app_for(**kwargs: Any) -> Any:
    kwargs.setdefault("allow_unsigned_webhooks", False)
    return create_app(ECHO_BOT, make_settings(**kwargs), batched_vad=None)


def security_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "?") for r in caplog.records if r.name == "voxpipe.security"]


# --- Twilio: JSON bodies --------------------------------------------------------------------


async def test_twilio_json_body_is_verified_with_body_sha256(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_for(twilio_auth_token=TWILIO_TOKEN)
    body = json.dumps({"CallSid": "CA1", "From": "+15550100001", "To": "+1800"}).encode()
    url = f"http://testserver/twilio/voice?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = compute_signature(TWILIO_TOKEN, url)  # the URL alone, no parameters
    assert RequestValidator(TWILIO_TOKEN).validate(url, body.decode(), signature)  # the oracle
    json_headers = {"content-type": "application/json"}
    caplog.set_level(logging.WARNING, logger="voxpipe.security")
    async with client(app) as c:
        good = await c.post(
            url, content=body, headers={**json_headers, "X-Twilio-Signature": signature}
        )
        tampered_body = body.replace(b"+15550100001", b"+19990000000")
        assert not RequestValidator(TWILIO_TOKEN).validate(url, tampered_body.decode(), signature)
        tampered = await c.post(
            url, content=tampered_body, headers={**json_headers, "X-Twilio-Signature": signature}
        )
        unsigned = await c.post(url, content=body, headers=json_headers)
        no_hash = await c.post(
            "/twilio/voice",
            content=body,
            headers={
                **json_headers,
                "X-Twilio-Signature": compute_signature(
                    TWILIO_TOKEN, "http://testserver/twilio/voice"
                ),
            },
        )
    assert good.status_code == 200, good.text
    _, params = parse_twiml_stream(good.text)
    grant = await app.state.voxpipe.tokens.redeem(params["voxpipe_token"], "twilio")
    assert (grant.call_id, grant.caller) == ("CA1", "+15550100001")
    assert [tampered.status_code, unsigned.status_code, no_hash.status_code] == [403, 403, 403]
    assert security_events(caplog) == ["bad_signature"] * 3


# --- Telnyx -----------------------------------------------------------------------------------


async def test_telnyx_webhooks_need_a_fresh_ed25519_signature(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signer = TelnyxSigner()
    app = app_for(telnyx_public_key=signer.public_key_b64, webhook_replay_window_s=300)
    form = {"content-type": "application/x-www-form-urlencoded"}
    caplog.set_level(logging.WARNING, logger="voxpipe.security")
    async with client(app) as c:
        good = await c.post("/telnyx/voice", content=FORM, headers={**form, **signer.headers(FORM)})
        cases = {
            "unsigned": await c.post("/telnyx/voice", content=FORM, headers=form),
            "someone else's key": await c.post(
                "/telnyx/voice", content=FORM, headers={**form, **TelnyxSigner().headers(FORM)}
            ),
            "tampered body": await c.post(
                "/telnyx/voice",
                content=FORM.replace(b"4915", b"4916"),
                headers={**form, **signer.headers(FORM)},
            ),
            "replayed (301 s old)": await c.post(
                "/telnyx/voice",
                content=FORM,
                headers={**form, **signer.headers(FORM, timestamp=time.time() - 301)},
            ),
            "garbage headers": await c.post(
                "/telnyx/voice",
                content=FORM,
                headers={
                    **form,
                    "telnyx-signature-ed25519": "%%%",
                    "telnyx-timestamp": "not-a-time",
                },
            ),
        }
    assert good.status_code == 200, good.text
    url, _ = parse_twiml_stream(good.text)
    grant = await app.state.voxpipe.tokens.redeem(url.rsplit("/", 1)[1], "telnyx")
    assert (grant.call_id, grant.caller, grant.carrier_signed) == ("v3:abc", "+4915123456789", True)
    assert {k: r.status_code for k, r in cases.items()} == dict.fromkeys(cases, 403)
    assert security_events(caplog) == ["bad_signature"] * len(cases)
    record = next(r for r in caplog.records if r.name == "voxpipe.security")
    assert record.client in record.getMessage()  # type: ignore[attr-defined]


# --- Vonage -----------------------------------------------------------------------------------


async def test_vonage_answer_needs_a_signed_jwt_matching_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_for(vonage_signature_secret=VONAGE_SECRET)
    query = {"from": "447700900001", "to": "447700900002", "uuid": "u-1"}
    post_body = json.dumps({**query, "uuid": "u-2"}).encode()

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    caplog.set_level(logging.WARNING, logger="voxpipe.security")
    async with client(app) as c:
        get_ok = await c.get(
            "/vonage/answer",
            params=query,
            headers=bearer(vonage_jwt(VONAGE_SECRET, query=query.items())),
        )
        post_ok = await c.post(
            "/vonage/answer",
            content=post_body,
            headers={
                "content-type": "application/json",
                **bearer(vonage_jwt(VONAGE_SECRET, method="POST", body=post_body)),
            },
        )
        once = vonage_jwt(VONAGE_SECRET, query=query.items())
        first = await c.get("/vonage/answer", params=query, headers=bearer(once))
        cases = {
            "replayed jti": await c.get("/vonage/answer", params=query, headers=bearer(once)),
            "unsigned": await c.get("/vonage/answer", params=query),
            "wrong secret": await c.get(
                "/vonage/answer",
                params=query,
                headers=bearer(
                    vonage_jwt("not-the-secret-but-32-chars-long-x", query=query.items())
                ),
            ),
            "stale iat": await c.get(
                "/vonage/answer",
                params=query,
                headers=bearer(
                    vonage_jwt(VONAGE_SECRET, query=query.items(), iat=time.time() - 301)
                ),
            ),
            "other uuid than signed": await c.get(
                "/vonage/answer",
                params={**query, "uuid": "u-victim"},
                headers=bearer(vonage_jwt(VONAGE_SECRET, query=query.items())),
            ),
            "alg none": await c.get(
                "/vonage/answer",
                params=query,
                headers=bearer(jwt.encode({"iat": int(time.time())}, None, algorithm="none")),
            ),
        }
    assert get_ok.status_code == 200 and post_ok.status_code == 200 and first.status_code == 200
    tokens = app.state.voxpipe.tokens
    uri = get_ok.json()[0]["endpoint"][0]["uri"]
    assert (await tokens.redeem(uri.rsplit("/", 1)[1], "vonage")).call_id == "u-1"
    uri = post_ok.json()[0]["endpoint"][0]["uri"]
    assert (await tokens.redeem(uri.rsplit("/", 1)[1], "vonage")).call_id == "u-2"
    assert {k: r.status_code for k, r in cases.items()} == dict.fromkeys(cases, 403)
    assert security_events(caplog) == ["bad_signature"] * len(cases)


# --- which carriers are served ----------------------------------------------------------------


async def test_unconfigured_carriers_have_no_routes_and_start_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README's `voxpipe serve` (loopback, no keys): no carrier route; the page works."""
    settings = make_settings(allow_unsigned_webhooks=False)
    with caplog.at_level(logging.WARNING, logger="voxpipe.server.carriers"):
        app = create_app(ECHO_BOT, settings, batched_vad=None)
    assert "ALLOW_UNSIGNED_WEBHOOKS=1" in caplog.text and "TELNYX_PUBLIC_KEY" in caplog.text
    async with serve(app, settings) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as c:
            answers = [
                (await c.post("/twilio/voice", data={"CallSid": "CA1"})).status_code,
                (await c.post("/telnyx/voice", data={"CallSid": "v3:1"})).status_code,
                (await c.get("/vonage/answer", params={"uuid": "u1"})).status_code,
                (await c.post("/vonage/answer", json={"uuid": "u1"})).status_code,
            ]
            page = await c.get("/")
        assert answers == [404, 404, 404, 404]
        assert page.status_code == 200
        for path in ("/twilio/stream", "/telnyx/stream/x", "/vonage/stream/x"):
            with pytest.raises(InvalidStatus):
                async with connect(srv.ws_url + path):
                    pass
    st = app.state.voxpipe
    assert sum(st.metrics.calls_started.values()) == 0 and len(st.registry) == 0


async def test_carriers_setting_selects_the_carriers_offered() -> None:
    signer = TelnyxSigner()
    secrets: dict[str, Any] = {
        "twilio_auth_token": TWILIO_TOKEN,
        "telnyx_public_key": signer.public_key_b64,
        "vonage_signature_secret": VONAGE_SECRET,
    }
    app = app_for(carriers="twilio", **secrets)
    async with client(app) as c:
        signature = compute_signature(
            TWILIO_TOKEN, "http://testserver/twilio/voice", {"CallSid": "CA1"}
        )
        twilio = await c.post(
            "/twilio/voice", data={"CallSid": "CA1"}, headers={"X-Twilio-Signature": signature}
        )
        telnyx = await c.post(
            "/telnyx/voice",
            content=FORM,
            headers={"content-type": "application/x-www-form-urlencoded", **signer.headers(FORM)},
        )
        vonage = await c.get("/vonage/answer")
    assert (twilio.status_code, telnyx.status_code, vonage.status_code) == (200, 404, 404)
    assert app.state.voxpipe.carriers.served == {"twilio": "signed"}
    with pytest.raises(ValueError, match="plivo"):
        make_settings(carriers="twilio,plivo")


def test_unsigned_switch_is_refused_off_loopback_and_warned_on_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for host in ("0.0.0.0", "::", "10.1.2.3", "voice.example.com"):
        with pytest.raises(UnsafeSettingsError, match="ALLOW_UNSIGNED_WEBHOOKS=1 is refused"):
            create_app(ECHO_BOT, make_settings(host=host), batched_vad=None)
    # With the carriers' secrets and no switch, a public address is fine.
    app = create_app(
        ECHO_BOT,
        make_settings(host="0.0.0.0", allow_unsigned_webhooks=False, twilio_auth_token="t"),
        batched_vad=None,
    )
    assert app.state.voxpipe.carriers.served == {"twilio": "signed"}
    with caplog.at_level(logging.WARNING, logger="voxpipe.server.carriers"):
        app = create_app(ECHO_BOT, make_settings(host="127.0.0.1"), batched_vad=None)
    assert "WITHOUT a signature" in caplog.text
    assert app.state.voxpipe.carriers.served == dict.fromkeys(
        ("twilio", "telnyx", "vonage"), "unsigned"
    )


def test_serve_refuses_to_start_unsigned_on_a_public_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from voxpipe.cli import main

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("ALLOW_UNSIGNED_WEBHOOKS", "1")
    code = main(["serve", str(ECHO_BOT), "--host", "0.0.0.0", "--port", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("voxpipe: error: ALLOW_UNSIGNED_WEBHOOKS=1 is refused when binding")
    assert "\n" not in err


async def test_a_signed_carrier_with_the_switch_still_checks_signatures() -> None:
    app = app_for(allow_unsigned_webhooks=True, twilio_auth_token=TWILIO_TOKEN)
    async with client(app) as c:
        resp = await c.post("/twilio/voice", data={"CallSid": "CA1"})
        telnyx = await c.post("/telnyx/voice", data={"CallSid": "v3:1"})
    assert resp.status_code == 403  # Twilio has its secret: the switch does not weaken it
    assert telnyx.status_code == 200  # Telnyx has none: taken unsigned (development)
