"""One warm transfer of a Twilio call to a person: hold, dial, brief, connect or return.

``TwilioTransfer`` runs the carrier-neutral ``WarmTransfer`` on Twilio: the caller is moved (REST
update of the live call) into a conference named after the call with hold audio
(``endConferenceOnExit`` so it does not outlive them); each agent leg is a ``Calls.json`` dial
whose TwiML is our whisper (the brief, then ``<Gather numDigits="1">``); "1" answers
``<Dial><Conference>``; no number left moves the caller back to the voice webhook (a new
``<Connect><Stream>`` for the same call). Twilio waits on TwiML for the whisper and the digits:
``handle`` returns it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from voxpipe.telephony.twilio import TwilioCalls, TwilioError
from voxpipe.telephony.warm_transfer import (
    CallerLeft,
    EscalationRecord,
    LegAnswered,
    LegDeadline,
    LegDigits,
    LegEnded,
    Start,
    TransferEvent,
    TransferState,
    TransferWording,
    WarmTransfer,
)

__all__ = [
    "AgentAnswered",
    "AgentPressed",
    "AgentStatus",
    "CallerLeft",
    "EscalationRecord",
    "LegDeadline",
    "Start",
    "TransferState",
    "TransferUrls",
    "TransferWording",
    "TwilioTransfer",
]

# Agent-leg statuses after which the leg is over without the agent having taken the call.
_LEG_OVER = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "no_answer"}

# Twilio's callbacks as the neutral events: the whisper fetch is the answer, the Gather's
# action the digits.
AgentAnswered = LegAnswered
AgentPressed = LegDigits


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A status callback of an agent leg (``CallStatus``)."""

    call_sid: str
    status: str


Event = TransferEvent | AgentStatus
OnFinish = Callable[["TwilioTransfer"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TransferUrls:
    """Absolute URLs Twilio calls back for one transfer (built from PUBLIC_URL)."""

    whisper: str
    answer: str
    agent_status: str
    conference_status: str
    hold: str
    resume: str


def conference_name(call_sid: str) -> str:
    """The conference a call's transfer uses: named after the call."""
    return f"voxpipe-{call_sid}"


class TwilioTransfer(WarmTransfer[str]):
    """One warm-transfer attempt of one Twilio call (see the module docstring)."""

    carrier = "twilio"
    leg_key = "call_sid"
    errors = (TwilioError,)

    def __init__(
        self,
        *,
        call_sid: str,
        targets: list[str],
        calls: TwilioCalls,
        urls: TransferUrls,
        wording: TransferWording,
        record: EscalationRecord,
        from_number: str,
        ring_timeout_s: int = 20,
        on_finish: OnFinish | None = None,
        count: Callable[[str], None] | None = None,
        deadline_margin_s: float = 30.0,
    ) -> None:
        super().__init__(
            call_id=call_sid,
            targets=targets,
            wording=wording,
            record=record,
            ring_timeout_s=ring_timeout_s,
            on_finish=on_finish,
            count=count,
            deadline_margin_s=deadline_margin_s,
        )
        self.calls = calls
        self.urls = urls
        self.from_number = from_number

    @property
    def agent_sid(self) -> str | None:
        return self.agent_leg

    @property
    def conference(self) -> str:
        return conference_name(self.call_id)

    async def handle(self, event: Event) -> str | None:
        """Apply one event; returns TwiML for the callbacks Twilio waits on (whisper, digits)."""
        if isinstance(event, AgentStatus):
            if event.status in _LEG_OVER:
                return await super().handle(LegEnded(event.call_sid, _LEG_OVER[event.status]))
            if event.status == "completed":
                return await super().handle(LegEnded(event.call_sid, "hung_up"))
            return None  # queued, initiated, ringing, in-progress: nothing to do
        return await super().handle(event)

    # --- the steps on Twilio's API ---------------------------------------------------------
    async def _hold(self) -> None:
        await self.calls.move(self.call_id, twiml=self._hold_twiml())

    async def _dial(self, to: str) -> str:
        return await self.calls.dial(
            to,
            self.from_number,
            url=self.urls.whisper,
            status_callback=self.urls.agent_status,
            timeout_s=self.ring_timeout_s,
        )

    async def _brief(self, leg: str) -> str | None:
        lang = self.wording.language
        return _twiml(
            f'<Gather numDigits="1" timeout="8" action={quoteattr(self.urls.answer)}'
            ' method="POST">'
            + _say(self.wording.brief, lang)
            + _say(self.wording.accept_prompt, lang)
            + "</Gather><Hangup/>"
        )

    async def _connect(self, leg: str) -> str | None:
        return _twiml(
            '<Dial><Conference startConferenceOnEnter="true" endConferenceOnExit="true"'
            f' beep="false">{escape(self.conference)}</Conference></Dial>'
        )

    async def _release(self, leg: str) -> str | None:
        return "<Response><Hangup/></Response>"

    async def _hang_up(self, leg: str, *, ringing: bool) -> None:
        await self.calls.end(leg, ringing=ringing)

    async def _return_caller(self) -> None:
        await self.calls.move(self.call_id, url=self.urls.resume)

    def _stale(self, leg: str) -> str | None:
        return _twiml(_say(self.wording.caller_gone, self.wording.language))

    def _hold_twiml(self) -> str:
        # The caller waits (hold audio) until an agent starts the conference; their leaving ends it.
        hold_line = (
            _say(self.wording.hold_line, self.wording.language) if self.wording.hold_line else ""
        )
        return (
            f"<Response>{hold_line}<Dial><Conference"
            f' waitUrl={quoteattr(self.urls.hold)} waitMethod="GET"'
            ' startConferenceOnEnter="false" endConferenceOnExit="true" beep="false"'
            f" statusCallback={quoteattr(self.urls.conference_status)}"
            ' statusCallbackMethod="POST" statusCallbackEvent="start end join leave">'
            f"{escape(self.conference)}</Conference></Dial></Response>"
        )


def _say(text: str, language: str) -> str:
    return f"<Say language={quoteattr(language)}>{escape(text)}</Say>"


def _twiml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'
