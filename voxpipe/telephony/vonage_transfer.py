"""A warm transfer of a Vonage call over the Voice API and NCCOs.

``VonageTransfer`` runs the carrier-neutral ``WarmTransfer`` on Vonage: the caller's call is
transferred (``PUT /v1/calls/{uuid}``) to an NCCO that says the hold line and puts them in a
conversation named after the call (``musicOnHoldUrl``, ``startOnEnter: false``,
``endOnExit: true``: it does not outlive them); the bot's websocket is left. Each number of
``TRANSFER_TO`` is dialled in turn (``POST /v1/calls`` with ``ringing_timer`` and an NCCO that
talks the brief and "press 1", then an ``input`` of one DTMF digit whose ``eventUrl`` is ours);
the input event's answer is an NCCO joining the conversation on "1" (``startOnEnter: true``);
anything else, silence, or the agent hanging up is a decline. ``status`` events of an agent leg
(busy, timeout, unanswered, rejected, failed) move on to the next number. With no number left
the caller is transferred to an NCCO ``connect``-ing a fresh websocket of the same call, whose
headers carry the resume marker. The caller's own ``completed`` ends the agent leg.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxpipe.telephony.transfers import RESUME_PARAM
from voxpipe.telephony.vonage_calls import VonageError, VonageVoice
from voxpipe.telephony.warm_transfer import (
    CallerLeft,
    LegAnswered,
    LegDigits,
    LegEnded,
    TransferEvent,
    WarmTransfer,
)

__all__ = [
    "VonageTransfer",
    "VonageTransferPlan",
    "digits_from_input",
    "event_from_webhook",
]

Ncco = list[dict[str, Any]]

# status events of an agent leg that end it, as the record's per-number result.
_LEG_OVER = {
    "busy": "busy",
    "timeout": "no_answer",
    "unanswered": "no_answer",
    "cancelled": "no_answer",
    "rejected": "declined",
    "failed": "failed",
    "completed": "hung_up",
}
# status events of the caller's call that mean it ended.
_CALLER_GONE = {"completed", "failed", "rejected", "cancelled", "busy", "timeout", "unanswered"}


def event_from_webhook(body: Any, caller_uuid: str) -> TransferEvent | None:
    """The transfer event a Voice API event webhook body means (None for the others)."""
    if not isinstance(body, dict):
        return None
    leg = str(body.get("uuid") or "")
    status = str(body.get("status") or "")
    if leg == caller_uuid:
        return CallerLeft(status) if status in _CALLER_GONE else None
    if status == "answered":
        return LegAnswered(leg)
    if status in _LEG_OVER:
        return LegEnded(leg, _LEG_OVER[status])
    return None


def digits_from_input(body: Any) -> LegDigits | None:
    """An ``input`` event (``dtmf.digits``; empty when it timed out) as the agent's answer."""
    if not isinstance(body, dict) or not body.get("uuid"):
        return None
    dtmf = body.get("dtmf")
    digits = dtmf.get("digits") if isinstance(dtmf, dict) else ""
    return LegDigits(str(body["uuid"]), str(digits or ""))


@dataclass(frozen=True, slots=True)
class VonageTransferPlan:
    """Where a Vonage transfer dials from and what it points Vonage at."""

    from_number: str
    event_url: str  # our signed event webhook for the agent legs
    input_url: str  # where the agent's digit is sent (answered with an NCCO)
    hold_audio_url: str  # what the caller hears while waiting
    # A fresh media-stream URL of the caller's call (a new stream token each time).
    resume_stream_url: Callable[[], str]
    ring_timeout_s: int = 20
    gather_timeout_s: int = 8
    content_type: str = "audio/l16;rate=16000"


def conversation_name(call_uuid: str) -> str:
    """The conversation a call's transfer uses: named after the call."""
    return f"voxpipe-{call_uuid}"


class VonageTransfer(WarmTransfer[Ncco]):
    """One warm-transfer attempt of one Vonage call (see the module docstring)."""

    carrier = "vonage"
    leg_key = "uuid"
    errors = (VonageError,)

    def __init__(
        self, *, call_uuid: str, voice: VonageVoice, plan: VonageTransferPlan, **kwargs: Any
    ) -> None:
        """``kwargs``: those of ``WarmTransfer`` (targets, wording, record, on_finish, ...)."""
        super().__init__(call_id=call_uuid, ring_timeout_s=plan.ring_timeout_s, **kwargs)
        self.voice = voice
        self.plan = plan

    @property
    def conversation(self) -> str:
        return conversation_name(self.call_id)

    def _talk(self, text: str, *, barge_in: bool = False) -> dict[str, Any]:
        return {
            "action": "talk",
            "text": text,
            "language": self.wording.language,
            "bargeIn": barge_in,
        }

    async def _hold(self) -> None:
        ncco: Ncco = [self._talk(self.wording.hold_line)] if self.wording.hold_line else []
        ncco.append(
            {
                "action": "conversation",
                "name": self.conversation,
                "musicOnHoldUrl": [self.plan.hold_audio_url],
                "startOnEnter": False,
                "endOnExit": True,
            }
        )
        await self.voice.transfer(self.call_id, ncco)

    async def _dial(self, to: str) -> str:
        brief = f"{self.wording.brief} {self.wording.accept_prompt}"
        ncco: Ncco = [
            self._talk(brief, barge_in=True),  # a key pressed during the brief counts
            {
                "action": "input",
                "type": ["dtmf"],
                "dtmf": {"maxDigits": 1, "timeOut": self.plan.gather_timeout_s},
                "eventUrl": [self.plan.input_url],
                "eventMethod": "POST",
            },
        ]
        return await self.voice.create_call(
            to,
            self.plan.from_number,
            ncco=ncco,
            event_url=self.plan.event_url,
            ringing_timer=self.ring_timeout_s,
        )

    async def _brief(self, leg: str) -> Ncco | None:
        return None  # the leg's own NCCO says the brief and waits for the digit

    async def _connect(self, leg: str) -> Ncco | None:
        # The caller's "completed" may not reach us (the application's event URL is the
        # operator's): an agent must not be joined to a conversation the caller has left.
        status = await self.voice.status(self.call_id)
        if status != "answered":
            raise VonageError(409, "caller gone", f"the caller's call is {status or 'gone'}")
        return [
            {
                "action": "conversation",
                "name": self.conversation,
                "startOnEnter": True,
                "endOnExit": True,
            }
        ]

    async def _release(self, leg: str) -> Ncco | None:
        await self._hang_up_leg(ringing=False)
        return []

    async def _hang_up(self, leg: str, *, ringing: bool) -> None:
        await self.voice.hangup(leg)

    async def _return_caller(self) -> None:
        ncco: Ncco = [
            {
                "action": "connect",
                "endpoint": [
                    {
                        "type": "websocket",
                        "uri": self.plan.resume_stream_url(),
                        "content-type": self.plan.content_type,
                        "headers": {"uuid": self.call_id, RESUME_PARAM: "transfer"},
                    }
                ],
            }
        ]
        await self.voice.transfer(self.call_id, ncco)

    def _stale(self, leg: str) -> Ncco | None:
        return [self._talk(self.wording.caller_gone)]
