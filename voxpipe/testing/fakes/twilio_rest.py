"""A local fake of Twilio's call-control REST API: create (dial), update (hang up, redirect to
TwiML or a URL) and fetch a call, with HTTP basic auth, answering an ended or unknown call with
404 / code 20404; plus what Twilio then does (``twilio_flow``): outbound legs answered by
scripted agents (``FakeAgent``), ``<Dial><Conference>`` with hold audio and status callbacks,
TwiML fetched from ``Url``s, every callback POSTed signed with ``X-Twilio-Signature``.

    async with FakeTwilioREST(account_sid="AC...", auth_token="secret", calls=["CA..."]) as tw:
        client = Client("AC...", "secret", http_client=AsyncTwilioHttpClient())
        client.api.base_url = tw.url
        await client.calls("CA...").update_async(status="completed")
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx

from voxpipe.testing.fakes._carrier import CarrierFake
from voxpipe.testing.fakes._http import web
from voxpipe.testing.fakes.twilio_flow import (
    Callback,
    FakeAgent,
    FakeConference,
    TwimlFetch,
    parse_conference,
    parse_gather,
    post_signed,
    wait_or,
)

__all__ = ["FakeAgent", "FakeCall", "FakeTwilioREST", "TwilioRequest"]

logger = logging.getLogger(__name__)

_ENDED = ("completed", "canceled", "failed", "busy", "no-answer")


@dataclass(slots=True)
class FakeCall:
    """A call the fake knows about, with what REST requests did to it."""

    sid: str
    status: str = "in-progress"
    from_: str = "+15550000001"
    to: str = "+15550000002"
    direction: str = "inbound"
    twiml: list[str] = field(default_factory=list)  # TwiML it was redirected to, in order
    url: list[str] = field(default_factory=list)  # `Url` redirects, in order
    said: list[str] = field(default_factory=list)  # what a dialled agent heard (<Say>)
    digits: list[str] = field(default_factory=list)  # what a dialled agent pressed
    status_callback: str | None = None
    timeout_s: int = 60
    conference: str | None = None
    ended_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ended(self) -> bool:
        return self.status in _ENDED


@dataclass(slots=True)
class TwilioRequest:
    """One REST request as received."""

    method: str
    path: str
    account_sid: str
    call_sid: str
    form: dict[str, str]
    headers: dict[str, str]
    auth_user: str | None
    status: int = 200


class FakeTwilioREST(CarrierFake):
    """Fake Twilio REST API for call control (Calls resource) on 127.0.0.1; its ``url`` goes in
    place of https://api.twilio.com (``client.api.base_url``)."""

    def __init__(
        self,
        *,
        account_sid: str = "AC00000000000000000000000000000000",
        auth_token: str = "test-token",
        calls: list[str | FakeCall] | None = None,
        agents: dict[str, FakeAgent] | None = None,
    ) -> None:
        # Who answers each number the app dials (unknown numbers never answer).
        self.agents: dict[str, FakeAgent] = dict(agents or {})
        self.conferences: dict[str, FakeConference] = {}
        self.callbacks: list[Callback] = []
        self.fetches: list[TwimlFetch] = []
        self.dialled: list[FakeCall] = []
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, FakeCall] = {}
        for call in calls or []:
            self.add_call(call)
        self.requests: list[TwilioRequest] = []
        app = web.Application()
        route = "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
        app.router.add_post(route, self._update)
        app.router.add_get(route, self._fetch)
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Calls.json", self._create)
        super().__init__(app)

    def add_call(self, call: str | FakeCall) -> FakeCall:
        """Make a call known (live) so that requests about it succeed."""
        record = FakeCall(sid=call) if isinstance(call, str) else call
        self.calls[record.sid] = record
        return record

    def hangups(self) -> list[str]:
        """Call SIDs that were hung up with `Status=completed`, in order."""
        return [
            r.call_sid
            for r in self.requests
            if r.form.get("Status") == "completed" and r.status == 200
        ]

    # --- handlers -------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> str | None:
        """The basic-auth user if the credentials are right, else None."""
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if user == self.account_sid and password == self.auth_token:
            return user
        return None

    async def _record(self, request: web.Request) -> TwilioRequest:
        form = await request.post() if request.method == "POST" else {}
        header = request.headers.get("Authorization", "")
        user = None
        if header.lower().startswith("basic "):
            try:
                user = base64.b64decode(header[6:]).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                user = None
        record = TwilioRequest(
            method=request.method,
            path=request.path,
            account_sid=request.match_info["account_sid"],
            call_sid=request.match_info.get("call_sid", ""),
            form={k: str(v) for k, v in form.items()},
            headers={k.lower(): v for k, v in request.headers.items()},
            auth_user=user,
        )
        self.requests.append(record)
        self._notify()
        return record

    def _check(self, request: web.Request, record: TwilioRequest) -> web.Response | FakeCall:
        if self._authorize(request) is None:
            return self._error(record, 401, 20003, "Authenticate")
        call = self.calls.get(record.call_sid)
        if record.account_sid != self.account_sid or call is None:
            return self._not_found(record)
        return call

    async def _fetch(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        checked = self._check(request, record)
        if isinstance(checked, web.Response):
            return checked
        return web.json_response(self._resource(checked))

    async def _update(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        checked = self._check(request, record)
        if isinstance(checked, web.Response):
            return checked
        call = checked
        if call.ended:
            # What Twilio answers for a call that has already ended: treat it as done.
            return self._not_found(record)
        status = record.form.get("Status")
        if status is not None:
            if status not in ("completed", "canceled"):
                return self._error(record, 400, 21220, f"Invalid call state: {status}")
            if status == "completed":
                call.status = "completed"
            elif call.status in ("queued", "ringing"):  # canceling only stops a call not yet up
                call.status = "canceled"
        if call.ended:
            call.ended_event.set()
            self._spawn(self._ended_by_rest(call))
        if "Twiml" in record.form:
            call.twiml.append(record.form["Twiml"])
            self._spawn(self._run_twiml(call, record.form["Twiml"]))
        if "Url" in record.form:
            call.url.append(record.form["Url"])
            self._spawn(self._follow_url(call, record.form["Url"]))
        self._notify()
        return web.json_response(self._resource(call))

    # --- what Twilio does with calls -----------------------------------------------------
    async def hang_up(self, call_sid: str) -> None:
        """The far end of ``call_sid`` hangs up (e.g. the caller while on hold)."""
        call = self.calls[call_sid]
        call.status = "completed"
        call.ended_event.set()
        await self._leave(call, "completed")
        self._notify()

    async def _ended_by_rest(self, call: FakeCall) -> None:
        await self._leave(call, call.status)
        if call.status == "completed":  # a cancelled leg is reported by its ringing task
            await self._call_status(call)

    async def _create(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if self._authorize(request) is None:
            return self._error(record, 401, 20003, "Authenticate")
        if record.account_sid != self.account_sid:
            return self._not_found(record)
        form = record.form
        if not form.get("To"):
            return self._error(record, 400, 21201, "No 'To' number is specified")
        if not form.get("From"):
            return self._error(record, 400, 21213, "No 'From' number is specified")
        if "Url" not in form and "Twiml" not in form:
            return self._error(record, 400, 21205, "Url parameter is required")
        try:
            timeout = min(max(int(form.get("Timeout", "60")), 5), 600)
        except ValueError:
            return self._error(record, 400, 21210, "Timeout must be an integer")
        call = FakeCall(
            sid="CA" + secrets.token_hex(16),
            status="queued",
            from_=form["From"],
            to=form["To"],
            direction="outbound-api",
            status_callback=form.get("StatusCallback"),
            timeout_s=timeout,
        )
        if "Url" in form:
            call.url.append(form["Url"])
        record.call_sid = call.sid
        self.calls[call.sid] = call
        self.dialled.append(call)
        # A number nobody scripted rings out at once (its Timeout elapses without an answer).
        agent = self.agents.get(call.to, FakeAgent("no-answer"))
        self._spawn(self._ring(call, agent))
        self._notify()
        return web.json_response(self._resource(call), status=201)

    async def _ring(self, call: FakeCall, agent: FakeAgent) -> None:
        call.status = "ringing"
        await self._call_status(call)
        if agent.action in ("busy", "failed"):
            await self._end_leg(call, agent.action)
            return
        wait = min(agent.ring_s, call.timeout_s)
        cancelled = await wait_or(call.ended_event, wait)
        if cancelled or call.ended:
            await self._call_status(call)  # canceled (or completed) while ringing
            return
        if agent.action == "no-answer":
            await self._end_leg(call, "no-answer")
            return
        call.status = "in-progress"
        await self._call_status(call)
        _status, twiml = await self._fetch_twiml(call, call.url[-1] if call.url else "")
        while not call.ended:
            conference = parse_conference(twiml)
            if conference is not None:
                await self._join(call, conference.name, conference.attrs)
                return
            try:
                action, said, _hangup = parse_gather(twiml)
            except Exception:  # unparsable TwiML: Twilio says "an application error" and ends
                action, said = None, []
            call.said.extend(said)
            if agent.action == "hangup" or not action or not agent.digits:
                # Hung up, or silence: the Gather falls through to what follows (Hangup).
                await self._end_leg(call, "completed")
                return
            call.digits.append(agent.digits)
            _status, twiml = await self._fetch_twiml(call, action, {"Digits": agent.digits})

    async def _end_leg(self, call: FakeCall, status: str) -> None:
        if call.ended and status == "completed":
            return
        call.status = status
        call.ended_event.set()
        await self._leave(call, status)
        await self._call_status(call)

    def _call_form(self, call: FakeCall) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": call.status,
            "Direction": call.direction,
            "ApiVersion": "2010-04-01",
        }

    async def _post(self, url: str, form: dict[str, str]) -> tuple[int, str]:
        assert self._http is not None
        status, body = await post_signed(self._http, self.auth_token, url, form)
        self.callbacks.append(Callback(url, form, status, body))
        self._notify()
        return status, body

    async def _call_status(self, call: FakeCall) -> None:
        if call.status_callback:
            form = self._call_form(call) | {"CallbackSource": "call-progress-events"}
            await self._post(call.status_callback, form)

    async def _fetch_twiml(
        self, call: FakeCall, url: str, extra: dict[str, str] | None = None
    ) -> tuple[int, str]:
        status, body = await self._post(url, self._call_form(call) | (extra or {}))
        self.fetches.append(TwimlFetch(call.sid, url, status, body))
        self._notify()
        return status, body if status == 200 else "<Response><Hangup/></Response>"

    async def _run_twiml(self, call: FakeCall, twiml: str) -> None:
        conference = parse_conference(twiml)
        await self._leave(call, "in-progress")
        if conference is not None:
            await self._join(call, conference.name, conference.attrs)

    async def _follow_url(self, call: FakeCall, url: str) -> None:
        await self._leave(call, "in-progress")
        _status, twiml = await self._fetch_twiml(call, url)
        conference = parse_conference(twiml)
        if conference is not None:
            await self._join(call, conference.name, conference.attrs)

    async def _join(self, call: FakeCall, name: str, attrs: dict[str, str]) -> None:
        conf = self.conferences.get(name)
        if conf is None or conf.ended:
            conf = FakeConference(
                name=name,
                sid="CF" + secrets.token_hex(16),
                status_callback=attrs.get("statusCallback"),
                events=tuple(attrs.get("statusCallbackEvent", "").split()),
                wait_url=attrs.get("waitUrl"),
                wait_method=attrs.get("waitMethod", "POST").upper(),
            )
            self.conferences[name] = conf
        conf.participants[call.sid] = attrs.get("endConferenceOnExit", "false") == "true"
        call.conference = name
        await self._conference_event(conf, "participant-join", call)
        if attrs.get("startConferenceOnEnter", "true") == "true" and not conf.started:
            conf.started = True
            await self._conference_event(conf, "conference-start")
        elif not conf.started and conf.wait_url:
            await self._fetch_hold(conf)
        self._notify()

    async def _fetch_hold(self, conf: FakeConference) -> None:
        assert self._http is not None and conf.wait_url
        try:
            if conf.wait_method == "GET":
                resp = await self._http.get(conf.wait_url)
            else:
                resp = await self._http.post(conf.wait_url, data={})
            conf.hold_audio.append(
                (resp.status_code, resp.headers.get("content-type", ""), len(resp.content))
            )
        except httpx.HTTPError as exc:
            logger.warning("fake Twilio: hold audio %s failed: %s", conf.wait_url, exc)
            conf.hold_audio.append((0, "", 0))

    async def _leave(self, call: FakeCall, participant_status: str) -> None:
        name, call.conference = call.conference, None
        conf = self.conferences.get(name or "")
        if conf is None or call.sid not in conf.participants:
            return
        ends = conf.participants.pop(call.sid)
        await self._conference_event(conf, "participant-leave", call, participant_status)
        if (ends or not conf.participants) and not conf.ended:
            conf.ended = True
            for sid in list(conf.participants):
                other = self.calls[sid]
                conf.participants.pop(sid)
                other.conference = None
                await self._conference_event(conf, "participant-leave", other, "completed")
                # Their <Dial> ended and nothing follows: the call ends.
                other.status = "completed"
                other.ended_event.set()
                await self._call_status(other)
            await self._conference_event(conf, "conference-end")
        self._notify()

    async def _conference_event(
        self,
        conf: FakeConference,
        event: str,
        call: FakeCall | None = None,
        participant_status: str | None = None,
    ) -> None:
        short = event.split("-", 1)[-1]
        if not conf.status_callback or short not in conf.events:
            return
        form = {
            "ConferenceSid": conf.sid,
            "FriendlyName": conf.name,
            "AccountSid": self.account_sid,
            "StatusCallbackEvent": event,
            "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
        }
        if call is not None:
            form["CallSid"] = call.sid
            form["EndConferenceOnExit"] = "false"
            if participant_status is not None:
                form["ParticipantCallStatus"] = participant_status
        await self._post(conf.status_callback, form)

    def _not_found(self, record: TwilioRequest) -> web.Response:
        return self._error(
            record, 404, 20404, f"The requested resource {record.path} was not found"
        )

    def _error(self, record: TwilioRequest, status: int, code: int, message: str) -> web.Response:
        record.status = status
        self._notify()
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status)

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC).replace(microsecond=0), usegmt=False)
        base = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}"
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "date_created": now,
            "date_updated": now,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "phone_number_sid": None,
            "status": call.status,
            "start_time": now,
            "end_time": now if call.ended else None,
            "duration": "0" if call.ended else None,
            "price": None,
            "price_unit": "USD",
            "direction": call.direction,
            "answered_by": None,
            "api_version": "2010-04-01",
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": f"{base}.json",
            "subresource_uris": {
                "notifications": f"{base}/Notifications.json",
                "recordings": f"{base}/Recordings.json",
            },
        }
