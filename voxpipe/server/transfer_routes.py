"""Twilio's callbacks about warm transfers, and the default hold audio.

``POST /transfer/twilio/{call_sid}/whisper`` (the agent answered: the brief and "press 1"),
``.../answer`` (the agent's digit), ``.../agent-status`` (the agent leg's progress),
``.../conference-status`` (the caller's conference) — each signed with ``X-Twilio-Signature``
(refused with 403 otherwise) and handed to the call's ``TwilioTransfer``;
``GET /transfer/hold.wav`` (the hold audio). Steps are counted in ``/metrics`` as
``voxpipe_transfer_steps{step}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from voxpipe.server.security_events import client_address, security_event
from voxpipe.server.signature import SIGNATURE_HEADER, signature_matches
from voxpipe.server.webhooks import signed_url
from voxpipe.telephony.hold_audio import shipped_hold_wav
from voxpipe.telephony.transfers import HOLD_PATH, TRANSFERS, TransferRegistry
from voxpipe.telephony.twilio_transfer import (
    AgentAnswered,
    AgentPressed,
    AgentStatus,
    CallerLeft,
    Event,
    TwilioTransfer,
)
from voxpipe.telephony.warm_transfer import WarmTransfer

if TYPE_CHECKING:
    from voxpipe.server.metrics import ServerMetrics
    from voxpipe.server.state import ServerState

__all__ = ["transfer_router"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_XML = "application/xml"
# participant-leave statuses that mean the caller's call itself ended (not moved elsewhere).
_GONE = {"completed", "canceled", "failed", "busy", "no-answer", ""}


class _TransferCollector(Collector):
    def __init__(self, registry: TransferRegistry) -> None:
        self._r = registry

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        steps = CounterMetricFamily(
            "voxpipe_transfer_steps", "Warm-transfer steps and callbacks.", labels=["step"]
        )
        for step, n in sorted(self._r.steps.items()):
            steps.add_metric([step], n)
        yield steps
        yield GaugeMetricFamily(
            "voxpipe_transfers_live", "Transfers under way.", value=len(self._r.live())
        )


async def _form(request: Request) -> list[tuple[str, str]] | None:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return None


async def _verified(
    request: Request, kind: str
) -> tuple[TwilioTransfer, dict[str, str]] | Response:
    """The transfer this signed callback is about, and its fields; else the refusal."""
    st: ServerState = request.app.state.voxpipe
    items = await _form(request)
    if items is None:
        TRANSFERS.count("callback_bad_request")
        return PlainTextResponse("malformed form body", status_code=400)
    token = st.carriers.twilio_auth_token or st.twilio_auth_token
    url = signed_url(request, st.settings.public_url)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not token or not signature_matches(token, url, items, signature):
        TRANSFERS.count("callback_bad_signature")
        security_event(
            "bad_signature",
            client_address(request),
            f"twilio transfer callback {request.url.path} refused: "
            + ("missing" if signature is None else "wrong")
            + " X-Twilio-Signature",
        )
        return PlainTextResponse("invalid twilio signature", status_code=403)
    transfer = TRANSFERS.get(request.path_params["call_sid"])
    if not isinstance(transfer, TwilioTransfer):
        TRANSFERS.count("callback_unknown_call")
        logger.warning("transfer callback %s for a call with no transfer", request.url.path)
        return PlainTextResponse("no transfer for this call", status_code=404)
    TRANSFERS.count(f"callback_{kind}")
    return transfer, dict(items)


async def _run(transfer: TwilioTransfer, event: Event) -> str | None:
    twiml = await transfer.handle(event)
    finished(transfer)
    return twiml


def finished(transfer: WarmTransfer[Any]) -> None:
    """Move a transfer out of the live set once it has ended."""
    if transfer.state.final:
        TRANSFERS.done(transfer)


def register_transfer_metrics(metrics: ServerMetrics) -> None:
    """Expose the transfer step counters (every carrier, SIP REFER) once per registry."""
    if getattr(metrics, "_transfer_collector", None) is None:
        collector = _TransferCollector(TRANSFERS)
        metrics.registry.register(collector)
        metrics._transfer_collector = collector  # type: ignore[attr-defined]


def transfer_router(metrics: ServerMetrics) -> APIRouter:
    """The transfer callback routes; their counters join ``metrics``' registry."""
    register_transfer_metrics(metrics)
    router = APIRouter()

    @router.api_route(HOLD_PATH, methods=["GET", "POST"], include_in_schema=False)
    async def hold_audio() -> Response:
        return Response(shipped_hold_wav(), media_type="audio/wav")

    @router.post("/transfer/twilio/{call_sid}/whisper", include_in_schema=False)
    async def whisper(request: Request) -> Response:
        found = await _verified(request, "whisper")
        if isinstance(found, Response):
            return found
        transfer, form = found
        twiml = await _run(transfer, AgentAnswered(form.get("CallSid", "")))
        return Response(twiml or "<Response><Hangup/></Response>", media_type=_XML)

    @router.post("/transfer/twilio/{call_sid}/answer", include_in_schema=False)
    async def answer(request: Request) -> Response:
        found = await _verified(request, "answer")
        if isinstance(found, Response):
            return found
        transfer, form = found
        event = AgentPressed(form.get("CallSid", ""), form.get("Digits", ""))
        twiml = await _run(transfer, event)
        return Response(twiml or "<Response><Hangup/></Response>", media_type=_XML)

    @router.post("/transfer/twilio/{call_sid}/agent-status", include_in_schema=False)
    async def agent_status(request: Request) -> Response:
        found = await _verified(request, "agent_status")
        if isinstance(found, Response):
            return found
        transfer, form = found
        await _run(transfer, AgentStatus(form.get("CallSid", ""), form.get("CallStatus", "")))
        return Response(status_code=204)

    @router.post("/transfer/twilio/{call_sid}/conference-status", include_in_schema=False)
    async def conference_status(request: Request) -> Response:
        found = await _verified(request, "conference_status")
        if isinstance(found, Response):
            return found
        transfer, form = found
        event = form.get("StatusCallbackEvent", "")
        is_caller = form.get("CallSid") == transfer.call_sid
        if event == "participant-join" and is_caller:
            transfer.log.info("transfer: caller joined the hold conference")
        elif (
            event == "participant-leave"
            and is_caller
            and form.get("ParticipantCallStatus", "") in _GONE
        ) or event == "conference-end":
            await _run(transfer, CallerLeft(event))
        return Response(status_code=204)

    return router
