"""POST /twilio/voice: signature checks, TwiML with an absolute stream URL and parameters."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from voxpipe.server.signature import compute_signature
from voxpipe.testing.twilio_caller import parse_twiml_stream

TOKEN = "b5e0a3f2c1d4e6f7a8b9c0d1e2f3a4b5"
FORM = {
    "CallSid": "CA0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+4915123456789",
    "To": "+18005551212",
    "FromCountry": "DE",
    "CallStatus": "ringing",
    "Direction": "inbound",
}


@contextlib.asynccontextmanager
async def client(app: Any, base: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    # With the app's lifespan, as a server runs it: its shutdown closes the stores the
    # requests opened (httpx's ASGI transport alone runs no lifespan).
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as c:
            yield c


async def test_good_signature_gets_twiml_with_stream_and_parameters(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    app = echo_app(settings_factory(twilio_auth_token=TOKEN))
    url = "http://testserver/twilio/voice?locale=de-DE"
    signature = compute_signature(TOKEN, url, FORM)
    # The twilio package, Twilio's own implementation, agrees this request is genuine.
    assert RequestValidator(TOKEN).validate(url, FORM, signature)
    async with client(app) as c:
        resp = await c.post(url, data=FORM, headers={"X-Twilio-Signature": signature})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(resp.text)
    assert root.tag == "Response" and root.find("./Connect/Stream") is not None
    stream_url, params = parse_twiml_stream(resp.text)
    assert stream_url == "ws://testserver/twilio/stream"
    assert params["From"] == FORM["From"] and params["To"] == FORM["To"]
    assert params["FromCountry"] == "DE"
    assert params["locale"] == "de-DE"  # query parameters on the webhook URL reach the bot
    token = params["voxpipe_token"]
    # The token seals this CallSid and the signed numbers, for the stream to redeem (once).
    grant = await app.state.voxpipe.tokens.redeem(token, "twilio")
    assert (grant.call_id, grant.caller, grant.country) == (FORM["CallSid"], FORM["From"], "DE")


@pytest.mark.parametrize(
    "headers",
    [
        {},  # unsigned
        {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="},  # someone else's signature
    ],
)
async def test_bad_or_missing_signature_is_refused_and_starts_nothing(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any], headers: dict[str, str]
) -> None:
    app = echo_app(settings_factory(twilio_auth_token=TOKEN))
    issued: list[str] = []
    tokens = app.state.voxpipe.tokens
    real_issue = tokens.issue
    tokens.issue = lambda *a, **k: issued.append("x") or real_issue(*a, **k)  # type: ignore[method-assign]
    async with client(app) as c:
        resp = await c.post("/twilio/voice", data=FORM, headers=headers)
        # Signed for other parameters: a tampered body fails too.
        tampered = compute_signature(TOKEN, "http://testserver/twilio/voice", FORM)
        resp2 = await c.post(
            "/twilio/voice",
            data={**FORM, "From": "+10000000000"},
            headers={"X-Twilio-Signature": tampered},
        )
    assert resp.status_code == 403 and resp2.status_code == 403
    assert "signature" in resp.text
    assert issued == []
    assert len(app.state.voxpipe.registry) == 0


async def test_public_url_is_used_for_signature_and_stream_url(
    echo_app: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    public = "https://voice.example.com"
    app = echo_app(settings_factory(twilio_auth_token=TOKEN, public_url=public))
    signature = compute_signature(TOKEN, f"{public}/twilio/voice", FORM)
    async with client(app, "http://10.0.0.5:8000") as c:
        resp = await c.post("/twilio/voice", data=FORM, headers={"X-Twilio-Signature": signature})
    assert resp.status_code == 200
    stream_url, _ = parse_twiml_stream(resp.text)
    assert stream_url == "wss://voice.example.com/twilio/stream"


async def test_without_auth_token_unsigned_requests_are_accepted(
    echo_app: Callable[..., Any],
) -> None:
    app = echo_app()
    async with client(app) as c:
        resp = await c.post("/twilio/voice", data=FORM)
        missing = await c.post("/twilio/voice", data={"From": "+1"})
        huge = await c.post("/twilio/voice", content=b"a=" + b"x" * 100_000)
    assert resp.status_code == 200
    assert missing.status_code == 400 and "CallSid" in missing.text
    assert huge.status_code == 413


async def test_telnyx_and_vonage_answers_carry_tokened_stream_urls(
    echo_app: Callable[..., Any],
) -> None:
    app = echo_app()
    async with client(app, "https://bots.example.com") as c:
        texml = await c.post("/telnyx/voice", data={"CallSid": "x"})
        ncco = await c.get("/vonage/answer", params={"from": "4477", "to": "4478", "uuid": "u1"})
    url, _ = parse_twiml_stream(texml.text)
    assert url.startswith("wss://bots.example.com/telnyx/stream/")
    grant = await app.state.voxpipe.tokens.redeem(url.rsplit("/", 1)[1], "telnyx")
    assert (grant.call_id, grant.carrier_signed) == ("x", True)
    endpoint = ncco.json()[0]["endpoint"][0]
    assert endpoint["type"] == "websocket"
    assert endpoint["uri"].startswith("wss://bots.example.com/vonage/stream/")
    assert endpoint["headers"] == {"from": "4477", "to": "4478", "uuid": "u1"}
    grant = await app.state.voxpipe.tokens.redeem(endpoint["uri"].rsplit("/", 1)[1], "vonage")
    assert (grant.call_id, grant.caller, grant.called) == ("u1", "4477", "4478")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xx", "text/plain", ""]
    ),
    signature=st.one_of(st.none(), st.text(max_size=40)),
)
async def test_webhook_fuzz_never_errors(
    echo_app: Callable[..., Any],
    settings_factory: Callable[..., Any],
    body: bytes,
    content_type: str,
    signature: str | None,
) -> None:
    app = _fuzz_app(echo_app, settings_factory)
    headers = {"content-type": content_type} if content_type else {}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature.encode("ascii", "replace").decode()
    async with client(app) as c:
        resp = await c.post("/twilio/voice", content=body, headers=headers)
        vonage = await c.post("/vonage/answer", content=body, headers=headers)
    assert resp.status_code in (400, 403, 413, 415), resp.text
    assert vonage.status_code in (200, 400)
    assert len(app.state.voxpipe.registry) == 0


_APPS: dict[str, Any] = {}


def _fuzz_app(echo_app: Callable[..., Any], settings_factory: Callable[..., Any]) -> Any:
    # One app for all examples: building one per example would dominate the run time.
    if "app" not in _APPS:
        _APPS["app"] = echo_app(settings_factory(twilio_auth_token=TOKEN), batched_vad=None)
    return _APPS["app"]
