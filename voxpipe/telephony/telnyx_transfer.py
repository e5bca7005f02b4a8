"""A warm transfer of a Telnyx call over Call Control v2, as one state machine.

The caller's media stream stops and they hear hold audio (``streaming_stop``,
``playback_start`` looped); each number of ``TRANSFER_TO`` is dialled in turn (``POST
/v2/calls`` with ``timeout_secs`` and our ``webhook_url``); when an agent answers
(``call.answered``) they hear the brief and "press 1" (``gather_using_speak``, one digit);
``call.gather.ended`` with ``1`` bridges the agent to the caller (``bridge``), anything else (or
silence, or the agent hanging up) is a decline and the next number is dialled; a leg that ends
before answering (``call.hangup``: ``timeout``, ``user_busy``, ``call_rejected``...) moves on too.
With no number left the hold audio stops and the caller's stream starts again
(``streaming_start`` to the bot's resume URL): the bot carries on the same conversation and
takes a message. The caller hanging up at any point ends the agent leg (``caller_hung_up``).

Events come from Telnyx's signed webhooks (``event_from_webhook``); the same
``EscalationRecord`` as the Twilio path keeps the outcome and timings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voxpipe.telephony.telnyx_calls import TelnyxCallControl, TelnyxError
from voxpipe.telephony.transfers import RESUME_PARAM
from voxpipe.telephony.twilio_transfer import EscalationRecord, TransferState, TransferWording

__all__ = [
    "LegAnswered",
    "LegDeadline",
    "LegGathered",
    "LegHungUp",
    "TelnyxCallerLeft",
    "TelnyxStart",
    "TelnyxTransfer",
    "TelnyxTransferPlan",
    "event_from_webhook",
]

logger = logging.getLogger(__name__)

# call.hangup causes of a leg that never answered, as the record's per-number result.
_UNANSWERED = {"user_busy": "busy", "call_rejected": "declined"}


@dataclass(frozen=True, slots=True)
class TelnyxStart:
    """Put the caller on hold and dial the first number."""


@dataclass(frozen=True, slots=True)
class LegAnswered:
    """``call.answered`` of an agent leg."""

    call_control_id: str


@dataclass(frozen=True, slots=True)
class LegGathered:
    """``call.gather.ended`` of an agent leg (``status`` valid / invalid / timeout / ...)."""

    call_control_id: str
    digits: str
    status: str


@dataclass(frozen=True, slots=True)
class LegHungUp:
    """``call.hangup`` of an agent leg."""

    call_control_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class TelnyxCallerLeft:
    """``call.hangup`` of the caller's leg."""

    cause: str = ""


@dataclass(frozen=True, slots=True)
class LegDeadline:
    """Our own guard: a leg Telnyx never reported on is given up."""

    call_control_id: str


TelnyxEvent = TelnyxStart | LegAnswered | LegGathered | LegHungUp | TelnyxCallerLeft | LegDeadline
OnFinish = Callable[["TelnyxTransfer"], Awaitable[None]]


def event_from_webhook(body: Any, caller_id: str) -> TelnyxEvent | None:
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
        return (
            TelnyxCallerLeft(str(payload.get("hangup_cause") or ""))
            if kind == "call.hangup"
            else None
        )
    if kind == "call.answered":
        return LegAnswered(ccid)
    if kind == "call.gather.ended":
        return LegGathered(ccid, str(payload.get("digits") or ""), str(payload.get("status") or ""))
    if kind == "call.hangup":
        return LegHungUp(ccid, str(payload.get("hangup_cause") or ""))
    return None


@dataclass(frozen=True, slots=True)
class TelnyxTransferPlan:
    """Where a Telnyx transfer dials from and what it points Telnyx at."""

    connection_id: str
    from_number: str
    webhook_url: str  # our signed Call Control webhook for the agent legs
    hold_audio_url: str  # what the caller hears while waiting
    resume_stream_url: str  # the bot's media websocket for a caller nobody took
    ring_timeout_s: int = 20
    gather_timeout_ms: int = 8000
    # Sent with streaming_start as base64 JSON: the stream's ``start`` carries it back and the
    # Telnyx transport makes it the call's custom parameters (the bot's resume marker).
    resume_parameters: tuple[tuple[str, str], ...] = ((RESUME_PARAM, "transfer"),)


class TelnyxTransfer:
    """One warm-transfer attempt of one Telnyx call (see the module docstring)."""

    def __init__(
        self,
        *,
        call_control_id: str,
        targets: list[str],
        control: TelnyxCallControl,
        plan: TelnyxTransferPlan,
        wording: TransferWording,
        record: EscalationRecord,
        on_finish: OnFinish | None = None,
        count: Callable[[str], None] | None = None,
        deadline_margin_s: float = 30.0,
    ) -> None:
        if not targets:
            raise ValueError("a transfer needs at least one number (TRANSFER_TO)")
        self.caller_id = call_control_id
        self.targets = list(targets)
        self.control = control
        self.plan = plan
        self.wording = wording
        self.record = record
        self.state = TransferState.NEW
        self.agent_id: str | None = None  # the leg being dialled or briefed
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
        self.log = logging.LoggerAdapter(logger, {"call_id": call_control_id})

    @property
    def current_target(self) -> str | None:
        return self.targets[self._next_index - 1] if self._next_index else None

    async def handle(self, event: TelnyxEvent) -> None:
        """Apply one event (the only transition method)."""
        async with self._lock:
            state = self.state
            self.log.info("telnyx transfer %s: %s", state.value, event)
            if isinstance(event, TelnyxStart) and state is TransferState.NEW:
                await self._start()
            elif isinstance(event, LegAnswered):
                if event.call_control_id != self.agent_id or state is not TransferState.RINGING:
                    return  # a stale leg: it is hung up when its turn ended
                self.state = TransferState.BRIEFING
                self._step("agent_answered")
                await self._brief()
            elif isinstance(event, LegGathered):
                if event.call_control_id != self.agent_id or state is not TransferState.BRIEFING:
                    return
                if event.digits.strip() == "1":
                    await self._connect()
                else:
                    self._declined = True
                    self._end_leg("declined")
                    await self._hang_up_leg()
                    await self._next()
            elif isinstance(event, LegHungUp | LegDeadline):
                if event.call_control_id != self.agent_id or state.final:
                    return
                if isinstance(event, LegDeadline):
                    self._step("deadline")
                    await self._hang_up_leg()
                if state is TransferState.BRIEFING:
                    self._declined = True  # hung up during the brief
                    self._end_leg("declined")
                else:
                    cause = event.cause if isinstance(event, LegHungUp) else "timeout"
                    result = _UNANSWERED.get(cause, "no_answer")
                    self._declined = self._declined or result == "declined"
                    self._end_leg(result)
                await self._next()
            elif isinstance(event, TelnyxCallerLeft):
                if state in (TransferState.NEW, TransferState.RINGING, TransferState.BRIEFING):
                    if self.agent_id is not None:
                        await self._hang_up_leg()
                        self._end_leg("caller_hung_up")
                    self.record.outcome = "caller_hung_up"
                    await self._finish(TransferState.CALLER_LEFT)

    # --- steps ---------------------------------------------------------------------------
    async def _start(self) -> None:
        try:
            await self.control.action(self.caller_id, "streaming_stop")
            await self.control.action(
                self.caller_id,
                "playback_start",
                audio_url=self.plan.hold_audio_url,
                loop="infinity",
            )
        except TelnyxError as exc:
            self.log.error("telnyx transfer: the caller could not be put on hold: %s", exc)
            self.record.outcome = "failed"
            await self._finish(TransferState.FAILED)
            return
        self.record.on_hold_at = time.time()
        self._step("caller_on_hold")
        await self._next()

    async def _next(self) -> None:
        """Dial the next number, or send the caller back to the bot when none is left."""
        self.agent_id = None
        self._cancel_deadline()
        while self._next_index < len(self.targets):
            to = self.targets[self._next_index]
            self._next_index += 1
            try:
                ccid = await self.control.dial(
                    to,
                    self.plan.from_number,
                    connection_id=self.plan.connection_id,
                    webhook_url=self.plan.webhook_url,
                    timeout_s=self.plan.ring_timeout_s,
                    client_state=f"voxpipe-transfer:{self.caller_id}",
                )
            except TelnyxError as exc:
                self.log.warning("telnyx transfer: dialling %s failed: %s", to, exc)
                self.record.attempts.append({"to": to, "result": "failed", "error": str(exc)})
                self._step("dial_failed")
                continue
            self.agent_id = ccid
            self._leg_started = time.time()
            self.state = TransferState.RINGING
            self._step("agent_dialled")
            # Telnyx ends the ringing at timeout_secs; this guards against a webhook never sent.
            self._deadline = asyncio.get_running_loop().call_later(
                self.plan.ring_timeout_s + self._deadline_margin_s, self._deadline_fired, ccid
            )
            return
        self.record.outcome = "declined" if self._declined else "no_answer"
        try:
            await self.control.action(self.caller_id, "playback_stop")
            await self.control.action(
                self.caller_id,
                "streaming_start",
                stream_url=self.plan.resume_stream_url,
                stream_track="inbound_track",
                stream_bidirectional_mode="rtp",
                stream_bidirectional_codec="PCMU",
                client_state=base64.b64encode(
                    json.dumps(dict(self.plan.resume_parameters)).encode()
                ).decode(),
            )
        except TelnyxError as exc:
            self.log.info("telnyx transfer: the caller could not be returned to the bot: %s", exc)
            self.record.outcome = "caller_hung_up"
            await self._finish(TransferState.CALLER_LEFT)
            return
        self._step("caller_returned")
        await self._finish(TransferState.RETURNED)

    async def _brief(self) -> None:
        assert self.agent_id is not None
        try:
            await self.control.action(
                self.agent_id,
                "gather_using_speak",
                payload=f"{self.wording.brief} {self.wording.accept_prompt}",
                voice="female",
                language=self.wording.language,
                minimum_digits=1,
                maximum_digits=1,
                valid_digits="0123456789",
                timeout_millis=self.plan.gather_timeout_ms,
            )
        except TelnyxError as exc:  # the agent hung up as they answered
            self.log.warning("telnyx transfer: briefing failed: %s", exc)
            self._end_leg("declined")
            self._declined = True
            await self._next()

    async def _connect(self) -> None:
        assert self.agent_id is not None
        try:
            await self.control.action(self.caller_id, "playback_stop")
            await self.control.action(self.agent_id, "bridge", call_control_id=self.caller_id)
        except TelnyxError as exc:
            # The caller left as the agent accepted: the agent is told and released.
            self.log.info("telnyx transfer: bridging failed: %s", exc)
            await self._hang_up_leg()
            self._end_leg("caller_hung_up")
            self.record.outcome = "caller_hung_up"
            await self._finish(TransferState.CALLER_LEFT)
            return
        self._end_leg("connected")
        self.record.outcome = "connected"
        self.record.connected_to = self.current_target
        await self._finish(TransferState.CONNECTED)

    async def _hang_up_leg(self) -> None:
        if self.agent_id is None:
            return
        try:
            await self.control.action(self.agent_id, "hangup")
            self._step("agent_leg_cancelled")
        except TelnyxError as exc:  # already ended (422): nothing to do
            self.log.info("telnyx transfer: ending leg %s: %s", self.agent_id, exc)

    def _end_leg(self, result: str) -> None:
        self.record.attempts.append(
            {
                "to": self.current_target,
                "call_control_id": self.agent_id,
                "result": result,
                "seconds": round(time.time() - self._leg_started, 3),
            }
        )
        self._step(f"agent_{result}")
        self._cancel_deadline()

    async def _finish(self, state: TransferState) -> None:
        self.state = state
        self._cancel_deadline()
        self.record.ended_at = time.time()
        self._step(f"finished_{state.value}")
        self.finished.set()
        if self._on_finish is not None:
            try:
                await self._on_finish(self)
            except Exception:  # storing the outcome must not break Telnyx's webhook
                self.log.exception("telnyx transfer: storing the outcome failed")

    def _step(self, step: str) -> None:
        self._count(step)

    def _deadline_fired(self, ccid: str) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(LegDeadline(ccid)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def decode_client_state(value: str | None) -> str:
    """A webhook's ``client_state`` (base64) as text; empty when absent or not base64."""
    try:
        return base64.b64decode(value or "", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""
