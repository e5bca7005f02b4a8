"""The carrier-neutral warm transfer: hold, dial, brief, connect on "1", next number, return.

``WarmTransfer`` is one attempt (one per escalated call) as a state machine: every transition
happens in ``handle`` (one event at a time, under a lock). The caller is put on hold; each
number of ``TRANSFER_TO`` is dialled in turn with a ring timeout; an agent who answers first
hears the brief and joins only by pressing 1; no answer, busy, failure or a decline (another
digit, silence, hanging up during the brief) tries the next number; when none is left the
caller is sent back to the bot (a new media stream of the same call). A caller who hangs up
while on hold ends the agent leg (nobody is briefed for a caller who left). Every step is
counted (``count(step)``) and logged with the call id; the outcome and timings are kept in
``EscalationRecord``.

A carrier subclass says how each step is done on its API (``_hold``, ``_dial``, ``_brief``,
``_connect``, ``_release``, ``_hang_up``, ``_return_caller``, ``_stale``) and turns the
carrier's callbacks into the events below. Some carriers wait on our answer to a callback
(Twilio's TwiML, Vonage's NCCO): ``handle`` returns it (``R``); others (Telnyx) get ``None``.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "CallerLeft",
    "EscalationRecord",
    "LegAnswered",
    "LegDeadline",
    "LegDigits",
    "LegEnded",
    "Start",
    "TransferEvent",
    "TransferState",
    "TransferWording",
    "WarmTransfer",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")

# Results of an agent leg in the record (``attempts[].result``) besides connected / declined /
# caller_hung_up: why a leg ended before anyone took the call.
LEG_RESULTS = ("busy", "no_answer", "failed", "declined")


class TransferState(enum.Enum):
    """Where one transfer attempt is."""

    NEW = "new"
    RINGING = "ringing"  # an agent leg is being dialled; the caller hears hold audio
    BRIEFING = "briefing"  # the agent answered and hears the brief; not connected yet
    CONNECTED = "connected"  # the agent pressed 1 and is with the caller
    RETURNED = "returned"  # nobody took the call: the caller is back with the bot
    CALLER_LEFT = "caller_left"  # the caller hung up before anyone took the call
    FAILED = "failed"  # the caller could not be put on hold (the bot keeps the call)

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
    carrier: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the caller's wait on hold in seconds."""
        wait = None
        if self.on_hold_at is not None and self.ended_at is not None:
            wait = round(self.ended_at - self.on_hold_at, 3)
        out = {
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
        if self.carrier is not None:
            out["carrier"] = self.carrier
        return out


@dataclass(frozen=True, slots=True)
class TransferWording:
    """What the agent hears, in the caller's language (the bot's business wording)."""

    brief: str  # reason and summary, said before the agent decides
    accept_prompt: str = "Press 1 to take the call."
    caller_gone: str = "The caller has hung up."
    language: str = "en-US"  # the text-to-speech language of the carrier
    hold_line: str = ""  # said to the caller as they are moved, before the hold audio


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start:
    """Put the caller on hold and dial the first number."""


@dataclass(frozen=True, slots=True)
class LegAnswered:
    """An agent leg answered (the carrier may wait on the brief as our answer)."""

    leg: str


@dataclass(frozen=True, slots=True)
class LegDigits:
    """What the agent pressed after the brief ("" for silence)."""

    leg: str
    digits: str


@dataclass(frozen=True, slots=True)
class LegEnded:
    """An agent leg ended: ``busy``, ``no_answer``, ``failed``, ``declined`` (rejected while
    ringing) or ``hung_up`` (any other end: during the brief it is a decline)."""

    leg: str
    result: str


@dataclass(frozen=True, slots=True)
class CallerLeft:
    """The caller's call ended while on hold."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class LegDeadline:
    """Our own guard: an agent leg the carrier never reported on is given up."""

    leg: str


TransferEvent = Start | LegAnswered | LegDigits | LegEnded | CallerLeft | LegDeadline


class WarmTransfer(abc.ABC, Generic[R]):
    """One warm-transfer attempt of one call (see the module docstring)."""

    carrier = ""
    leg_key = "leg"  # the attempt's key for the leg id (the carrier's own name for it)
    errors: tuple[type[Exception], ...] = ()  # what the carrier's REST client raises

    def __init__(
        self,
        *,
        call_id: str,
        targets: list[str],
        wording: TransferWording,
        record: EscalationRecord,
        ring_timeout_s: int = 20,
        on_finish: Callable[[Any], Awaitable[None]] | None = None,
        count: Callable[[str], None] | None = None,
        deadline_margin_s: float = 30.0,
    ) -> None:
        if not targets:
            raise ValueError("a transfer needs at least one number (TRANSFER_TO)")
        self.call_id = call_id
        self.targets = list(targets)
        self.wording = wording
        self.record = record
        self.record.carrier = self.carrier or None
        self.ring_timeout_s = ring_timeout_s
        self.state = TransferState.NEW
        # What the agent desk shows (caller, locale, the conversation so far), set by the bot.
        self.details: dict[str, Any] = {}
        self.agent_leg: str | None = None  # the leg being dialled or briefed
        self.legs: list[str] = []  # every leg dialled, for callbacks about earlier ones
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
        self.log = logging.LoggerAdapter(logger, {"call_id": call_id})

    @property
    def call_sid(self) -> str:
        """The caller's call id (Twilio CallSid, Telnyx call_control_id, Vonage uuid)."""
        return self.call_id

    @property
    def current_target(self) -> str | None:
        return self.targets[self._next_index - 1] if self._next_index else None

    # --- what a carrier implements ---------------------------------------------------------
    @abc.abstractmethod
    async def _hold(self) -> None:
        """Take the caller off the bot's stream onto hold audio (raises ``errors``)."""

    @abc.abstractmethod
    async def _dial(self, to: str) -> str:
        """Dial an agent with the ring timeout; the new leg's id (raises ``errors``)."""

    @abc.abstractmethod
    async def _brief(self, leg: str) -> R | None:
        """The agent answered: let them hear the brief and "press 1" (raises ``errors``)."""

    @abc.abstractmethod
    async def _connect(self, leg: str) -> R | None:
        """The agent pressed 1: join them to the caller (raises ``errors`` if the caller left)."""

    @abc.abstractmethod
    async def _release(self, leg: str) -> R | None:
        """The agent declined: end their leg."""

    @abc.abstractmethod
    async def _hang_up(self, leg: str, *, ringing: bool) -> None:
        """End a leg ringing or in the brief (raises ``errors``)."""

    @abc.abstractmethod
    async def _return_caller(self) -> None:
        """Send the caller back to the bot on a new stream (raises ``errors`` if they left)."""

    def _stale(self, leg: str) -> R | None:
        """The answer to a leg whose turn is over (an agent reaching a caller who left)."""
        return None

    # --- the one transition method ---------------------------------------------------------
    async def handle(self, event: TransferEvent) -> R | None:
        """Apply one event; returns the carrier's answer to the callback, if it waits on one."""
        async with self._lock:
            state = self.state
            self.log.info("%s transfer %s: %s", self.carrier, state.value, event)
            if isinstance(event, Start):
                if state is TransferState.NEW:
                    await self._start()
            elif isinstance(event, LegAnswered):
                if event.leg != self.agent_leg or state is not TransferState.RINGING:
                    self._step("stale_answer")
                    return self._stale(event.leg)
                self._set(TransferState.BRIEFING)
                self._step("agent_answered")
                try:
                    return await self._brief(event.leg)
                except self.errors as exc:  # the agent hung up as they answered
                    self.log.warning("transfer: briefing failed: %s", exc)
                    self._declined = True
                    self._end_leg("declined")
                    await self._next()
            elif isinstance(event, LegDigits):
                if event.leg != self.agent_leg or state is not TransferState.BRIEFING:
                    self._step("stale_answer")
                    return self._stale(event.leg)
                if event.digits.strip() == "1":
                    return await self._take()
                self._declined = True
                self._end_leg("declined")
                reply = await self._release(event.leg)
                await self._next()
                return reply
            elif isinstance(event, LegEnded | LegDeadline):
                if event.leg != self.agent_leg or state.final:
                    return None
                if isinstance(event, LegDeadline):
                    self._step("deadline")
                    await self._hang_up_leg(ringing=state is TransferState.RINGING)
                if state is TransferState.BRIEFING:
                    self._declined = True  # hung up, or went silent, during the brief
                    self._end_leg("declined")
                else:
                    result = event.result if isinstance(event, LegEnded) else "no_answer"
                    result = result if result in LEG_RESULTS else "no_answer"
                    self._declined = self._declined or result == "declined"
                    self._end_leg(result)
                await self._next()
            elif isinstance(event, CallerLeft):
                if state in (TransferState.NEW, TransferState.RINGING, TransferState.BRIEFING):
                    if self.agent_leg is not None:
                        await self._hang_up_leg(ringing=state is TransferState.RINGING)
                        self._end_leg("caller_hung_up")
                    self.record.outcome = "caller_hung_up"
                    await self._finish(TransferState.CALLER_LEFT)
            return None

    # --- steps ---------------------------------------------------------------------------
    async def _start(self) -> None:
        try:
            await self._hold()
        except self.errors as exc:
            self.log.error("transfer: the caller could not be put on hold: %s", exc)
            self.record.outcome = "failed"
            await self._finish(TransferState.FAILED)
            return
        self.record.on_hold_at = time.time()
        self._step("caller_on_hold")
        await self._next()

    async def _next(self) -> None:
        """Dial the next number, or send the caller back to the bot when none is left."""
        self.agent_leg = None
        self._cancel_deadline()
        while self._next_index < len(self.targets):
            to = self.targets[self._next_index]
            self._next_index += 1
            try:
                leg = await self._dial(to)
            except self.errors as exc:
                self.log.warning("transfer: dialling %s failed: %s", to, exc)
                self.record.attempts.append({"to": to, "result": "failed", "error": str(exc)})
                self._step("dial_failed")
                continue
            self.agent_leg = leg
            self.legs.append(leg)
            self._leg_started = time.time()
            self._set(TransferState.RINGING)
            self._step("agent_dialled")
            # The carrier ends the ringing at its timeout; this guards against a callback that
            # never comes.
            self._deadline = asyncio.get_running_loop().call_later(
                self.ring_timeout_s + self._deadline_margin_s, self._deadline_fired, leg
            )
            return
        self.record.outcome = "declined" if self._declined else "no_answer"
        try:
            await self._return_caller()
        except self.errors as exc:
            # The caller's call is gone (hung up as the last agent declined).
            self.log.info("transfer: the caller could not be returned to the bot: %s", exc)
            self.record.outcome = "caller_hung_up"
            await self._finish(TransferState.CALLER_LEFT)
            return
        self._step("caller_returned")
        await self._finish(TransferState.RETURNED)

    async def _take(self) -> R | None:
        """The agent pressed 1: connect them, unless the caller has just left."""
        leg = self.agent_leg
        assert leg is not None
        try:
            reply = await self._connect(leg)
        except self.errors as exc:
            self.log.info("transfer: connecting failed (the caller left?): %s", exc)
            await self._hang_up_leg(ringing=False)
            self._end_leg("caller_hung_up")
            self.record.outcome = "caller_hung_up"
            await self._finish(TransferState.CALLER_LEFT)
            return self._stale(leg)
        self._end_leg("connected")
        self.record.outcome = "connected"
        self.record.connected_to = self.current_target
        await self._finish(TransferState.CONNECTED)
        return reply

    async def _hang_up_leg(self, *, ringing: bool) -> None:
        if self.agent_leg is None:
            return
        try:
            await self._hang_up(self.agent_leg, ringing=ringing)
            self._step("agent_leg_cancelled")
        except self.errors as exc:  # already ended: nothing to do
            self.log.info("transfer: ending agent leg %s: %s", self.agent_leg, exc)

    def _end_leg(self, result: str) -> None:
        self.record.attempts.append(
            {
                "to": self.current_target,
                self.leg_key: self.agent_leg,
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
            except Exception:  # storing the outcome must not break the carrier's callback
                self.log.exception("transfer: storing the outcome failed")

    # --- helpers ----------------------------------------------------------------------------
    def _set(self, state: TransferState) -> None:
        if state is not self.state:
            self.log.info("transfer %s -> %s", self.state.value, state.value)
            self.state = state

    def _step(self, step: str) -> None:
        self._count(step)

    def _deadline_fired(self, leg: str) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(LegDeadline(leg)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
