"""A local fake of Twilio's call-control REST API: update (hang up, redirect to TwiML) and fetch
a call, with HTTP basic auth, answering an ended or unknown call with 404 / code 20404.

    async with FakeTwilioREST(account_sid="AC...", auth_token="secret", calls=["CA..."]) as tw:
        client = Client("AC...", "secret", http_client=AsyncTwilioHttpClient())
        client.api.base_url = tw.url
        await client.calls("CA...").update_async(status="completed")
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from voxpipe.testing.fakes._base import FakeServer
from voxpipe.testing.fakes._http import AppServer, web

__all__ = ["FakeCall", "FakeTwilioREST", "TwilioRequest"]

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


class FakeTwilioREST(FakeServer):
    """Fake Twilio REST API for call control (Calls resource) on 127.0.0.1."""

    def __init__(
        self,
        *,
        account_sid: str = "AC00000000000000000000000000000000",
        auth_token: str = "test-token",
        calls: list[str | FakeCall] | None = None,
    ) -> None:
        super().__init__()
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
        self._server = AppServer(app)

    @property
    def url(self) -> str:
        """Base URL to put in place of https://api.twilio.com (`client.api.base_url`)."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

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
            call_sid=request.match_info["call_sid"],
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
        if "Twiml" in record.form:
            call.twiml.append(record.form["Twiml"])
        if "Url" in record.form:
            call.url.append(record.form["Url"])
        self._notify()
        return web.json_response(self._resource(call))

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
