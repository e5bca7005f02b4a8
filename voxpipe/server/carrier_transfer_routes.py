"""Telnyx's and Vonage's callbacks about warm transfers, and fresh stream URLs for returns.

``POST /transfer/telnyx/events``: Call Control webhooks (the agent legs' ``webhook_url``, and the
connection's webhook for the caller's own ``call.hangup``), signed with Ed25519
(``TELNYX_PUBLIC_KEY``). ``POST /transfer/vonage/events``: Voice API event webhooks (the agent
legs' ``event_url``, and the application's event URL for the caller's ``completed``);
``POST /transfer/vonage/{call_uuid}/input``: the agent's digit, answered with an NCCO; both
signed with Vonage's HS256 JWT (``VONAGE_SIGNATURE_SECRET``, each ``jti`` once). A refused
signature gets 403 and a ``voxpipe.security`` event; the event goes to the call's transfer
(found by the caller's id or an agent leg's). Callbacks about calls with no transfer get 200
(the connection's and application's webhooks see every call). Steps are counted in
``/metrics`` as ``voxpipe_transfer_steps{step}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from voxpipe.server.security_events import client_address, security_event
from voxpipe.server.telnyx_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TelnyxSignatureError,
    verify_telnyx_signature,
)
from voxpipe.server.transfer_routes import finished, register_transfer_metrics
from voxpipe.server.vonage_signature import VonageSignatureError, verify_vonage_jwt
from voxpipe.telephony.carrier_handoffs import TELNYX_EVENTS_PATH, VONAGE_EVENTS_PATH
from voxpipe.telephony.hold_audio import shipped_hold_wav
from voxpipe.telephony.telnyx_transfer import TelnyxTransfer, caller_of_leg
from voxpipe.telephony.telnyx_transfer import event_from_webhook as telnyx_event
from voxpipe.telephony.transfers import HOLD_PATH, TRANSFERS
from voxpipe.telephony.vonage_transfer import VonageTransfer, digits_from_input
from voxpipe.telephony.vonage_transfer import event_from_webhook as vonage_event
from voxpipe.telephony.warm_transfer import TransferEvent, WarmTransfer

if TYPE_CHECKING:
    from voxpipe.server.metrics import ServerMetrics
    from voxpipe.server.state import ServerState

__all__ = ["carrier_transfer_router", "stream_url_for"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


def stream_url_for(
    st: ServerState, carrier: str, call_id: str, *, caller: str = "", called: str = ""
) -> Callable[[], str] | None:
    """A maker of fresh media-stream URLs of one call (a new stream token each time), for a
    caller sent back to the bot; None without PUBLIC_URL (a carrier needs an absolute URL)."""
    public_url = st.settings.public_url
    if not public_url:
        return None
    base = public_url.rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if base.startswith(plain):
            base = secure + base[len(plain) :]

    def make() -> str:
        token = st.tokens.issue(carrier, call_id, caller=caller, called=called)
        return f"{base}/{carrier}/stream/{token}"

    return make


def _refused(request: Request, carrier: str, reason: str) -> Response:
    TRANSFERS.count("callback_bad_signature")
    security_event(
        "bad_signature",
        client_address(request),
        f"{carrier} transfer callback {request.url.path} refused: {reason}",
    )
    return PlainTextResponse(f"invalid {carrier} signature", status_code=403)


async def _json(request: Request) -> tuple[bytes, Any] | Response:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        TRANSFERS.count("callback_bad_request")
        return PlainTextResponse("request body too large", status_code=413)
    try:
        return body, json.loads(body)
    except (ValueError, RecursionError):
        TRANSFERS.count("callback_bad_request")
        return PlainTextResponse("body must be JSON", status_code=400)


async def _vonage_verified(request: Request) -> Any | Response:
    """The JSON body of a Vonage callback whose signed JWT checks out; else the refusal."""
    st: ServerState = request.app.state.voxpipe
    read = await _json(request)
    if isinstance(read, Response):
        return read
    body, data = read
    secret = st.carriers.vonage_signature_secret
    if not secret:
        return _refused(request, "vonage", "VONAGE_SIGNATURE_SECRET is not set")
    try:
        claims = verify_vonage_jwt(
            secret,
            request.headers.get("authorization"),
            method=request.method,
            body=body,
            query=list(request.query_params.multi_items()),
            window_s=st.carriers.replay_window_s,
        )
    except VonageSignatureError as exc:
        return _refused(request, "vonage", str(exc))
    jti = claims.get("jti")
    window = st.carriers.replay_window_s
    if jti is not None and not await st.tokens.used.claim(f"vonage-jti:{jti}", 2 * window):
        return _refused(request, "vonage", f"signed webhook JWT {jti} was already used")
    return data


def _find(call_id: str) -> WarmTransfer[Any] | None:
    return TRANSFERS.get(call_id) or TRANSFERS.by_leg(call_id)


async def _dispatch(transfer: WarmTransfer[Any], event: TransferEvent | None, step: str) -> Any:
    """Hand a callback's event to its transfer; the transfer's answer to the carrier."""
    TRANSFERS.count(step)
    if event is None:
        return None
    reply = await transfer.handle(event)
    finished(transfer)
    return reply


def carrier_transfer_router(metrics: ServerMetrics, *, hold_audio: bool) -> APIRouter:
    """The Telnyx and Vonage transfer callback routes (and the hold audio, unless served)."""
    register_transfer_metrics(metrics)
    router = APIRouter()

    if hold_audio:

        @router.api_route(HOLD_PATH, methods=["GET", "POST"], include_in_schema=False)
        async def hold() -> Response:
            return Response(shipped_hold_wav(), media_type="audio/wav")

    @router.post(TELNYX_EVENTS_PATH, include_in_schema=False)
    async def telnyx_events(request: Request) -> Response:
        st: ServerState = request.app.state.voxpipe
        read = await _json(request)
        if isinstance(read, Response):
            return read
        body, data = read
        key = st.carriers.telnyx_public_key
        if not key:
            return _refused(request, "telnyx", "TELNYX_PUBLIC_KEY is not set")
        try:
            verify_telnyx_signature(
                key,
                body,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
                window_s=st.carriers.replay_window_s,
            )
        except TelnyxSignatureError as exc:
            return _refused(request, "telnyx", str(exc))
        payload = (data.get("data") or {}).get("payload") if isinstance(data, dict) else None
        payload = payload if isinstance(payload, dict) else {}
        ccid = str(payload.get("call_control_id") or "")
        transfer = _find(ccid) or TRANSFERS.get(caller_of_leg(payload) or "")
        if not isinstance(transfer, TelnyxTransfer):
            TRANSFERS.count("callback_unknown_call")
            return JSONResponse({})
        await _dispatch(transfer, telnyx_event(data, transfer.call_id), "callback_telnyx_event")
        return JSONResponse({})

    @router.post(VONAGE_EVENTS_PATH, include_in_schema=False)
    async def vonage_events(request: Request) -> Response:
        data = await _vonage_verified(request)
        if isinstance(data, Response):
            return data
        leg = str(data.get("uuid") or "") if isinstance(data, dict) else ""
        transfer = _find(leg)
        if not isinstance(transfer, VonageTransfer):
            TRANSFERS.count("callback_unknown_call")
            return Response(status_code=204)
        await _dispatch(transfer, vonage_event(data, transfer.call_id), "callback_vonage_event")
        return Response(status_code=204)

    @router.post("/transfer/vonage/{call_uuid}/input", include_in_schema=False)
    async def vonage_input(request: Request) -> Response:
        data = await _vonage_verified(request)
        if isinstance(data, Response):
            return data
        transfer = TRANSFERS.get(request.path_params["call_uuid"])
        event = digits_from_input(data)
        if not isinstance(transfer, VonageTransfer) or event is None:
            TRANSFERS.count("callback_unknown_call")
            return PlainTextResponse("no transfer for this call", status_code=404)
        ncco = await _dispatch(transfer, event, "callback_vonage_input")
        return JSONResponse(ncco) if ncco is not None else Response(status_code=204)

    return router
