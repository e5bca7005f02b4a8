"""Telnyx Call Control v2 over REST: dial a leg and send commands to a live call.

``POST /v2/calls`` (dial) and ``POST /v2/calls/{call_control_id}/actions/{command}`` with a
Bearer API key; an ended call answers 422. Only what a warm transfer needs.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

__all__ = ["TelnyxCallControl", "TelnyxError"]


class TelnyxError(Exception):
    """A Call Control request failed (``status`` 0 when Telnyx could not be reached)."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"telnyx {status} {code or ''}: {message}".strip())
        self.status = status
        self.code = code


class TelnyxCallControl:
    """Call Control commands of one Telnyx account (Bearer API key)."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.telnyx.com",
        timeout_s: float = 5.0,
    ) -> None:
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.post(self.base_url + path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise TelnyxError(0, None, f"cannot reach Telnyx: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if resp.status_code >= 300:
            errors = data.get("errors") or [{}]
            first = errors[0] if isinstance(errors, list) and errors else {}
            first = first if isinstance(first, dict) else {}
            raise TelnyxError(
                resp.status_code,
                str(first.get("code")) if first.get("code") is not None else None,
                str(first.get("detail") or first.get("title") or resp.text[:200]),
            )
        inner = data.get("data")
        return inner if isinstance(inner, dict) else {}

    async def dial(
        self,
        to: str,
        from_: str,
        *,
        connection_id: str,
        webhook_url: str,
        timeout_s: int,
        client_state: str = "",
    ) -> str:
        """Dial ``to``; returns the new leg's ``call_control_id``."""
        body: dict[str, Any] = {
            "to": to,
            "from": from_,
            "connection_id": connection_id,
            "webhook_url": webhook_url,
            "webhook_url_method": "POST",
            "timeout_secs": timeout_s,
        }
        if client_state:
            body["client_state"] = base64.b64encode(client_state.encode()).decode()
        data = await self._post("/v2/calls", body)
        ccid = data.get("call_control_id")
        if not isinstance(ccid, str) or not ccid:
            raise TelnyxError(200, None, "dial answered without a call_control_id")
        return ccid

    async def action(self, leg: str, command: str, /, **body: Any) -> None:
        """One command to the leg ``leg`` (a call_control_id): ``hangup``, ``bridge``, ..."""
        await self._post(f"/v2/calls/{leg}/actions/{command}", body)
