"""A warm transfer of a Telnyx call over Call Control v2.

``TelnyxTransfer`` runs the carrier-neutral ``WarmTransfer`` on Telnyx: the caller's media
stream stops and they hear hold audio (``streaming_stop``, ``playback_start`` looped); each
number of ``TRANSFER_TO`` is dialled in turn (``POST /v2/calls`` with ``timeout_secs`` and our
``webhook_url``); when an agent answers (``call.answered``) they hear the brief and "press 1"
(``gather_using_speak``, one digit); ``call.gather.ended`` with ``1`` bridges the agent to the
caller (``playback_stop``, ``bridge``), anything else (or silence, or the agent hanging up) is a
decline and the next number is dialled; a leg that ends before answering (``call.hangup``:
``timeout``, ``user_busy``, ``call_rejected``...) moves on too. With no number left the hold
audio stops and the caller's stream starts again (``streaming_start`` to a fresh stream URL of
the same call, ``client_state`` carrying the resume marker): the bot carries on the same
conversation and takes a message. The caller's own ``call.hangup`` ends the agent leg.

Events come from Telnyx's signed webhooks (``event_from_webhook``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxpipe.telephony.telnyx_calls import TelnyxCallControl, TelnyxError
from voxpipe.telephony.transfers import RESUME_PARAM
from voxpipe.telephony.warm_transfer import (
    CallerLeft,
    LegAnswered,
    LegDigits,
    LegEnded,
    TransferEvent,
    WarmTransfer,
)

__all__ = [
    "TELNYX_LEG_STATE",
    "TelnyxTransfer",
    "TelnyxTransferPlan",
    "caller_of_leg",
    "event_from_webhook",
]

# call.hangup causes of a leg that never answered, as the record's per-number result.
_UNANSWERED = {"user_busy": "busy", "call_rejected": "declined", "timeout": "no_answer"}
# The client_state of an agent leg: names the caller's call it was dialled for.
TELNYX_LEG_STATE = "voxpipe-transfer:"


def _decode(value: Any) -> str:
    try:
        return base64.b64decode(str(value or ""), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def caller_of_leg(payload: dict[str, Any]) -> str | None:
    """The caller's call_control_id an agent leg's webhook is about (from its client_state)."""
    state = _decode(payload.get("client_state"))
    return state[len(TELNYX_LEG_STATE) :] if state.startswith(TELNYX_LEG_STATE) else None


def event_from_webhook(body: Any, caller_id: str) -> TransferEvent | None:
    """The transfer event a Call Control webhook body means (None for the others)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None
    kind = data.get("event_type")
    payload = data.get("payload")
    if not isinstance(payload, dict) or not isinstance(kind, str):
        return None
    ccid = str(payload.get("call_control_id") or "")
    if ccid == caller_id:
        if kind == "call.hangup":
            return CallerLeft(str(payload.get("hangup_cause") or ""))
        return None
    if kind == "call.answered":
        return LegAnswered(ccid)
    if kind == "call.gather.ended":
        if payload.get("status") == "call_hangup":
            return None  # the leg's call.hangup follows
        return LegDigits(ccid, str(payload.get("digits") or ""))
    if kind == "call.hangup":
        cause = str(payload.get("hangup_cause") or "")
        return LegEnded(ccid, _UNANSWERED.get(cause, "hung_up"))
    return None


@dataclass(frozen=True, slots=True)
class TelnyxTransferPlan:
    """Where a Telnyx transfer dials from and what it points Telnyx at."""

    connection_id: str
    from_number: str
    webhook_url: str  # our signed Call Control webhook for the agent legs
    hold_audio_url: str  # what the caller hears while waiting
    # A fresh media-stream URL of the caller's call (a new stream token each time).
    resume_stream_url: Callable[[], str]
    ring_timeout_s: int = 20
    gather_timeout_ms: int = 8000
    # Sent with streaming_start as base64 JSON: the stream's ``start`` carries it back and the
    # Telnyx transport makes it the call's custom parameters (the bot's resume marker).
    resume_parameters: tuple[tuple[str, str], ...] = ((RESUME_PARAM, "transfer"),)


class TelnyxTransfer(WarmTransfer[None]):
    """One warm-transfer attempt of one Telnyx call (see the module docstring)."""

    carrier = "telnyx"
    leg_key = "call_control_id"
    errors = (TelnyxError,)

    def __init__(
        self,
        *,
        call_control_id: str,
        control: TelnyxCallControl,
        plan: TelnyxTransferPlan,
        **kwargs: Any,
    ) -> None:
        """``kwargs``: those of ``WarmTransfer`` (targets, wording, record, on_finish, ...)."""
        super().__init__(call_id=call_control_id, ring_timeout_s=plan.ring_timeout_s, **kwargs)
        self.control = control
        self.plan = plan

    @property
    def caller_id(self) -> str:
        return self.call_id

    async def _hold(self) -> None:
        await self.control.action(self.call_id, "streaming_stop")
        await self.control.action(
            self.call_id, "playback_start", audio_url=self.plan.hold_audio_url, loop="infinity"
        )

    async def _dial(self, to: str) -> str:
        return await self.control.dial(
            to,
            self.plan.from_number,
            connection_id=self.plan.connection_id,
            webhook_url=self.plan.webhook_url,
            timeout_s=self.ring_timeout_s,
            client_state=TELNYX_LEG_STATE + self.call_id,
        )

    async def _brief(self, leg: str) -> None:
        await self.control.action(
            leg,
            "gather_using_speak",
            payload=f"{self.wording.brief} {self.wording.accept_prompt}",
            voice="female",
            language=self.wording.language,
            minimum_digits=1,
            maximum_digits=1,
            valid_digits="0123456789",
            timeout_millis=self.plan.gather_timeout_ms,
        )

    async def _connect(self, leg: str) -> None:
        await self.control.action(self.call_id, "playback_stop")
        await self.control.action(leg, "bridge", call_control_id=self.call_id)

    async def _release(self, leg: str) -> None:
        await self._hang_up_leg(ringing=False)

    async def _hang_up(self, leg: str, *, ringing: bool) -> None:
        await self.control.action(leg, "hangup")

    async def _return_caller(self) -> None:
        await self.control.action(self.call_id, "playback_stop")
        await self.control.action(
            self.call_id,
            "streaming_start",
            stream_url=self.plan.resume_stream_url(),
            stream_track="inbound_track",
            stream_bidirectional_mode="rtp",
            stream_bidirectional_codec="PCMU",
            client_state=base64.b64encode(
                json.dumps(dict(self.plan.resume_parameters)).encode()
            ).decode(),
        )
