"""TranscriptRecorder: keeps a call's conversation in the session store as it happens and
writes the full transcript at call end (only with the caller's consent where it is asked, and
never a card number)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallResultFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
    StartFrame,
)
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.context import ContextEntry, message_text
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.cards import redact_card_numbers
from voxpipe.state.heartbeat import SessionHeartbeat
from voxpipe.state.session import SessionState, SessionStore, Turn
from voxpipe.state.transcripts import Transcript, TranscriptStore

# Frames after which the context's new entries are complete and can be stored.
_BOUNDARIES = (
    LLMResponseStartFrame,
    LLMResponseEndFrame,
    InterruptionFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    FunctionCallResultFrame,
)


class TranscriptRecorder(FrameProcessor):
    """Placed after the assistant aggregator: stores each completed turn of the context in the
    session store as it completes (a crashed worker loses at most the turn in flight), beats
    the call's heartbeat every ``heartbeat_interval_s`` from its start until its transcript is
    safe (silences, holds and payment pauses included, before consent too: a beat holds no
    conversation data and creates no session), so the orphan sweeper never takes a live call,
    and, when the call is over however it ended, writes every turn to the transcript store.

    While recording is paused (``PauseRecordingFrame`` … ``ResumeRecordingFrame``, e.g. while a
    card number is read out) turns are kept out of both stores. With ``require_consent`` nothing
    of the call is stored (not even its metadata) until a ``RetentionConsentFrame`` grants it;
    what was said before the grant is skipped. A refusal, at any time (a withdrawal during the
    call is a ``RetentionConsentFrame(granted=False)`` too, or a call to ``refuse()``), keeps
    the call out of both stores: what the session held is deleted and no transcript is written. Card numbers are redacted from every stored turn
    as a last line of defence (``PaymentGuard`` normally removed them before the context).
    """

    def __init__(
        self,
        assistant: AssistantContextAggregator,
        *,
        sessions: SessionStore,
        transcripts: TranscriptStore,
        call_id: str,
        meta: dict[str, Any] | None = None,
        heartbeat_interval_s: float = 10.0,
        require_consent: bool = False,
        worker_id: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat = SessionHeartbeat(
            sessions, call_id, interval_s=heartbeat_interval_s, worker_id=worker_id
        )
        self.assistant = assistant
        self.context = assistant.context
        self.sessions = sessions
        self.transcripts = transcripts
        self.session_id = call_id
        self.meta = dict(meta or {})
        self.turns: list[Turn] = []
        self.escalated = False
        self.escalation_reason: str | None = None
        self.paused = False
        # None: not decided yet. Retained only when consent is not required or was granted.
        self.consent: bool | None = None
        self.require_consent = require_consent
        self._cursor = len(self.context.entries)
        self._started_at = time.time()
        self._writes: asyncio.Queue[Turn] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._last_boundary = time.time()
        self._user_done_at: float | None = None
        self._pending_latency: float | None = None  # caller's turn end -> bot's first audio
        self._finished = False
        self._drop_liveness = False
        # True while the call goes on without this pipeline (a warm transfer moved the caller):
        # at its end the turns go to the session and whoever ends the call writes the row.
        self.defer_final = False
        self.closed = asyncio.Event()  # set once cleanup has stored what it had to
        self._resumed_started_at: float | None = None

    def resume_from(self, state: SessionState) -> None:
        """Continue the call ``state`` holds (the caller came back): its turns, metadata and
        consent carry on; the transcript row covers the whole call."""
        self.turns = list(state.turns)
        self.meta.update({k: v for k, v in state.meta.items() if k != "owner"})
        if state.meta.get("consent"):
            self.consent = True
        if state.meta.get("escalated"):
            self.escalated = True
            self.escalation_reason = state.meta.get("escalation_reason")
        started = state.meta.get("started_at")
        self._resumed_started_at = float(started) if started else None

    async def on_start(self, frame: StartFrame) -> None:
        # First: the call is alive from its first moment, whatever it may store.
        await self.heartbeat.start()
        self._started_at = self._resumed_started_at or time.time()
        self.meta.setdefault("call_id", self.session_id)
        self.meta.setdefault("started_at", self._started_at)
        # The server's owner of this call start: only it may write this call id's transcript
        # (kept in the session so the sweeper writes a dead worker's call as its owner).
        owner = frame.metadata.get("owner")
        if owner and "owner" not in self.meta:
            self.meta["owner"] = owner
        self.meta.setdefault("worker_id", self.heartbeat.worker_id)  # named from the first write
        if self.retaining:
            await self.sessions.set_meta(self.session_id, self.meta)
        self._writer = self.create_task(
            self._write_loop(), name="session-writes", interruptible=False
        )

    @property
    def retaining(self) -> bool:
        """True while the call may be stored (consent granted, or not required and not refused)."""
        return self.consent is True or (self.consent is None and not self.require_consent)

    async def mark_escalated(self, reason: str, summary: str = "") -> None:
        """Record that the call was handed to a human (kept in the session and the transcript)."""
        self.escalated = True
        self.escalation_reason = reason
        values: dict[str, Any] = {"escalated": True, "escalation_reason": reason}
        if summary:
            values["escalation_summary"] = redact_card_numbers(summary)[0]
        self.meta.update(values)  # written with the rest once consent comes, if it is awaited
        if self.retaining:
            await self.sessions.set_meta(self.session_id, values)

    async def _consent(self, frame: RetentionConsentFrame) -> None:
        if frame.granted:
            await self.grant(frame.source)
        else:
            await self.refuse(frame.source)

    async def grant(self, source: str = "") -> None:
        """The caller consented: what they say from now on is stored (no-op once decided)."""
        if self.consent is None:
            self._collect()  # what came before the grant is skipped, never stored
            self.consent = True
            self._cursor = len(self.context.entries) - (1 if self._is_open_last() else 0)
            self.meta["consent"] = source or "granted"
            if self.started:
                await self.sessions.set_meta(self.session_id, self.meta)

    async def refuse(self, source: str = "") -> None:
        """The caller declined or withdrew consent: nothing more is stored, what the session
        held is deleted, and no transcript is written (at any time, even after a grant)."""
        was_stored = self.retaining
        self.consent = False
        self.meta["consent"] = source or "refused"
        self.turns.clear()
        while not self._writes.empty():
            self._writes.get_nowait()
        if was_stored and self.started:
            # Consent was assumed (or given) and is now refused: drop what was kept so far.
            await self.sessions.delete(self.session_id)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, RetentionConsentFrame):
            await self._consent(frame)
        elif isinstance(frame, PauseRecordingFrame):
            self._collect()
            if not self.paused:
                self.meta.setdefault("payment_pauses", []).append({"start": time.time()})
            self.paused = True
        elif isinstance(frame, ResumeRecordingFrame):
            # What was said during the pause is skipped, never stored.
            self._cursor = len(self.context.entries) - (1 if self._is_open_last() else 0)
            if self.paused and self.meta.get("payment_pauses"):
                self.meta["payment_pauses"][-1]["end"] = time.time()
            self.paused = False
        elif isinstance(frame, _BOUNDARIES):
            if isinstance(frame, BotStartedSpeakingFrame) and self._user_done_at is not None:
                self._pending_latency = (time.time() - self._user_done_at) * 1000.0
            self._collect()
        elif isinstance(frame, EndFrame | CancelFrame):
            self._collect_final()
        await self.push_frame(frame, direction)

    def _is_open_last(self) -> bool:
        entries = self.context.entries
        return bool(entries) and self.assistant.open_entry is entries[-1]

    def _collect(self) -> None:
        """Turn the context's completed new entries into stored turns."""
        entries = self.context.entries
        end = len(entries) - (1 if self._is_open_last() else 0)
        now = time.time()
        while self._cursor < end:
            entry = entries[self._cursor]
            self._cursor += 1
            if self.paused or not self.retaining:
                continue
            turn = self._turn(entry, now)
            if turn is not None:
                self.turns.append(turn)
                self._writes.put_nowait(turn)
        self._last_boundary = now

    def _turn(self, entry: ContextEntry, now: float) -> Turn | None:
        msg = entry.message
        role = entry.role
        text = _scrub(message_text(msg))
        tool_calls: list[dict[str, Any]] = []
        for call in msg.get("tool_calls") or []:
            fn = call.get("function", {})
            arguments = fn.get("arguments")
            tool_calls.append(
                {
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "arguments": _scrub(arguments) if isinstance(arguments, str) else arguments,
                }
            )
        if role == "tool":
            tool_calls.append({"id": msg.get("tool_call_id"), "result": text})
        if not text and not tool_calls:
            return None
        timings: dict[str, float] = {}
        if role == "user":
            self._user_done_at = now
        elif role == "assistant" and self._pending_latency is not None:
            timings["response_ms"] = round(self._pending_latency, 1)
            self._pending_latency = None
            self._user_done_at = None
        return Turn(
            role=role,
            text=text,
            started_at=min(self._last_boundary, now),
            ended_at=now,
            interrupted=entry.interrupted,
            timings=timings,
            tool_calls=tool_calls,
        )

    async def _write_loop(self) -> None:
        while True:
            turn = await self._writes.get()
            try:
                await self.sessions.append_turn(self.session_id, turn)
            except Exception as exc:  # the store keeps the call going; never lose the turn here
                self.logger.error("session store write failed: %s", exc)

    def _collect_final(self) -> None:
        """The call is over: store what is still open, as far as it was heard."""
        if self._finished:
            return
        self._finished = True
        entries = self.context.entries
        self._collect()
        if self._cursor < len(entries) and not self.paused and self.retaining:
            turn = self._turn(entries[-1], time.time())
            if turn is not None:
                self.turns.append(turn)
                self._writes.put_nowait(turn)
            self._cursor = len(entries)

    async def cleanup(self) -> None:
        try:
            await self._end_of_call()
        finally:
            self.closed.set()  # what this pipeline had to store is stored

    async def _end_of_call(self) -> None:
        # Runs however the call ended (even a cancel that never reached this processor), after
        # the pipeline stopped: database time never holds up the end of the call. The heartbeat
        # goes on until the transcript is safe (or left for the sweeper), then stops.
        await super().cleanup()  # stops the writer task; its queue is finished below
        if not self.started:
            return
        try:
            await self._finish_call()
        finally:
            await self.heartbeat.stop()
        if self._drop_liveness:
            try:  # the call is over: its liveness record goes too (nothing is left to sweep)
                await self.sessions.delete(self.session_id)
            except Exception as exc:
                self.logger.error("session delete failed: %s", exc)

    async def _finish_call(self) -> None:
        self._drop_liveness = True
        self._collect_final()
        if not self.retaining:
            self.logger.info(
                "call not retained (consent %s): no transcript written",
                "declined" if self.consent is False else "not given",
            )
            return
        while not self._writes.empty():
            turn = self._writes.get_nowait()
            try:
                await self.sessions.append_turn(self.session_id, turn)
            except Exception as exc:
                self.logger.error("session store write failed: %s", exc)
        if self.defer_final:
            try:
                await self.sessions.set_meta(self.session_id, self.meta)
            except Exception as exc:
                self.logger.error("session store write failed: %s", exc)
            self.logger.info("call continues after this stream (transfer): row written later")
            self._drop_liveness = False  # the session carries the call on: it must stay
            return
        transcript = Transcript(
            call_id=self.session_id,
            started_at=self._started_at,
            ended_at=time.time(),
            turns=list(self.turns),
            caller=self.meta.get("caller"),
            called=self.meta.get("called"),
            locale=str(self.meta.get("locale") or "en-US"),
            escalated=self.escalated,
            escalation_reason=self.escalation_reason,
            # Sealed at rest with the rest of the record's metadata (voxpipe.records.fields).
            metadata={k: v for k, v in self.meta.items() if k in _RECORD_META},
            owner=self.meta.get("owner"),
        )
        try:
            await self.transcripts.write(transcript)
        except Exception as exc:
            # The spooling store does not raise; a store that does keeps the session for the
            # sweeper, which writes the transcript from it later.
            self._drop_liveness = False
            self.logger.error("transcript write failed, left for the sweeper: %s", exc)


# What of the call's meta goes into its record (the call-end webhook and the records API).
_RECORD_META = (
    "carrier",
    "bot",
    "country",
    "consent",
    "escalation",
    "escalation_summary",
    "payment_pauses",
)


def _scrub(text: str) -> str:
    """``text`` without card numbers: the recorder's own check, whatever ran before it."""
    return redact_card_numbers(text)[0] if text else text
