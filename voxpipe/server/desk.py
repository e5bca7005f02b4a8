"""The agent desk: live escalations as they happen, with the brief, before anyone picks up.

``GET /desk`` (the page; it reads its token from ``#token=`` in its URL), ``GET
/api/escalations`` (JSON) and ``GET /api/escalations/events`` (server-sent events: the list
again on every change). The API needs ``Authorization: Bearer <DESK_TOKEN>``; the routes exist
only when ``DESK_TOKEN`` is set. Caller numbers are masked to their last 4 digits (the desk
token grants no role that may see them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from voxpipe.server.access import bearer_token, tokens_equal
from voxpipe.server.security_events import client_address, security_event
from voxpipe.telephony.transfers import TRANSFERS
from voxpipe.telephony.warm_transfer import WarmTransfer

__all__ = ["desk_router", "escalations", "mask_number"]

PAGE = Path(__file__).with_name("static") / "desk.html"
KEEPALIVE_S = 15.0


def mask_number(number: str) -> str:
    """``+15551230000`` -> ``•••0000``: enough to recognise a caller, not to call them."""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "•" * len(digits)
    return "•••" + "".join(digits[-4:])


def _view(transfer: WarmTransfer[Any], now: float) -> dict[str, Any]:
    record = transfer.record
    details = transfer.details
    since = record.on_hold_at or record.started_at
    return {
        "call_id": transfer.call_sid,
        "caller": mask_number(str(details.get("caller") or "")),
        "locale": details.get("locale") or transfer.wording.language,
        "reason": record.reason,
        "summary": record.summary,
        "trigger": record.trigger,
        "conversation": list(details.get("conversation") or []),
        "state": transfer.state.value,
        "ringing": transfer.current_target,
        "attempts": [dict(a) for a in record.attempts],
        "waiting_s": round(max(0.0, now - since), 1),
    }


def escalations() -> list[dict[str, Any]]:
    """The live escalations of this worker, longest waiting first."""
    now = time.time()
    views = [_view(t, now) for t in TRANSFERS.live()]
    return sorted(views, key=lambda v: -float(v["waiting_s"]))


def desk_router(token: str) -> APIRouter:
    """The desk's routes, admitting ``Bearer <token>``."""
    router = APIRouter()

    def refused(request: Request) -> Response | None:
        if tokens_equal(bearer_token(request), token):
            return None
        security_event(
            "desk_token_refused",
            client_address(request),
            f"{request.url.path} without a valid DESK_TOKEN bearer token",
        )
        return JSONResponse(
            {"error": "the agent desk API needs Authorization: Bearer <DESK_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="voxpipe desk"'},
        )

    @router.get("/desk", include_in_schema=False)
    async def page() -> Response:
        # The page holds no data: everything comes from the token-checked API.
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @router.get("/api/escalations", include_in_schema=False)
    async def listing(request: Request) -> Response:
        return refused(request) or JSONResponse({"escalations": escalations()})

    @router.get("/api/escalations/events", include_in_schema=False)
    async def events(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied

        async def stream() -> AsyncIterator[str]:
            version = -1
            while True:
                version = TRANSFERS.version
                yield f"data: {json.dumps({'escalations': escalations()})}\n\n"
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        await TRANSFERS.wait_changed(version)
                except TimeoutError:
                    yield ": keepalive\n\n"  # also refreshes the waiting times shown

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
