"""The Vonage Voice API over REST, for warm transfers: dial a leg, move or end a live call.

``POST /v1/calls`` (an outbound leg running an inline NCCO; 201 with its ``uuid``) and
``PUT /v1/calls/{uuid}`` (``{"action": "transfer", "destination": {"type": "ncco", "ncco":
[...]}}`` or ``{"action": "hangup"}``; 204), ``GET /v1/calls/{uuid}`` (its ``status``). Every request carries ``Authorization: Bearer``
with a JWT of the Vonage application, signed RS256 with its private key (claims
``application_id``, ``iat``, ``exp``, ``jti``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

__all__ = ["VonageError", "VonageVoice", "application_jwt", "endpoint", "load_private_key"]

JWT_TTL_S = 300


class VonageError(Exception):
    """A Voice API request Vonage refused (``status`` 0 when Vonage could not be reached)."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(f"vonage {status} {title}: {detail}".strip(": "))
        self.status = status
        self.title = title


def load_private_key(value: str) -> str:
    """The application's private key as PEM text: ``value`` itself, or the file it names."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError("VONAGE_PRIVATE_KEY is neither PEM text nor the path of a PEM file")
    return path.read_text()


def application_jwt(application_id: str, private_key: str, *, now: float | None = None) -> str:
    """A short-lived JWT authorising REST requests of the application (RS256)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "application_id": application_id,
        "iat": issued,
        "exp": issued + JWT_TTL_S,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"typ": "JWT"})


def endpoint(target: str) -> dict[str, str]:
    """A ``TRANSFER_TO`` entry as a Vonage endpoint: a phone number (digits only) or SIP URI."""
    if target.lower().startswith("sip:"):
        return {"type": "sip", "uri": target}
    return {"type": "phone", "number": target.lstrip("+")}


class VonageVoice:
    """The calls of one Vonage application (JWT auth)."""

    def __init__(
        self,
        application_id: str,
        private_key: str,
        *,
        base_url: str = "https://api.nexmo.com",
        timeout_s: float = 5.0,
    ) -> None:
        self.application_id = application_id
        self._private_key = private_key
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        token = application_jwt(self.application_id, self._private_key)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.request(
                    method, self.base_url + path, json=body, headers=headers
                )
        except httpx.HTTPError as exc:
            raise VonageError(0, "unreachable", f"cannot reach Vonage: {exc}") from exc
        try:
            data = resp.json() if resp.content else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if resp.status_code >= 300:
            raise VonageError(
                resp.status_code,
                str(data.get("title") or resp.reason_phrase),
                str(data.get("detail") or data.get("error_title") or resp.text[:200]),
            )
        return data

    async def create_call(
        self,
        to: str,
        from_number: str,
        *,
        ncco: list[dict[str, Any]],
        event_url: str,
        ringing_timer: int,
    ) -> str:
        """Dial ``to`` running ``ncco`` once answered; returns the new leg's ``uuid``."""
        body = {
            "to": [endpoint(to)],
            "from": {"type": "phone", "number": from_number.lstrip("+")},
            "ncco": ncco,
            "event_url": [event_url],
            "event_method": "POST",
            "ringing_timer": max(1, min(120, ringing_timer)),
        }
        data = await self._request("POST", "/v1/calls", body)
        leg = data.get("uuid")
        if not isinstance(leg, str) or not leg:
            raise VonageError(201, "no uuid", "create call answered without a uuid")
        return leg

    async def transfer(self, call_uuid: str, ncco: list[dict[str, Any]]) -> None:
        """Move a live call to ``ncco`` (it leaves whatever it was doing)."""
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        await self._request("PUT", f"/v1/calls/{call_uuid}", body)

    async def status(self, call_uuid: str) -> str:
        """A call's current ``status`` (``answered`` while it is in progress)."""
        data = await self._request("GET", f"/v1/calls/{call_uuid}", None)
        return str(data.get("status") or "")

    async def hangup(self, call_uuid: str) -> None:
        """End a live call (ringing or answered)."""
        await self._request("PUT", f"/v1/calls/{call_uuid}", {"action": "hangup"})
