"""One warm transfer of a Twilio call to a person: hold, dial, brief, connect or return.

``TwilioTransfer`` is one attempt (one per escalated call). Its states are named in
``TransferState`` and every transition happens in ``handle`` (one event at a time, under a
lock): the caller is moved into a conference named after the call with hold audio
(``endConferenceOnExit`` so it does not outlive them); each number of ``TRANSFER_TO`` is dialled
in turn with a ring timeout; an agent who answers first hears the brief (whisper TwiML) and
joins only by pressing 1; no answer, busy, failure or a decline tries the next number; when
none is left the caller is sent back to the bot (a new ``<Connect><Stream>`` for the same
call). A caller who hangs up while on hold cancels the agent leg. Every step is logged with
the call id and counted (``count(step)``); the outcome and timings are kept in
``EscalationRecord``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from voxpipe.telephony.twilio import TwilioCalls, TwilioError

__all__ = [
    "AgentAnswered",
    "AgentPressed",
    "AgentStatus",
    "CallerLeft",
    "EscalationRecord",
    "LegDeadline",
    "TransferUrls",
    "TransferWording",
    "TwilioTransfer",
    "TransferState",
]

logger = logging.getLogger(__name__)

# Agent-leg statuses after which the leg is over without the agent having taken the call.
_LEG_OVER = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "no_answer"}


class TransferState(enum.Enum):
    """Where one transfer attempt is."""

    NEW = "new"
    RINGING = "ringing"  # an agent leg is being dialled; the caller hears hold audio
    BRIEFING = "briefing"  # the agent answered and hears the brief; not connected yet
    CONNECTED = "connected"  # the agent pressed 1 and is in the caller's conference
    RETURNED = "returned"  # nobody took the call: the caller is back with the bot
    CALLER_LEFT = "caller_left"  # the caller hung up before anyone took the call
    FAILED = "failed"  # the caller could not be moved (the bot keeps the call)

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {
    TransferState.CONNECTED,
    TransferState.RETURNED,
    TransferState.CALLER_LEFT,
    TransferState.FAILED,
}


@dataclass(slots=True)
class EscalationRecord:
    """What happened to one escalation: why, what the agent was told, outcome and timings."""

    reason: str
    summary: str = ""
    trigger: str = "tool"  # tool | policy (caller request, loop, sentiment)
    outcome: str = "pending"  # connected | declined | no_answer | caller_hung_up | message_taken
    connected_to: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)  # one per number dialled
    started_at: float = field(default_factory=time.time)
    on_hold_at: float | None = None
    ended_at: float | None = None
    message: str | None = None
    callback_number: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the caller's wait on hold in seconds."""
        wait = None
        if self.on_hold_at is not None and self.ended_at is not None:
            wait = round(self.ended_at - self.on_hold_at, 3)
        return {
            "reason": self.reason,
            "summary": self.summary,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "connected_to": self.connected_to,
            "attempts": [dict(a) for a in self.attempts],
            "started_at": self.started_at,
            "on_hold_at": self.on_hold_at,
            "ended_at": self.ended_at,
            "hold_s": wait,
            "message": self.message,
            "callback_number": self.callback_number,
        }


@dataclass(frozen=True, slots=True)
class TransferWording:
    """What the agent hears, in the caller's language (the bot's business wording)."""

    brief: str  # reason and summary, said before the agent decides
    accept_prompt: str = "Press 1 to take the call."
    caller_gone: str = "The caller has hung up."
    language: str = "en-US"  # the <Say language>
    hold_line: str = ""  # said to the caller as they are moved, before the hold audio


@dataclass(frozen=True, slots=True)
class TransferUrls:
    """Absolute URLs Twilio calls back for one transfer (built from PUBLIC_URL)."""

    whisper: str
    answer: str
    agent_status: str
    conference_status: str
    hold: str
    resume: str


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start:
    """Move the caller to hold and dial the first number."""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A status callback of an agent leg (``CallStatus``)."""

    call_sid: str
    status: str


@dataclass(frozen=True, slots=True)
class AgentAnswered:
    """The agent leg answered and Twilio asks for its TwiML (the whisper)."""

    call_sid: str


@dataclass(frozen=True, slots=True)
class AgentPressed:
    """The agent's ``<Gather>`` result (``Digits``, empty for silence)."""

    call_sid: str
    digits: str


@dataclass(frozen=True, slots=True)
class CallerLeft:
    """The caller's call ended while on hold (conference participant-leave / conference-end)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class LegDeadline:
    """Our own guard: an agent leg Twilio never reported on is given up."""

    call_sid: str


Event = Start | AgentStatus | AgentAnswered | AgentPressed | CallerLeft | LegDeadline
OnFinish = Callable[["TwilioTransfer"], Awaitable[None]]


def conference_name(call_sid: str) -> str:
    """The conference a call's transfer uses: named after the call."""
    return f"voxpipe-{call_sid}"


class TwilioTransfer:
    """One warm-transfer attempt of one Twilio call (see the module docstring)."""

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
        if not targets:
            raise ValueError("a transfer needs at least one number (TRANSFER_TO)")
        self.call_sid = call_sid
        self.targets = list(targets)
        self.calls = calls
        self.urls = urls
        self.wording = wording
        self.record = record
        self.from_number = from_number
        self.ring_timeout_s = ring_timeout_s
        self.state = TransferState.NEW
        # What the agent desk shows (caller, locale, the conversation so far), set by the bot.
        self.details: dict[str, Any] = {}
        self.agent_sid: str | None = None  # the leg being dialled or briefed
        self.finished = asyncio.Event()
        self._next_index = 0
        self._leg_started = 0.0
        self._declined = False
        self._on_finish = on_finish
        self._count = count or (lambda step: None)
        self._lock = asyncio.Lock()
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_margin_s = deadline_margin_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self.log = logging.LoggerAdapter(logger, {"call_id": call_sid})

    @property
    def conference(self) -> str:
        return conference_name(self.call_sid)

    @property
    def current_target(self) -> str | None:
        return self.targets[self._next_index - 1] if self._next_index else None

    # --- the one transition method ---------------------------------------------------------
    async def handle(self, event: Event) -> str | None:
        """Apply one event; returns TwiML for the events Twilio waits on (whisper, digits)."""
        async with self._lock:
            state = self.state
            self.log.info("transfer %s: %s", state.value, event)
            if isinstance(event, Start) and state is TransferState.NEW:
                await self._start()
            elif isinstance(event, AgentAnswered):
                if event.call_sid != self.agent_sid or state is not TransferState.RINGING:
                    # An agent reaching us for a caller who left (or a stale leg): no brief.
                    self._step("stale_answer")
                    return _twiml(_say(self.wording.caller_gone, self.wording.language))
                self._set(TransferState.BRIEFING)
                self._step("agent_answered")
                return self._whisper()
            elif isinstance(event, AgentPressed):
                if event.call_sid != self.agent_sid or state is not TransferState.BRIEFING:
                    self._step("stale_answer")
                    return _twiml(_say(self.wording.caller_gone, self.wording.language))
                if event.digits.strip() == "1":
                    self._end_leg("connected")
                    self.record.outcome = "connected"
                    self.record.connected_to = self.current_target
                    await self._finish(TransferState.CONNECTED)
                    return self._join()
                self._declined = True
                self._end_leg("declined")
                await self._next()
                return "<Response><Hangup/></Response>"
            elif isinstance(event, AgentStatus | LegDeadline):
                if event.call_sid != self.agent_sid or state.final:
                    return None
                status = event.status if isinstance(event, AgentStatus) else "no-answer"
                if isinstance(event, LegDeadline):
                    self._step("deadline")
                    await self._hang_up_leg(ringing=state is TransferState.RINGING)
                if status in _LEG_OVER:
                    self._end_leg(_LEG_OVER[status])
                    await self._next()
                elif status == "completed" and state is TransferState.BRIEFING:
                    # Hung up or said nothing during the brief (the Gather fell through).
                    self._declined = True
                    self._end_leg("declined")
                    await self._next()
            elif isinstance(event, CallerLeft):
                if state in (TransferState.NEW, TransferState.RINGING, TransferState.BRIEFING):
                    if self.agent_sid is not None:
                        await self._hang_up_leg(ringing=state is TransferState.RINGING)
                        self._end_leg("caller_hung_up")
                    self.record.outcome = "caller_hung_up"
                    await self._finish(TransferState.CALLER_LEFT)
            return None

    # --- steps ---------------------------------------------------------------------------
    async def _start(self) -> None:
        try:
            await self.calls.move(self.call_sid, twiml=self._hold_twiml())
        except TwilioError as exc:
            self.log.error("transfer: the caller could not be moved to hold: %s", exc)
            self.record.outcome = "failed"
            await self._finish(TransferState.FAILED)
            return
        self.record.on_hold_at = time.time()
        self._step("caller_on_hold")
        await self._next()

    async def _next(self) -> None:
        """Dial the next number, or send the caller back to the bot when none is left."""
        self.agent_sid = None
        self._cancel_deadline()
        while self._next_index < len(self.targets):
            to = self.targets[self._next_index]
            self._next_index += 1
            try:
                sid = await self.calls.dial(
                    to,
                    self.from_number,
                    url=self.urls.whisper,
                    status_callback=self.urls.agent_status,
                    timeout_s=self.ring_timeout_s,
                )
            except TwilioError as exc:
                self.log.warning("transfer: dialling %s failed: %s", to, exc)
                self.record.attempts.append({"to": to, "result": "failed", "error": str(exc)})
                self._step("dial_failed")
                continue
            self.agent_sid = sid
            self._leg_started = time.time()
            self._set(TransferState.RINGING)
            self._step("agent_dialled")
            # Twilio ends the ringing at Timeout; this guards against a callback that never comes.
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(
                self.ring_timeout_s + self._deadline_margin_s, self._deadline_fired, sid
            )
            return
        self.record.outcome = "declined" if self._declined else "no_answer"
        try:
            await self.calls.move(self.call_sid, url=self.urls.resume)
        except TwilioError as exc:
            # The caller's call is gone (hung up as the last agent declined).
            self.log.info("transfer: the caller could not be returned to the bot: %s", exc)
            self.record.outcome = "caller_hung_up"
            await self._finish(TransferState.CALLER_LEFT)
            return
        self._step("caller_returned")
        await self._finish(TransferState.RETURNED)

    async def _hang_up_leg(self, *, ringing: bool) -> None:
        if self.agent_sid is None:
            return
        try:
            await self.calls.end(self.agent_sid, ringing=ringing)
            self._step("agent_leg_cancelled")
        except TwilioError as exc:
            self.log.warning("transfer: ending agent leg %s failed: %s", self.agent_sid, exc)

    def _end_leg(self, result: str) -> None:
        self.record.attempts.append(
            {
                "to": self.current_target,
                "call_sid": self.agent_sid,
                "result": result,
                "seconds": round(time.time() - self._leg_started, 3),
            }
        )
        self._step(f"agent_{result}")
        self._cancel_deadline()

    async def _finish(self, state: TransferState) -> None:
        self._set(state)
        self._cancel_deadline()
        self.record.ended_at = time.time()
        self._step(f"finished_{state.value}")
        self.finished.set()
        if self._on_finish is not None:
            try:
                await self._on_finish(self)
            except Exception:  # storing the outcome must not break Twilio's callback
                self.log.exception("transfer: storing the outcome failed")

    # --- helpers ----------------------------------------------------------------------------
    def _set(self, state: TransferState) -> None:
        if state is not self.state:
            self.log.info("transfer %s -> %s", self.state.value, state.value)
            self.state = state

    def _step(self, step: str) -> None:
        self._count(step)

    def _deadline_fired(self, call_sid: str) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(LegDeadline(call_sid)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

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

    def _whisper(self) -> str:
        lang = self.wording.language
        return _twiml(
            f'<Gather numDigits="1" timeout="8" action={quoteattr(self.urls.answer)}'
            ' method="POST">'
            + _say(self.wording.brief, lang)
            + _say(self.wording.accept_prompt, lang)
            + "</Gather><Hangup/>"
        )

    def _join(self) -> str:
        return _twiml(
            '<Dial><Conference startConferenceOnEnter="true" endConferenceOnExit="true"'
            f' beep="false">{escape(self.conference)}</Conference></Dial>'
        )


def _say(text: str, language: str) -> str:
    return f"<Say language={quoteattr(language)}>{escape(text)}</Say>"


def _twiml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'
