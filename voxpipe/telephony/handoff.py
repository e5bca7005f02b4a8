"""A bot's side of a warm transfer: start it, keep its record, end the call's records after it.

``Handoff`` is the ``transfer(reason, summary)`` callable a bot gives ``Escalation``: it starts
the carrier's ``WarmTransfer`` (``TwilioHandoff``: ``TwilioTransfer``; the Telnyx and Vonage
ones are in ``carrier_handoffs``), which outlives the bot's pipeline (putting the caller on hold
ends the media stream), and keeps the session open meanwhile. When the transfer ends it stores the
``EscalationRecord`` in the session; when the call is over for us (an agent took it, or the
caller hung up) it writes the transcript row from the session, with the record in its
metadata. When nobody took the call the session stays for the bot the caller returns to
(``resume_conversation``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from voxpipe.processors.aggregators.context import LLMContext, message_text
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.policy.cards import redact_card_numbers
from voxpipe.state.session import SessionState, SessionStore
from voxpipe.state.transcripts import Transcript, TranscriptStore
from voxpipe.telephony.transfers import TRANSFERS, TransferConfig
from voxpipe.telephony.twilio import TwilioCalls
from voxpipe.telephony.twilio_transfer import TwilioTransfer
from voxpipe.telephony.warm_transfer import (
    EscalationRecord,
    Start,
    TransferState,
    TransferWording,
    WarmTransfer,
)

__all__ = ["ESCALATION_KEY", "Handoff", "TwilioHandoff", "resume_conversation", "take_message"]

logger = logging.getLogger(__name__)

ESCALATION_KEY = "escalation"  # session / transcript metadata key of the EscalationRecord
_TERMINAL_FOR_US = (TransferState.CONNECTED, TransferState.CALLER_LEFT)
RECORDER_WAIT_S = 30.0  # how long the row waits for the bot's pipeline to store its turns


class Handoff(abc.ABC):
    """Starts a call's warm transfer and stores what came of it (see module docstring)."""

    def __init__(
        self,
        *,
        call_id: str,
        recorder: TranscriptRecorder,
        sessions: SessionStore,
        transcripts: TranscriptStore,
        wording: Callable[[str, str], TransferWording],
        trigger: Callable[[], str] = lambda: "tool",
        heartbeat_interval_s: float = 10.0,
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.call_id = call_id
        self.recorder = recorder
        self.sessions = sessions
        self.transcripts = transcripts
        self.wording = wording  # (reason, summary) -> what the agent hears
        self.trigger = trigger
        self.transfer: WarmTransfer[Any] | None = None
        # Run once the caller is on hold: ends the bot's stream where the carrier leaves it
        # open (Vonage: the websocket leg stays in the old conversation).
        self.on_hold: Callable[[], Awaitable[None]] | None = None
        self.records_done = asyncio.Event()  # the outcome (and, if the call is over, the row)
        self._task: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def call_sid(self) -> str:
        return self.call_id

    @abc.abstractmethod
    def _new_transfer(
        self, record: EscalationRecord, wording: TransferWording
    ) -> WarmTransfer[Any]:
        """The carrier's transfer for this call (``on_finish=self._finished``,
        ``count=TRANSFERS.count``)."""

    async def __call__(self, reason: str, summary: str) -> None:
        """Put the caller on hold and dial the first agent; raises if the caller stays here."""
        record = EscalationRecord(reason=reason, summary=summary, trigger=self.trigger())
        transfer = self._new_transfer(record, self.wording(reason, summary))
        transfer.details = {
            "caller": self.recorder.meta.get("caller") or "",
            "locale": transfer.wording.language,
            "conversation": conversation_so_far(self.recorder.context),
        }
        self.transfer = transfer
        TRANSFERS.add(transfer)
        # The media stream ends when the caller is put on hold; the call (and its records) does not.
        self.recorder.defer_final = True
        await self._store(record)
        # Its own task: the pipeline that asked may be torn down while the carrier moves the call.
        self._task = asyncio.get_running_loop().create_task(transfer.handle(Start()))
        self._spawn(self._keep_alive(transfer))
        await asyncio.shield(self._task)
        if transfer.state is TransferState.FAILED:
            self.recorder.defer_final = False
            TRANSFERS.done(transfer)
            raise RuntimeError("the caller could not be moved to hold")
        if self.on_hold is not None:
            self._spawn(self.on_hold())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_alive(self, transfer: WarmTransfer[Any]) -> None:
        """Heartbeat the session while the caller is on hold: the bot's pipeline (which did
        it) has ended, and the orphan sweeper must not write the call up mid-transfer."""
        while not transfer.finished.is_set():
            if self.recorder.retaining:
                try:
                    await self.sessions.touch(self.call_sid)
                except Exception as exc:
                    logger.warning("call %s: session heartbeat failed: %s", self.call_sid, exc)
            try:
                async with asyncio.timeout(self.heartbeat_interval_s):
                    await transfer.finished.wait()
            except TimeoutError:
                pass

    async def _store(self, record: EscalationRecord) -> None:
        values = {ESCALATION_KEY: record.to_dict()}
        self.recorder.meta.update(values)
        if self.recorder.retaining:
            await self.sessions.set_meta(self.call_sid, values)

    async def _finished(self, transfer: WarmTransfer[Any]) -> None:
        record = transfer.record
        logger.info(
            "escalation of %s: %s%s",
            self.call_sid,
            record.outcome,
            f" to {record.connected_to}" if record.connected_to else "",
            extra={"call_id": self.call_sid},
        )
        TRANSFERS.done(transfer)
        if transfer.state is TransferState.FAILED:
            self.records_done.set()
            return  # the bot still has the caller: its own end of call writes the record
        await self._store(record)
        if transfer.state in _TERMINAL_FOR_US and self.recorder.retaining:
            # Not in Twilio's callback (it waits for our TwiML): once the bot's pipeline has
            # stored its last turns, the row is written from the session.
            self._spawn(self._write_row())
        else:
            self.records_done.set()

    async def _write_row(self) -> None:
        try:
            if self.recorder.started:
                try:
                    async with asyncio.timeout(RECORDER_WAIT_S):
                        await self.recorder.closed.wait()
                except TimeoutError:
                    logger.warning("call %s: the bot's pipeline did not end", self.call_sid)
            await write_transcript(self.sessions, self.transcripts, self.call_sid)
        except Exception:
            logger.exception("call %s: writing the transcript row failed", self.call_sid)
        finally:
            self.records_done.set()


class TwilioHandoff(Handoff):
    """A Twilio call's warm transfer (``TwilioTransfer``) over Twilio's REST API."""

    def __init__(
        self,
        config: TransferConfig,
        *,
        call_sid: str,
        called: str,
        recorder: TranscriptRecorder,
        sessions: SessionStore,
        transcripts: TranscriptStore,
        wording: Callable[[str, str], TransferWording],
        trigger: Callable[[], str] = lambda: "tool",
        heartbeat_interval_s: float = 10.0,
    ) -> None:
        super().__init__(
            call_id=call_sid,
            recorder=recorder,
            sessions=sessions,
            transcripts=transcripts,
            wording=wording,
            trigger=trigger,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        self.config = config
        self.called = called

    def _new_transfer(self, record: EscalationRecord, wording: TransferWording) -> TwilioTransfer:
        config = self.config
        return TwilioTransfer(
            call_sid=self.call_id,
            targets=list(config.targets),
            calls=TwilioCalls(config.account_sid, config.auth_token, base_url=config.api_base_url),
            urls=config.urls(self.call_id),
            wording=wording,
            record=record,
            from_number=config.from_number or self.called,
            ring_timeout_s=config.ring_timeout_s,
            on_finish=self._finished,
            count=TRANSFERS.count,
        )


def conversation_so_far(context: LLMContext) -> list[dict[str, str]]:
    """The caller's and the bot's words so far, card numbers redacted (for the agent desk)."""
    out = []
    for entry in context.entries:
        if entry.role in ("user", "assistant"):
            text = redact_card_numbers(message_text(entry.message))[0]
            if text:
                out.append({"role": entry.role, "text": text})
    return out


async def write_transcript(
    sessions: SessionStore, transcripts: TranscriptStore, call_id: str
) -> Transcript | None:
    """Write a call's transcript row from its session (the call is over for us), then drop it."""
    state = await sessions.load(call_id)
    if state is None:
        return None
    transcript = Transcript.from_session(state, ended_at=time.time())
    await transcripts.write(transcript)
    await sessions.delete(call_id)
    return transcript


def resume_conversation(
    state: SessionState, context: LLMContext, recorder: TranscriptRecorder
) -> dict[str, Any]:
    """Continue a call whose session is ``state``: its turns back in the context and the
    recorder; returns the stored escalation record (``{}`` if none)."""
    for turn in state.turns:
        if not turn.text:
            continue
        if turn.role == "user":
            context.add_user_message(turn.text)
        elif turn.role == "assistant":
            context.add_assistant_message(turn.text, interrupted=turn.interrupted)
    recorder.resume_from(state)
    escalation = state.meta.get(ESCALATION_KEY)
    return dict(escalation) if isinstance(escalation, dict) else {}


async def take_message(
    recorder: TranscriptRecorder,
    sessions: SessionStore,
    call_id: str,
    message: str,
    callback_number: str = "",
) -> dict[str, Any]:
    """Store a caller's message / callback number with the call's escalation record."""
    record = dict(recorder.meta.get(ESCALATION_KEY) or {})
    record.update(
        {
            "outcome": "message_taken",
            "message": message.strip()[:2000],
            "callback_number": callback_number.strip()[:40] or None,
            "message_at": time.time(),
        }
    )
    recorder.meta[ESCALATION_KEY] = record
    if recorder.retaining:
        await sessions.set_meta(call_id, {ESCALATION_KEY: record})
    return {"status": "message_taken"}
