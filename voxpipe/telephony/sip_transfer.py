"""A bot's side of a transfer on a direct SIP call: a blind REFER after the bot's brief.

``SipHandoff`` is the ``transfer(reason, summary)`` callable a bot gives ``Escalation`` on a SIP
call. A PBX cannot play our whisper to its agent before they take the call, so the transfer is
blind: the bot speaks its handoff line, then each ``TRANSFER_TO`` target is REFERred in turn
(the brief travels in the REFER's ``X-Voxpipe-Brief`` header for PBXs that pass it on). A
target the PBX reaches (final NOTIFY 2xx) ends our leg with BYE; a REFER refused or a final
NOTIFY of 4xx-6xx tries the next one; when none is left the bot has the caller again, says so
and takes a message (as after a Twilio transfer nobody took). The ``EscalationRecord``
(outcome, target, attempts, timings) is kept in the call's session and transcript metadata.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.policy.escalation import Escalation
from voxpipe.state.session import SessionStore
from voxpipe.telephony.handoff import ESCALATION_KEY
from voxpipe.telephony.transfers import TRANSFERS, parse_targets
from voxpipe.telephony.twilio_transfer import EscalationRecord

__all__ = ["NOBODY_TOOK", "SipHandoff", "sip_targets"]

logger = logging.getLogger(__name__)

NOBODY_TOOK = "nobody took the call"  # the escalation's failure detail when every REFER failed
_DECLINED = {486, 600, 603}  # busy here / busy everywhere / decline: the person said no
_NO_ANSWER = {408, 480, 487}  # timeout / unavailable / request terminated (rang out)


class ReferOutcome(Protocol):
    transferred: bool
    status: int
    detail: str


class CallControl(Protocol):
    """What ``SipHandoff`` needs of the call (``voxpipe.transports.sip.control``)."""

    def watch_speech(self) -> None: ...
    async def wait_spoken(self, start_within_s: float = ..., limit_s: float = ...) -> None: ...
    async def refer(
        self, target: str, *, brief: str = ..., notify_timeout_s: float = ...
    ) -> ReferOutcome: ...
    async def say(self, text: str) -> None: ...
    def end_transferred(self, target: str) -> None: ...


def sip_targets(value: str | None, default_host: str = "") -> list[str]:
    """``TRANSFER_TO`` as REFER targets: ``sip:`` URIs as given; an E.164 number becomes
    ``sip:+1555...@default_host`` (the PBX / trunk that sent the call), else is dropped."""
    out = []
    for target in parse_targets(value):
        if target.lower().startswith("sip:"):
            out.append(target)
        elif default_host:
            out.append(f"sip:{target}@{default_host}")
    return out


class SipHandoff:
    """Blind-transfers a SIP call after the bot's brief (see the module docstring)."""

    def __init__(
        self,
        control: CallControl,
        targets: list[str],
        *,
        call_id: str,
        recorder: TranscriptRecorder,
        sessions: SessionStore,
        brief: Callable[[str, str], str],
        nobody_free: str,
        trigger: Callable[[], str] = lambda: "tool",
        notify_timeout_s: float = 30.0,
    ) -> None:
        self.control = control
        self.targets = list(targets)
        self.call_id = call_id
        self.recorder = recorder
        self.sessions = sessions
        self.brief = brief  # (reason, summary) -> the brief line
        self.nobody_free = nobody_free  # said when no target took the call
        self.trigger = trigger
        self.notify_timeout_s = notify_timeout_s
        self.escalation: Escalation | None = None  # set by the bot: finished() / failed()
        self.record: EscalationRecord | None = None
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def max_duration_s(self) -> float:
        """How long a whole attempt may take (the escalation's timeout must allow it)."""
        return 35.0 + len(self.targets) * (self.notify_timeout_s + 35.0)

    async def __call__(self, reason: str, summary: str) -> None:
        """Start the transfer; it goes on after the bot's handoff line (returns at once)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("a transfer is already under way")
        record = EscalationRecord(reason=reason, summary=summary, trigger=self.trigger())
        self.record = record
        self.done.clear()
        self.control.watch_speech()  # the handoff line is said after this returns
        await self._store(record)
        self._task = asyncio.get_running_loop().create_task(
            self._run(record, self.brief(reason, summary)), name=f"sip-transfer:{self.call_id}"
        )

    async def _run(self, record: EscalationRecord, brief: str) -> None:
        try:
            await self.control.wait_spoken()
            record.on_hold_at = time.time()
            for target in self.targets:
                TRANSFERS.count("sip_refer")
                result = await self.control.refer(
                    target, brief=brief, notify_timeout_s=self.notify_timeout_s
                )
                attempt = {
                    "to": target,
                    "status": result.status,
                    "result": _result(result.transferred, result.status, result.detail),
                    "detail": result.detail,
                    "at": time.time(),
                }
                record.attempts.append(attempt)
                logger.info(
                    "call %s: REFER to %s: %s (%s %s)",
                    self.call_id,
                    target,
                    attempt["result"],
                    result.status,
                    result.detail,
                    extra={"call_id": self.call_id},
                )
                if result.transferred:
                    TRANSFERS.count("sip_transferred")
                    record.outcome, record.connected_to = "connected", target
                    record.ended_at = time.time()
                    self.control.end_transferred(target)  # first: the BYE must not wait
                    await self._store(record)
                    if self.escalation is not None:
                        await self.escalation.finished(f"referred to {target}")
                    return
                if attempt["result"] == "caller_hung_up":
                    record.outcome, record.ended_at = "caller_hung_up", time.time()
                    await self._store(record)
                    return
            results = {a["result"] for a in record.attempts}
            record.outcome = (
                "declined" if "declined" in results else "no_answer" if results else "failed"
            )
            record.ended_at = time.time()
            TRANSFERS.count("sip_returned")
            await self._store(record)
            if self.escalation is not None:
                await self.escalation.failed(NOBODY_TOOK)
            await self.control.say(self.nobody_free)
        except Exception:
            logger.exception("call %s: the SIP transfer failed", self.call_id)
            if self.escalation is not None:
                await self.escalation.failed("transfer error")
        finally:
            self.done.set()

    async def _store(self, record: EscalationRecord) -> None:
        values = {ESCALATION_KEY: record.to_dict()}
        self.recorder.meta.update(values)
        if self.recorder.retaining:
            try:
                await self.sessions.set_meta(self.call_id, values)
            except Exception as exc:  # the transcript row still carries recorder.meta
                logger.warning("call %s: storing the escalation failed: %s", self.call_id, exc)


def _result(transferred: bool, status: int, detail: str) -> str:
    if transferred:
        return "connected"
    if status == 0 and detail == "caller hung up":
        return "caller_hung_up"
    if status in _DECLINED:
        return "declined"
    if status in _NO_ANSWER:
        return "no_answer"
    return "failed"
