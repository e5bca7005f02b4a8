"""Voice webhooks: the carrier asks what to do with a new call; we answer "stream it to us".

Each carrier's webhook is verified when its secret is set (Twilio ``X-Twilio-Signature``, form
or ``bodySHA256`` JSON form; Telnyx Ed25519; Vonage signed JWT): a bad, missing or replayed
signature gets 403 and starts nothing. The answer carries a sealed stream token (see
``voxpipe.server.tokens``) holding the call id and numbers the signed webhook gave: Twilio
(``POST /twilio/voice``) gets TwiML ``<Connect><Stream>`` with the token as a ``<Parameter>``;
Telnyx (``POST /telnyx/voice``, TeXML) and Vonage (``GET|POST /vonage/answer``, NCCO) get a
stream URL with the token in its path.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from voxpipe.server.language_menu import language_menu
from voxpipe.server.limits import OVERFLOW_SCOPE_KEY
from voxpipe.server.security_events import client_address, security_event
from voxpipe.server.signature import (
    BODY_HASH_PARAM,
    SIGNATURE_HEADER,
    body_signature_matches,
    signature_matches,
)
from voxpipe.server.telnyx_signature import (
    SIGNATURE_HEADER as TELNYX_SIGNATURE_HEADER,
)
from voxpipe.server.telnyx_signature import (
    TIMESTAMP_HEADER as TELNYX_TIMESTAMP_HEADER,
)
from voxpipe.server.telnyx_signature import (
    TelnyxSignatureError,
    verify_telnyx_signature,
)
from voxpipe.server.vonage_signature import VonageSignatureError, verify_vonage_jwt

if TYPE_CHECKING:
    from voxpipe.server.state import ServerState

__all__ = ["telnyx_voice", "twilio_voice", "vonage_answer"]

logger = logging.getLogger(__name__)

TOKEN_PARAM = "voxpipe_token"
MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 200
# Webhook fields passed on to the stream (and so to the bot) as custom parameters.
_TWILIO_FIELDS = (
    "From",
    "To",
    "FromCountry",
    "ToCountry",
    "FromCity",
    "FromState",
    "CallerName",
    "Direction",
    "AccountSid",
    "ForwardedFrom",
    "Digits",
)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _state(request: Request) -> ServerState:
    return request.app.state.voxpipe  # type: ignore[no-any-return]


def public_base(request: Request, public_url: str | None) -> str:
    """``https://host`` this server is reached at: PUBLIC_URL, else the request's own host."""
    if public_url:
        return public_url.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


def websocket_base(request: Request, public_url: str | None) -> str:
    """The ``wss://host`` (``ws://`` for plain http) media streams connect to.

    A full worker's webhook streams the call to a server with room (``OVERFLOW_SCOPE_KEY``).
    """
    base = request.scope.get(OVERFLOW_SCOPE_KEY) or public_base(request, public_url)
    base = base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def signed_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio requested, as it signed it (behind a proxy: PUBLIC_URL + path + query)."""
    if not public_url:
        return str(request.url)
    query = request.url.query
    return public_base(request, public_url) + request.url.path + (f"?{query}" if query else "")


async def _read_body(request: Request) -> bytes:
    """The raw body (signatures cover its exact bytes), refused beyond MAX_BODY_BYTES."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise _BadRequest(413, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
    return bytes(body)


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in (
        "application/json",
        "text/json",
    )


def _json_fields(body: bytes) -> list[tuple[str, str]]:
    """The scalar fields of a JSON-object body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # deep nesting must be a 400, not a 500
        raise _BadRequest(400, "webhook body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise _BadRequest(400, "webhook body must be a JSON object")
    return [
        (str(k), str(v))
        for k, v in data.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    ][:MAX_FIELDS]


def _fields(request: Request, body: bytes) -> list[tuple[str, str]]:
    """The webhook's fields from a form-encoded or JSON-object body (scalars only)."""
    if not body:
        return []
    if _is_json(request):
        return _json_fields(body)
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.lower().startswith("application/x-www-form-urlencoded"):
        raise _BadRequest(415, "webhook body must be form-encoded or JSON")
    try:
        return parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadRequest(400, f"malformed form body: {exc}") from exc


def _refuse(st: ServerState, request: Request, carrier: str, reason: str) -> Response:
    st.metrics.webhooks[carrier, "bad-signature"] += 1
    security_event(
        "bad_signature",
        client_address(request),
        f"{carrier} webhook {request.url.path} refused: {reason}",
    )
    return PlainTextResponse(f"invalid {carrier} signature", status_code=403)


async def twilio_voice(request: Request) -> Response:
    """Answer Twilio's voice webhook with ``<Connect><Stream>`` to our media websocket."""
    st = _state(request)
    try:
        body = await _read_body(request)
        items = _fields(request, body)
    except _BadRequest as exc:
        st.metrics.webhooks["twilio", "bad-request"] += 1
        logger.warning("webhook %s: %s", request.url.path, exc.message)
        return PlainTextResponse(exc.message, status_code=exc.status)
    if st.carriers.signed("twilio"):
        auth_token = st.carriers.twilio_auth_token or ""
        url = signed_url(request, st.settings.public_url)
        signature = request.headers.get(SIGNATURE_HEADER)
        if _is_json(request) or BODY_HASH_PARAM in request.query_params:
            ok = body_signature_matches(auth_token, url, body, signature)
        else:
            ok = signature_matches(auth_token, url, items, signature)
        if not ok:
            return _refuse(
                st,
                request,
                "twilio",
                (
                    "missing X-Twilio-Signature"
                    if signature is None
                    else "X-Twilio-Signature does not match"
                )
                + f" for {url} (check PUBLIC_URL matches the URL configured at Twilio, and "
                "TWILIO_AUTH_TOKEN)",
            )
    fields = dict(items)
    call_sid = fields.get("CallSid", "")
    if not call_sid:
        st.metrics.webhooks["twilio", "bad-request"] += 1
        return PlainTextResponse("missing CallSid: this endpoint is Twilio's voice webhook", 400)
    # Query parameters on the webhook URL (…/twilio/voice?locale=fr-FR) reach the bot too.
    params: dict[str, str] = {
        k: v
        for k, v in request.query_params.items()
        if k not in (TOKEN_PARAM, BODY_HASH_PARAM) and len(k) <= 64
    }
    for name in _TWILIO_FIELDS:
        if fields.get(name):
            params[name] = fields[name]
    # Several languages for the caller's country (or LANGUAGE_MENU=1): ask first.
    menu = await language_menu(request, st, fields, params)
    if menu is not None:
        return menu
    params[TOKEN_PARAM] = st.tokens.issue(
        "twilio",
        call_sid,
        caller=fields.get("From", ""),
        called=fields.get("To", ""),
        country=fields.get("FromCountry", ""),
    )
    stream_url = websocket_base(request, st.settings.public_url) + "/twilio/stream"
    body_xml = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v if k == TOKEN_PARAM else v[:500])}/>"
        for k, v in params.items()
    )
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{body_xml}</Stream></Connect>"
        "</Response>"
    )
    st.metrics.webhooks["twilio", "ok"] += 1
    logger.info("voice webhook: streaming to %s", stream_url, extra={"call_id": call_sid})
    return Response(twiml, media_type="application/xml")


def _server_call_id(carrier: str) -> str:
    return f"{carrier}-{secrets.token_hex(12)}"


async def telnyx_voice(request: Request) -> Response:
    """Answer a Telnyx TeXML webhook with a bidirectional ``<Stream>`` to our websocket."""
    st = _state(request)
    try:
        body = await _read_body(request)
        fields = dict(_fields(request, body))
    except _BadRequest as exc:
        st.metrics.webhooks["telnyx", "bad-request"] += 1
        return PlainTextResponse(exc.message, status_code=exc.status)
    if st.carriers.signed("telnyx"):
        try:
            verify_telnyx_signature(
                st.carriers.telnyx_public_key or "",
                body,
                request.headers.get(TELNYX_SIGNATURE_HEADER),
                request.headers.get(TELNYX_TIMESTAMP_HEADER),
                window_s=st.carriers.replay_window_s,
            )
        except TelnyxSignatureError as exc:
            return _refuse(st, request, "telnyx", str(exc))
    # TeXML's CallSid is the call_control_id the media stream's start message carries.
    call_id = fields.get("CallSid", "")
    token = st.tokens.issue(
        "telnyx",
        call_id or _server_call_id("telnyx"),
        carrier_signed=bool(call_id),
        caller=fields.get("From", ""),
        called=fields.get("To", ""),
    )
    url = websocket_base(request, st.settings.public_url) + f"/telnyx/stream/{token}"
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<Response><Connect><Stream url={quoteattr(url)} bidirectionalMode="rtp"/></Connect>'
        "</Response>"
    )
    st.metrics.webhooks["telnyx", "ok"] += 1
    return Response(twiml, media_type="application/xml")


async def vonage_answer(request: Request) -> Response:
    """Answer Vonage's answer webhook with an NCCO connecting the call to our websocket."""
    st = _state(request)
    try:
        body = await _read_body(request) if request.method == "POST" else b""
        # Vonage POSTs the answer webhook as JSON (whatever the content type says).
        body_fields = _json_fields(body) if body.strip() else []
    except _BadRequest as exc:
        st.metrics.webhooks["vonage", "bad-request"] += 1
        return PlainTextResponse(exc.message, status_code=exc.status)
    query = list(request.query_params.multi_items())
    if st.carriers.signed("vonage"):
        try:
            claims = verify_vonage_jwt(
                st.carriers.vonage_signature_secret or "",
                request.headers.get("authorization"),
                method=request.method,
                body=body,
                query=query,
                window_s=st.carriers.replay_window_s,
            )
        except VonageSignatureError as exc:
            return _refuse(st, request, "vonage", str(exc))
        jti = claims.get("jti")
        window = st.carriers.replay_window_s
        if jti is not None and not await st.tokens.used.claim(f"vonage-jti:{jti}", 2 * window):
            return _refuse(st, request, "vonage", f"signed webhook JWT {jti} was already used")
    fields: dict[str, str] = dict(query)
    fields.update(body_fields)
    call_id = fields.get("uuid", "")
    token = st.tokens.issue(
        "vonage",
        call_id or _server_call_id("vonage"),
        carrier_signed=bool(call_id),
        caller=fields.get("from", ""),
        called=fields.get("to", ""),
    )
    uri = websocket_base(request, st.settings.public_url) + f"/vonage/stream/{token}"
    headers = {k: fields[k] for k in ("from", "to", "uuid", "conversation_uuid") if k in fields}
    ncco = [
        {
            "action": "connect",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": uri,
                    "content-type": "audio/l16;rate=16000",
                    "headers": headers,
                }
            ],
        }
    ]
    st.metrics.webhooks["vonage", "ok"] += 1
    return JSONResponse(ncco)
