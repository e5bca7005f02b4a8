"""Voice webhooks: the carrier asks what to do with a new call; we answer "stream it to us".

Twilio (``POST /twilio/voice``) gets TwiML ``<Connect><Stream>`` with the call's details and a
short-lived stream token as ``<Parameter>``s, after its ``X-Twilio-Signature`` is checked (when
``TWILIO_AUTH_TOKEN`` is set). Telnyx (``POST /telnyx/voice``, TeXML) and Vonage
(``GET|POST /vonage/answer``, NCCO) get a stream URL with the token in its path.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from voxpipe.server.language_menu import language_menu
from voxpipe.server.signature import SIGNATURE_HEADER, signature_matches

if TYPE_CHECKING:
    from voxpipe.server.app import ServerState

__all__ = ["telnyx_voice", "twilio_voice", "vonage_answer"]

logger = logging.getLogger(__name__)

TOKEN_PARAM = "voxpipe_token"
MAX_BODY_BYTES = 64 * 1024
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


def _state(request: Request) -> ServerState:
    return request.app.state.voxpipe  # type: ignore[no-any-return]


def public_base(request: Request, public_url: str | None) -> str:
    """``https://host`` this server is reached at: PUBLIC_URL, else the request's own host."""
    if public_url:
        return public_url.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


def websocket_base(request: Request, public_url: str | None) -> str:
    """The ``wss://host`` (``ws://`` for plain http) media streams connect to."""
    base = public_base(request, public_url)
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


async def _read_form(request: Request) -> list[tuple[str, str]] | Response:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return PlainTextResponse("request body too large", status_code=413)
    try:
        form = await request.form(max_files=0, max_fields=200)
    except Exception as exc:  # malformed body: the carrier never sends one
        logger.warning("webhook %s: unreadable form body: %s", request.url.path, exc)
        return PlainTextResponse(f"malformed form body: {exc}", status_code=400)
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


async def twilio_voice(request: Request) -> Response:
    """Answer Twilio's voice webhook with ``<Connect><Stream>`` to our media websocket."""
    st = _state(request)
    items = await _read_form(request)
    if isinstance(items, Response):
        st.metrics.webhooks["twilio", "bad-request"] += 1
        return items
    auth_token = st.twilio_auth_token
    if auth_token:
        url = signed_url(request, st.settings.public_url)
        if not signature_matches(auth_token, url, items, request.headers.get(SIGNATURE_HEADER)):
            st.metrics.webhooks["twilio", "bad-signature"] += 1
            logger.warning(
                "voice webhook refused: %s for %s (check PUBLIC_URL matches the URL configured "
                "at Twilio, and TWILIO_AUTH_TOKEN)",
                "missing X-Twilio-Signature"
                if SIGNATURE_HEADER.lower() not in request.headers
                else "X-Twilio-Signature does not match",
                url,
            )
            return PlainTextResponse("invalid Twilio signature", status_code=403)
    fields = dict(items)
    call_sid = fields.get("CallSid", "")
    if not call_sid:
        st.metrics.webhooks["twilio", "bad-request"] += 1
        return PlainTextResponse("missing CallSid: this endpoint is Twilio's voice webhook", 400)
    # Query parameters on the webhook URL (…/twilio/voice?locale=fr-FR) reach the bot too.
    params: dict[str, str] = {
        k: v for k, v in request.query_params.items() if k != TOKEN_PARAM and len(k) <= 64
    }
    for name in _TWILIO_FIELDS:
        if fields.get(name):
            params[name] = fields[name]
    # Several languages for the caller's country (or LANGUAGE_MENU=1): ask first.
    menu = await language_menu(request, st, fields, params)
    if menu is not None:
        return menu
    params[TOKEN_PARAM] = st.tokens.issue("twilio", call_sid)
    stream_url = websocket_base(request, st.settings.public_url) + "/twilio/stream"
    body = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v[:500])}/>" for k, v in params.items()
    )
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{body}</Stream></Connect>"
        "</Response>"
    )
    st.metrics.webhooks["twilio", "ok"] += 1
    logger.info("voice webhook: streaming to %s", stream_url, extra={"call_id": call_sid})
    return Response(twiml, media_type="application/xml")


async def telnyx_voice(request: Request) -> Response:
    """Answer a Telnyx TeXML webhook with a bidirectional ``<Stream>`` to our websocket."""
    st = _state(request)
    items = await _read_form(request)
    if isinstance(items, Response):
        st.metrics.webhooks["telnyx", "bad-request"] += 1
        return items
    token = st.tokens.issue("telnyx")
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
    fields: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            st.metrics.webhooks["vonage", "bad-request"] += 1
            return PlainTextResponse("answer webhook body must be a JSON object", 400)
        fields.update({k: str(v) for k, v in body.items() if isinstance(v, str | int | float)})
    token = st.tokens.issue("vonage")
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
