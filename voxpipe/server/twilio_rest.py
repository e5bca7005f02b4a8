"""Twilio call control over REST: hang a call up when the bot's pipeline has ended."""

from __future__ import annotations

import logging
from typing import Literal

import httpx

__all__ = ["HangupResult", "TwilioCallControl"]

logger = logging.getLogger(__name__)

HangupResult = Literal["completed", "already-ended", "failed"]


class TwilioCallControl:
    """Updates calls through ``POST /2010-04-01/Accounts/{sid}/Calls/{CallSid}.json``."""

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

    def _url(self, call_sid: str) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"

    async def redirect(self, call_sid: str, twiml: str) -> bool:
        """Move a live call to new TwiML (e.g. ``<Dial><Conference>`` for a warm transfer)."""
        try:
            resp = await _update(self, call_sid, {"Twiml": twiml})
        except httpx.HTTPError as exc:
            logger.error("redirect of %s failed: cannot reach Twilio REST API: %s", call_sid, exc)
            return False
        if resp.status_code >= 300:
            logger.error(
                "redirect of %s failed: HTTP %d code %s (check TWILIO_ACCOUNT_SID and "
                "TWILIO_AUTH_TOKEN, and that the call is still live)",
                call_sid,
                resp.status_code,
                _error_code(resp),
            )
            return False
        return True

    async def hangup(self, call_sid: str) -> HangupResult:
        """End the call; a call Twilio already ended (404, code 20404) counts as done."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.post(
                    self._url(call_sid), data={"Status": "completed"}, auth=self._auth
                )
        except httpx.HTTPError as exc:
            logger.warning("hang-up of %s failed: cannot reach Twilio REST API: %s", call_sid, exc)
            return "failed"
        if resp.status_code < 300:
            return "completed"
        code = _error_code(resp)
        if resp.status_code == 404 or code == 20404:
            logger.info("hang-up of %s: the call had already ended", call_sid)
            return "already-ended"
        if resp.status_code == 401:
            logger.error(
                "hang-up of %s refused (401): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                call_sid,
            )
        else:
            logger.warning(
                "hang-up of %s failed: HTTP %d code %s", call_sid, resp.status_code, code
            )
        return "failed"


async def _update(
    control: TwilioCallControl, call_sid: str, data: dict[str, str]
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=control.timeout_s) as client:
        return await client.post(control._url(call_sid), data=data, auth=control._auth)


def _error_code(resp: httpx.Response) -> int | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None
