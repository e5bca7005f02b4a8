"""Twilio call control over REST for transfers: move a live call, dial a leg, end a leg.

``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` (``Twiml``/``Url`` moves the call,
``Status=canceled|completed`` ends it) and ``POST .../Calls.json`` (a new outbound leg).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

__all__ = ["TwilioCalls", "TwilioError"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TwilioError(Exception):
    """A REST request Twilio refused or that could not reach Twilio."""

    status: int  # HTTP status, 0 when Twilio was not reached
    code: int | None
    message: str

    def __str__(self) -> str:
        return f"Twilio REST: HTTP {self.status} code {self.code}: {self.message}"


class TwilioCalls:
    """The Calls resource of one account (basic auth AccountSid:AuthToken)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = "https://api.twilio.com",
        timeout_s: float = 5.0,
    ) -> None:
        self.account_sid = account_sid
        self._auth = (account_sid, auth_token)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _calls_url(self, call_sid: str | None = None) -> str:
        tail = f"/{call_sid}.json" if call_sid else ".json"
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls{tail}"

    async def _post(self, url: str, data: dict[str, str]) -> dict[str, object]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.post(url, data=data, auth=self._auth)
        except httpx.HTTPError as exc:
            raise TwilioError(0, None, f"cannot reach Twilio: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if resp.status_code >= 300:
            code = body.get("code")
            raise TwilioError(
                resp.status_code,
                code if isinstance(code, int) else None,
                str(body.get("message") or resp.text[:200]),
            )
        return body

    async def move(
        self, call_sid: str, *, twiml: str | None = None, url: str | None = None
    ) -> None:
        """Send a live call to new TwiML (inline, or fetched from ``url`` by a signed POST)."""
        data = {"Twiml": twiml} if twiml is not None else {"Url": url or "", "Method": "POST"}
        await self._post(self._calls_url(call_sid), data)

    async def dial(
        self,
        to: str,
        from_: str,
        *,
        url: str,
        status_callback: str,
        timeout_s: int,
    ) -> str:
        """Start an outbound leg to ``to`` running ``url``'s TwiML once answered; its CallSid."""
        body = await self._post(
            self._calls_url(),
            {
                "To": to,
                "From": from_,
                "Url": url,
                "Method": "POST",
                "StatusCallback": status_callback,
                "StatusCallbackMethod": "POST",
                # Each event is posted with the leg's CallStatus (queued ... no-answer, busy).
                "StatusCallbackEvent": "initiated ringing answered completed",
                "Timeout": str(timeout_s),
            },
        )
        sid = body.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TwilioError(200, None, "Calls create answered without a sid")
        return sid

    async def end(self, call_sid: str, *, ringing: bool) -> None:
        """Stop a leg: cancel one not answered yet, complete one in progress; gone = done."""
        try:
            await self._post(
                self._calls_url(call_sid), {"Status": "canceled" if ringing else "completed"}
            )
        except TwilioError as exc:
            if exc.status == 404 or exc.code == 20404:
                return  # the call already ended
            raise
