"""A local fake of the Vonage Voice API for warm transfers: ``POST /v1/calls`` (an outbound
leg with an inline NCCO; 201 with its ``uuid``) and ``PUT /v1/calls/{uuid}`` (``transfer`` to
an inline NCCO, ``hangup``; 204; 404 for an unknown call, 400 for one that has ended) and
``GET /v1/calls/{uuid}`` (its ``status``), each
authorised by an RS256 JWT of the application (``application_id``, ``iat``, ``exp``); plus what
Vonage then does: dialled legs answered (or not) by scripted agents (``FakeVonageAgent``), NCCOs
run (``talk`` heard, ``input`` answered with the agent's digit and its event's NCCO answer run,
``conversation`` joined with ``startOnEnter`` / ``endOnExit`` / ``musicOnHoldUrl``, ``connect``
to a websocket recorded), and every ``status`` and ``input`` event POSTed as JSON with a signed
webhook JWT (HS256, the signature secret, ``payload_hash`` of the body).

    async with FakeVonageREST(agents={"442079460001": FakeVonageAgent("answer")}) as vg:
        vg.add_call("caller-uuid", event_url="http://127.0.0.1:PORT/transfer/vonage/events")
        voice = VonageVoice(vg.application_id, vg.private_key_pem, base_url=vg.url)

``timeout_scale`` shortens ``ringing_timer`` and input timeouts (0.01: 20 s ring = 0.2 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from voxpipe.testing.carrier_signing import vonage_jwt
from voxpipe.testing.fakes._carrier import CarrierFake
from voxpipe.testing.fakes._http import web

__all__ = [
    "FakeConversation",
    "FakeVonageAgent",
    "FakeVonageCall",
    "FakeVonageREST",
    "VonageWebhook",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FakeVonageAgent:
    """Who answers a dialled number: ``answer`` (then presses ``digits``; "" = silence),
    ``reject`` (declines the ringing call), ``busy``, ``never`` (rings until the
    ``ringing_timer``), or ``hangup`` (answers, then hangs up during the brief)."""

    mode: str = "answer"
    digits: str = "1"
    ring_s: float = 0.05


@dataclass(slots=True)
class FakeVonageCall:
    """A leg the fake knows about, with what was done to it."""

    uuid: str
    to: str = "442079460000"
    from_: str = "447700900000"
    event_url: str | None = None
    direction: str = "inbound"
    alive: bool = True
    answered: bool = True
    status: str = "answered"
    ringing_timer: int = 60
    conversation_uuid: str = field(default_factory=lambda: f"CON-{uuid.uuid4()}")
    said: list[str] = field(default_factory=list)  # talk actions heard
    transfers: list[list[dict[str, Any]]] = field(default_factory=list)  # NCCOs moved to
    conversation: str | None = None  # the named conversation it is in
    websocket: dict[str, Any] | None = None  # a connect endpoint it was sent to
    digits_sent: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FakeConversation:
    """A named conversation: who is in it, whether it started, its hold music."""

    name: str
    participants: list[str] = field(default_factory=list)
    started: bool = False
    music_on_hold: list[str] = field(default_factory=list)
    end_on_exit: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class VonageWebhook:
    """One event POSTed to the app (``kind`` a status or ``input``) and the app's answer."""

    url: str
    kind: str
    uuid: str
    body: dict[str, Any]
    status: int
    answer: Any = None


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": f"https://developer.nexmo.com/api-errors#{status}", "title": title}
    return web.json_response({**body, "detail": detail}, status=status)


class FakeVonageREST(CarrierFake):
    """Fake Vonage Voice API on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        application_id: str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        signature_secret: str = "fake-vonage-signature-secret-32ch",
        agents: dict[str, FakeVonageAgent] | None = None,
        timeout_scale: float = 1.0,
    ) -> None:
        self.application_id = application_id
        self.signature_secret = signature_secret
        key = generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_pem = key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ).decode()
        self._public_key = key.public_key()
        self.agents = {k.lstrip("+"): v for k, v in (agents or {}).items()}
        self.timeout_scale = timeout_scale
        self.calls: dict[str, FakeVonageCall] = {}
        self.dialled: list[FakeVonageCall] = []
        self.conversations: dict[str, FakeConversation] = {}
        self.webhooks: list[VonageWebhook] = []
        self.requests: list[tuple[str, str, dict[str, Any], int]] = []  # method, path, body
        app = web.Application()
        app.router.add_post("/v1/calls", self._create)
        app.router.add_put("/v1/calls/{uuid}", self._update)
        app.router.add_get("/v1/calls/{uuid}", self._get)
        super().__init__(app)

    def add_call(self, call_uuid: str, *, event_url: str | None = None) -> FakeVonageCall:
        """A live, answered inbound call (the caller's) whose events go to ``event_url``."""
        call = FakeVonageCall(call_uuid, event_url=event_url)
        self.calls[call_uuid] = call
        return call

    async def caller_hangs_up(self, call_uuid: str) -> None:
        """The caller's call ends (its ``completed`` event is sent)."""
        await self._end(self.calls[call_uuid], "completed")

    # --- REST ----------------------------------------------------------------------------
    def _auth_error(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return "missing Authorization: Bearer <JWT>"
        try:
            claims = jwt.decode(
                header[len("Bearer ") :],
                self._public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "application_id"]},
            )
        except jwt.PyJWTError as exc:
            return f"invalid JWT: {exc}"
        if claims.get("application_id") != self.application_id:
            return "JWT for another application"
        if abs(time.time() - float(claims["iat"])) > 300:
            return "JWT iat out of range"
        return None

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        error = self._auth_error(request)
        if error is not None:
            self.requests.append(("POST", request.path, body or {}, 401))
            return _problem(401, "Unauthorized", error)
        to = (body or {}).get("to")
        ncco = (body or {}).get("ncco")
        bad = []
        if not isinstance(to, list) or not to or not isinstance(to[0], dict):
            bad.append("to")
        if not isinstance(ncco, list):
            bad.append("ncco")
        if not isinstance((body or {}).get("from"), dict):
            bad.append("from")
        if body is None or bad:
            self.requests.append(("POST", request.path, body or {}, 400))
            return _problem(400, "Bad Request", f"invalid parameters: {bad}")
        assert isinstance(to, list) and isinstance(ncco, list) and body is not None
        self.requests.append(("POST", request.path, body, 201))
        target = to[0]
        event_url = body.get("event_url")
        call = FakeVonageCall(
            str(uuid.uuid4()),
            to=str(target.get("number") or target.get("uri") or ""),
            from_=str(body["from"].get("number") or ""),
            event_url=event_url[0] if isinstance(event_url, list) and event_url else None,
            direction="outbound",
            answered=False,
            status="started",
            ringing_timer=int(body.get("ringing_timer") or 60),
        )
        self.calls[call.uuid] = call
        self.dialled.append(call)
        self._spawn(self._ring(call, ncco))
        answer = {"uuid": call.uuid, "status": "started", "direction": "outbound"}
        return web.json_response(
            {**answer, "conversation_uuid": call.conversation_uuid}, status=201
        )

    async def _get(self, request: web.Request) -> web.Response:
        call_uuid = request.match_info["uuid"]
        error = self._auth_error(request)
        status = 401 if error else 200 if call_uuid in self.calls else 404
        self.requests.append(("GET", request.path, {}, status))
        if error is not None:
            return _problem(401, "Unauthorized", error)
        call = self.calls.get(call_uuid)
        if call is None:
            return _problem(404, "Not Found", f"call {call_uuid} was not found")
        return web.json_response(
            {
                "_links": {"self": {"href": f"/calls/{call.uuid}"}},
                "uuid": call.uuid,
                "conversation_uuid": call.conversation_uuid,
                "to": {"type": "phone", "number": call.to},
                "from": {"type": "phone", "number": call.from_},
                "status": call.status,
                "direction": call.direction,
            }
        )

    async def _update(self, request: web.Request) -> web.Response:
        body = await self._json(request) or {}
        call_uuid = request.match_info["uuid"]
        error = self._auth_error(request)
        if error is not None:
            self.requests.append(("PUT", request.path, body, 401))
            return _problem(401, "Unauthorized", error)
        call = self.calls.get(call_uuid)
        if call is None:
            self.requests.append(("PUT", request.path, body, 404))
            return _problem(404, "Not Found", f"call {call_uuid} was not found")
        if not call.alive:
            self.requests.append(("PUT", request.path, body, 400))
            return _problem(400, "Bad Request", "the call is not in progress")
        action = body.get("action")
        destination = body.get("destination")
        if action == "hangup":
            self.requests.append(("PUT", request.path, body, 204))
            self._spawn(self._end(call, "completed" if call.answered else "cancelled"))
            call.alive = False
            return web.Response(status=204)
        if action == "transfer" and isinstance(destination, dict):
            ncco = destination.get("ncco")
            if destination.get("type") == "ncco" and isinstance(ncco, list):
                self.requests.append(("PUT", request.path, body, 204))
                self._leave(call)
                call.websocket = None
                call.transfers.append(ncco)
                self._notify()
                self._spawn(self._run(call, ncco))
                return web.Response(status=204)
        self.requests.append(("PUT", request.path, body, 400))
        return _problem(400, "Bad Request", f"unsupported update {action!r}")

    # --- what Vonage does next -------------------------------------------------------------
    async def _ring(self, call: FakeVonageCall, ncco: list[dict[str, Any]]) -> None:
        await self._event(call, "started")
        await self._event(call, "ringing")
        agent = self.agents.get(call.to.lstrip("+"), FakeVonageAgent("never"))
        timeout = call.ringing_timer * self.timeout_scale
        if agent.mode == "never" or agent.ring_s >= timeout:
            await asyncio.sleep(timeout)  # the fake's own ringing timer, scaled
            if call.alive and not call.answered:
                await self._end(call, "timeout")
            return
        await asyncio.sleep(agent.ring_s)
        if not call.alive:
            return  # hung up while ringing
        if agent.mode in ("reject", "busy"):
            await self._end(call, "rejected" if agent.mode == "reject" else "busy")
            return
        call.answered = True
        await self._event(call, "answered")
        await self._run(call, ncco)

    async def _run(self, call: FakeVonageCall, ncco: list[dict[str, Any]]) -> None:
        """Run an NCCO on a live leg; a leg whose NCCO runs out is completed."""
        actions = list(ncco)
        while actions and call.alive:
            action = actions.pop(0)
            kind = action.get("action")
            if kind == "talk":
                call.said.append(str(action.get("text") or ""))
                self._notify()
                await asyncio.sleep(0.01)  # being spoken
            elif kind == "input":
                answer = await self._input(call, action)
                if isinstance(answer, list):
                    actions = list(answer)  # an NCCO answer replaces what was left
            elif kind == "conversation":
                self._join(call, action)
                return  # in the conversation until it ends or the leg is moved
            elif kind == "connect":
                endpoints = action.get("endpoint") or [{}]
                call.websocket = dict(endpoints[0])
                self._notify()
                return  # connected to the websocket until moved or hung up
        if call.alive:
            await self._end(call, "completed")

    async def _input(self, call: FakeVonageCall, action: dict[str, Any]) -> Any:
        agent = self.agents.get(call.to.lstrip("+"), FakeVonageAgent())
        if agent.mode == "hangup":
            await self._end(call, "completed")
            return None
        dtmf = action.get("dtmf") if isinstance(action.get("dtmf"), dict) else {}
        assert isinstance(dtmf, dict)
        digits = agent.digits[: int(dtmf.get("maxDigits") or 20)]
        if not digits:
            await asyncio.sleep(float(dtmf.get("timeOut") or 3) * self.timeout_scale)
        if not call.alive:
            return None
        call.digits_sent.append(digits)
        urls = action.get("eventUrl") or []
        if not urls:
            return None
        body = {
            "speech": {"results": []},
            "dtmf": {"digits": digits, "timed_out": not digits},
            **self._base(call),
        }
        return await self._post(str(urls[0]), "input", call, body)

    def _join(self, call: FakeVonageCall, action: dict[str, Any]) -> None:
        name = str(action.get("name") or "")
        conv = self.conversations.setdefault(name, FakeConversation(name))
        conv.participants.append(call.uuid)
        call.conversation = name
        if action.get("startOnEnter", True):
            conv.started = True
        if action.get("endOnExit", False):
            conv.end_on_exit.add(call.uuid)
        music = action.get("musicOnHoldUrl")
        if isinstance(music, list):
            conv.music_on_hold.extend(str(m) for m in music)
        self._notify()

    def _leave(self, call: FakeVonageCall) -> list[FakeVonageCall]:
        """Take a leg out of its conversation; the legs ended with it (``endOnExit``)."""
        conv = self.conversations.get(call.conversation or "")
        call.conversation = None
        if conv is None or call.uuid not in conv.participants:
            return []
        conv.participants.remove(call.uuid)
        if call.uuid not in conv.end_on_exit:
            return []
        others = [self.calls[u] for u in conv.participants]
        conv.participants.clear()
        return others

    async def _end(self, call: FakeVonageCall, status: str) -> None:
        if call.status in ("completed", "timeout", "rejected", "busy", "cancelled", "failed"):
            return
        call.alive = False
        ended = self._leave(call)
        await self._event(call, status)
        for other in ended:
            await self._end(other, "completed")

    def _base(self, call: FakeVonageCall) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "from": call.from_,
            "to": call.to,
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "timestamp": now,
        }

    async def _event(self, call: FakeVonageCall, status: str) -> None:
        call.status = status
        self._notify()
        if call.event_url:
            body = {**self._base(call), "status": status, "direction": call.direction}
            await self._post(call.event_url, status, call, body)

    async def _post(self, url: str, kind: str, call: FakeVonageCall, body: dict[str, Any]) -> Any:
        if self._http is None:
            return None
        raw = json.dumps(body).encode()
        token = vonage_jwt(self.signature_secret, method="POST", body=raw)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        answer: Any = None
        try:
            resp = await self._http.post(url, content=raw, headers=headers)
            status = resp.status_code
            if status == 200 and resp.content:
                answer = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("fake vonage: %s event to %s failed: %s", kind, url, exc)
            status = 0
        self.webhooks.append(VonageWebhook(url, kind, call.uuid, body, status, answer))
        self._notify()
        return answer
