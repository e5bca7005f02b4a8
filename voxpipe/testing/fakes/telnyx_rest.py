"""A local fake of Telnyx Call Control v2: dial (``POST /v2/calls``) and commands (``POST
/v2/calls/{call_control_id}/actions/{command}``) with a Bearer key, 422 for an ended call; plus
what Telnyx then does: dialled legs answered (or not) by scripted agents (``FakeTelnyxAgent``),
``gather_using_speak`` heard and answered with the agent's digit, ``bridge``, and every event
(``call.initiated``, ``call.answered``, ``call.gather.ended``, ``call.bridged``, ``call.hangup``
with ``hangup_cause``) POSTed to the leg's ``webhook_url`` signed with Ed25519 like Telnyx
(``telnyx-signature-ed25519`` over ``timestamp|body``).

    async with FakeTelnyxREST(agents={"+4420...": FakeTelnyxAgent("answer", digits="1")}) as tx:
        tx.add_call("v3:caller", webhook_url="http://127.0.0.1:PORT/telnyx/events")
        control = TelnyxCallControl("key", base_url=tx.url)

``timeout_scale`` shortens the ring and gather timeouts a request asks for (0.01: a 20 s ring
times out after 0.2 s), so a "never answers" agent costs no real wait in tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from voxpipe.testing.carrier_signing import TelnyxSigner
from voxpipe.testing.fakes._carrier import CarrierFake
from voxpipe.testing.fakes._http import web

__all__ = ["FakeTelnyxAgent", "FakeTelnyxCall", "FakeTelnyxREST", "TelnyxWebhook"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FakeTelnyxAgent:
    """Who answers a dialled number: ``answer`` (then presses ``digits``; "" = silence),
    ``reject`` (declines the ringing call), ``busy``, ``never`` (rings until the timeout), or
    ``hangup`` (answers, then hangs up during the brief)."""

    mode: str = "answer"
    digits: str = "1"
    ring_s: float = 0.05


@dataclass(slots=True)
class FakeTelnyxCall:
    """A leg the fake knows about, with what commands did to it."""

    call_control_id: str
    to: str = "+15550000002"
    from_: str = "+15550000001"
    webhook_url: str | None = None
    client_state: str | None = None
    connection_id: str = ""
    alive: bool = True
    answered: bool = True
    timeout_secs: int = 30
    actions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)  # what an agent heard (gather_using_speak)
    bridged_with: str | None = None
    hangup_cause: str | None = None
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def commands(self) -> list[str]:
        return [name for name, _ in self.actions]


@dataclass(frozen=True, slots=True)
class TelnyxWebhook:
    """One event POSTed to the app, and the app's HTTP status."""

    url: str
    event_type: str
    call_control_id: str
    payload: dict[str, Any]
    status: int


class FakeTelnyxREST(CarrierFake):
    """Fake Telnyx Call Control v2 on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        api_key: str = "KEYtest",
        agents: dict[str, FakeTelnyxAgent] | None = None,
        signer: TelnyxSigner | None = None,
        timeout_scale: float = 1.0,
    ) -> None:
        self.api_key = api_key
        self.agents = dict(agents or {})
        self.signer = signer or TelnyxSigner()
        self.timeout_scale = timeout_scale
        self.calls: dict[str, FakeTelnyxCall] = {}
        self.dialled: list[FakeTelnyxCall] = []
        self.webhooks: list[TelnyxWebhook] = []
        self.requests: list[tuple[str, dict[str, Any], int]] = []  # path, body, status
        app = web.Application()
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_post("/v2/calls/{ccid}/actions/{command}", self._action)
        super().__init__(app)

    @property
    def public_key(self) -> str:
        """The key the app checks webhook signatures with (TELNYX_PUBLIC_KEY)."""
        return self.signer.public_key_b64

    def add_call(self, ccid: str, *, webhook_url: str | None = None) -> FakeTelnyxCall:
        """A live, answered leg (the caller's) whose events go to ``webhook_url``."""
        call = FakeTelnyxCall(ccid, webhook_url=webhook_url)
        self.calls[ccid] = call
        return call

    async def caller_hangs_up(self, ccid: str) -> None:
        """The caller's leg ends (their ``call.hangup`` is sent)."""
        await self._end(self.calls[ccid], "normal_clearing", source="caller")

    # --- REST ----------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    @staticmethod
    def _error(status: int, code: str, title: str, detail: str) -> web.Response:
        body = {"errors": [{"code": code, "title": title, "detail": detail}]}
        return web.json_response(body, status=status)

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    async def _dial(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not self._authorized(request):
            self.requests.append((request.path, body or {}, 401))
            return self._error(401, "10009", "Authentication failed", "invalid API key")
        missing = [k for k in ("to", "from", "connection_id") if not (body or {}).get(k)]
        if body is None or missing:
            self.requests.append((request.path, body or {}, 422))
            return self._error(422, "10015", "Invalid parameter", f"missing {missing}")
        self.requests.append((request.path, body, 200))
        ccid = "v3:" + secrets.token_urlsafe(16)
        call = FakeTelnyxCall(
            ccid,
            to=str(body["to"]),
            from_=str(body["from"]),
            webhook_url=body.get("webhook_url"),
            client_state=body.get("client_state"),
            connection_id=str(body["connection_id"]),
            answered=False,
            timeout_secs=int(body.get("timeout_secs") or 30),
        )
        self.calls[ccid] = call
        self.dialled.append(call)
        self._spawn(self._ring(call))
        return web.json_response(
            {
                "data": {
                    "call_control_id": ccid,
                    "call_leg_id": str(uuid.uuid4()),
                    "call_session_id": call.session_id,
                    "is_alive": False,
                    "record_type": "call",
                }
            }
        )

    async def _action(self, request: web.Request) -> web.Response:
        body = await self._body(request) or {}
        ccid, command = request.match_info["ccid"], request.match_info["command"]
        if not self._authorized(request):
            self.requests.append((request.path, body, 401))
            return self._error(401, "10009", "Authentication failed", "invalid API key")
        call = self.calls.get(ccid)
        if call is None or not call.alive:
            self.requests.append((request.path, body, 422))
            return self._error(
                422,
                "90018",
                "Call has already ended",
                "This call is no longer active and can't receive commands.",
            )
        if command == "bridge":
            other = self.calls.get(str(body.get("call_control_id") or ""))
            if other is None or not other.alive or not call.answered:
                self.requests.append((request.path, body, 422))
                return self._error(
                    422, "90018", "Call has already ended", "The call to bridge with has ended."
                )
        self.requests.append((request.path, body, 200))
        call.actions.append((command, body))
        self._notify()
        if command == "hangup":
            # The leg ends now; its call.hangup webhook follows, not inside this response
            # (Telnyx answers the command first: an app that handles webhooks under a lock
            # while sending a command must not deadlock).
            self._spawn(self._end(call, "normal_clearing", source="caller"))
            call.alive = False
        elif command == "gather_using_speak":
            call.said.append(str(body.get("payload") or ""))
            self._spawn(self._gather(call, body))
        elif command == "bridge":
            other = self.calls[str(body["call_control_id"])]
            call.bridged_with, other.bridged_with = other.call_control_id, call.call_control_id
            self._spawn(self._post(call, "call.bridged"))
            self._spawn(self._post(other, "call.bridged"))
        return web.json_response({"data": {"result": "ok"}})

    # --- what Telnyx does next -------------------------------------------------------------
    async def _ring(self, call: FakeTelnyxCall) -> None:
        await self._post(call, "call.initiated")
        agent = self.agents.get(call.to, FakeTelnyxAgent("never"))
        timeout = call.timeout_secs * self.timeout_scale
        if agent.mode == "never" or agent.ring_s >= timeout:
            await asyncio.sleep(timeout)  # the fake's own ring timer, scaled
            if call.alive and not call.answered:
                await self._end(call, "timeout", source="callee")
            return
        await asyncio.sleep(agent.ring_s)
        if not call.alive:
            return  # cancelled while ringing
        if agent.mode in ("reject", "busy"):
            cause = "call_rejected" if agent.mode == "reject" else "user_busy"
            await self._end(call, cause, source="callee")
            return
        call.answered = True
        await self._post(call, "call.answered")

    async def _gather(self, call: FakeTelnyxCall, body: dict[str, Any]) -> None:
        agent = self.agents.get(call.to, FakeTelnyxAgent())
        await asyncio.sleep(0.02)  # the brief is being spoken
        if not call.alive:
            return
        if agent.mode == "hangup":
            await self._end(call, "normal_clearing", source="callee")
            return
        if not agent.digits:
            await asyncio.sleep(int(body.get("timeout_millis") or 5000) / 1000 * self.timeout_scale)
            if call.alive:
                await self._post(call, "call.gather.ended", digits="", status="timeout")
            return
        valid = str(body.get("valid_digits") or "0123456789#*")
        status = "valid" if all(d in valid for d in agent.digits) else "invalid"
        await self._post(call, "call.gather.ended", digits=agent.digits, status=status)

    async def _end(self, call: FakeTelnyxCall, cause: str, *, source: str) -> None:
        if call.hangup_cause is not None:
            return
        call.alive = False
        call.hangup_cause = cause
        await self._post(call, "call.hangup", hangup_cause=cause, hangup_source=source)

    async def _post(self, call: FakeTelnyxCall, event_type: str, **extra: Any) -> None:
        if not call.webhook_url or self._http is None:
            return
        payload: dict[str, Any] = {
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_control_id.removeprefix("v3:"),
            "call_session_id": call.session_id,
            "client_state": call.client_state,
            "connection_id": call.connection_id,
            "from": call.from_,
            "to": call.to,
            "direction": "outgoing" if call in self.dialled else "incoming",
            **extra,
        }
        body = json.dumps(
            {
                "data": {
                    "record_type": "event",
                    "event_type": event_type,
                    "id": str(uuid.uuid4()),
                    "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "payload": payload,
                },
                "meta": {"attempt": 1, "delivered_to": call.webhook_url},
            }
        ).encode()
        headers = {"Content-Type": "application/json", **self.signer.headers(body)}
        try:
            resp = await self._http.post(call.webhook_url, content=body, headers=headers)
            status = resp.status_code
        except httpx.HTTPError as exc:
            logger.warning(
                "fake telnyx: webhook %s to %s failed: %s", event_type, call.webhook_url, exc
            )
            status = 0
        self.webhooks.append(
            TelnyxWebhook(call.webhook_url, event_type, call.call_control_id, payload, status)
        )
        self._notify()


def decode_state(value: str | None) -> str:
    """A ``client_state`` as the app sent it (base64 text)."""
    return base64.b64decode(value or "").decode()
