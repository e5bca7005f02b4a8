"""ContinuityKeeper saves a call's conversation for a callback; StartOverDetector drops it.

``ContinuityKeeper`` sits after the assistant aggregator (next to the ``TranscriptRecorder``)
and saves, as turns complete and when the call ends however it ended, the conversation a
callback from the same number continues (``voxpipe.state.continuity``). It keeps to the
recorder's rules: with ``require_consent`` nothing is saved until retention is granted (and a
refusal forgets what was saved), nothing said while recording is paused is saved, and card
numbers are redacted. Each saved message is marked sensitive or not, for the next call's
``PriorConversation``: tool calls and results always, the assistant's words after a tool result
in the same turn (they read it back), and whatever the bot's ``is_sensitive`` says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from voxpipe.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    LLMResponseEndFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
    StartFrame,
    TranscriptionFrame,
)
from voxpipe.processors.aggregators.context import (
    INTERRUPTED_CALL_RESULT,
    ContextEntry,
    message_text,
)
from voxpipe.processors.aggregators.resume import ResumableContext
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.cards import redact_card_numbers
from voxpipe.state.continuity import (
    MESSAGE_NOTE,
    CallerContinuity,
    PriorMessage,
    ResumableConversation,
)

__all__ = ["MESSAGE_NOTE", "ContinuityKeeper", "StartOverDetector", "trim_to_turns"]

TopicOf = Callable[[Sequence[dict[str, Any]]], str | None]


class ContinuityKeeper(FrameProcessor):
    """Saves the call's conversation for a callback, as it goes and at the end of the call."""

    def __init__(
        self,
        context: ResumableContext,
        continuity: CallerContinuity,
        *,
        require_consent: bool = False,
        is_sensitive: Callable[[str], bool] | None = None,
        topic_of: TopicOf | None = None,
        locale: str | None = None,
        max_turns: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.context = context
        self.continuity = continuity
        self.require_consent = require_consent
        self.is_sensitive = is_sensitive or (lambda _text: False)
        self.topic_of = topic_of
        self.locale = locale
        self.max_turns = max_turns or context.max_turns
        self.consent: bool | None = None
        self.consent_source: str | None = None
        # The bot's open items carried to a callback: an escalation, a message taken, ...
        self.notes: dict[str, Any] = {}
        self.escalation: dict[str, Any] | None = None
        self._first = len(context.entries)  # entries before this (a consent prompt) are not kept
        self._excluded: set[int] = set()  # id() of entries said while recording was paused
        self._paused_from: int | None = None
        self._saved_signature: tuple[Any, ...] | None = None
        self._dirty = asyncio.Event()
        self._ended = False

    @property
    def retaining(self) -> bool:
        """True while the call may be kept (consent granted, or not required and not refused)."""
        return self.consent is True or (self.consent is None and not self.require_consent)

    def mark_escalated(self, reason: str, summary: str = "") -> None:
        """Carry an open escalation to a callback."""
        self.escalation = {"escalated": True, "reason": reason, "summary": _scrub(summary)}
        self._dirty.set()

    def mark_message_taken(self, message: str, callback_number: str = "") -> None:
        """Carry a message / callback number taken (the transfer fallback) to a callback, so
        the bot can say it has the message and someone will call back."""
        self.set_note(
            MESSAGE_NOTE,
            {
                "message": _scrub(message.strip())[:2000],
                # Only the last digits: enough to confirm "the number ending 0123".
                "callback_ending": "".join(c for c in callback_number if c.isdigit())[-4:],
                "at": time.time(),
            },
        )

    def set_note(self, name: str, value: Any) -> None:
        """Carry a bot's open item (JSON-ready) to a callback."""
        self.notes[name] = value
        self._dirty.set()

    async def start_over(self) -> None:
        """The caller wants a fresh start: drop the earlier conversation here and in the store."""
        prior = self.context.prior
        if prior is not None:
            prior.dismiss()
        await self.continuity.forget()
        self._saved_signature = None

    # ------------------------------------------------------------------ frames

    async def on_start(self, frame: StartFrame) -> None:
        if self.continuity.owner:
            self.create_task(self._lease_loop(), name="continuity-lease", interruptible=False)
            self.create_task(self._save_loop(), name="continuity-saves", interruptible=False)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, RetentionConsentFrame):
            await self._consent(frame)
        elif isinstance(frame, PauseRecordingFrame):
            if self._paused_from is None:
                self._paused_from = len(self.context.entries)
        elif isinstance(frame, ResumeRecordingFrame):
            self._end_pause()
        elif isinstance(frame, LLMResponseEndFrame | BotStoppedSpeakingFrame):
            self._dirty.set()  # a turn completed: save (off the frame path)
        elif isinstance(frame, EndFrame | CancelFrame):
            self._ended = True
        await self.push_frame(frame, direction)

    async def _consent(self, frame: RetentionConsentFrame) -> None:
        if frame.granted and self.consent is None:
            self.consent = True
            self.consent_source = frame.source or "granted"
            self._first = len(self.context.entries)  # what came before the grant is not kept
        elif not frame.granted:
            self.consent = False
            # Declining retention covers what a callback would continue from, too.
            await self.continuity.forget()

    def _end_pause(self) -> None:
        if self._paused_from is None:
            return
        for entry in self.context.entries[self._paused_from :]:
            self._excluded.add(id(entry))
        self._paused_from = None

    # ------------------------------------------------------------------ saving

    async def _lease_loop(self) -> None:
        interval = max(self.continuity.lease_s / 3, 0.05)
        while self.continuity.owner:
            await self.clock.sleep(interval)
            await self.continuity.renew()

    async def _save_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.save()

    def snapshot(self) -> ResumableConversation | None:
        """What a callback would continue from now, or None when there is nothing to keep."""
        if not self.retaining:
            return None
        prior = self.context.prior
        earlier = prior.original_messages() if prior is not None else []
        current = self._current_messages()
        if not current and not earlier:
            return None
        if not any(m.message.get("role") == "user" for m in [*earlier, *current]):
            return None  # nothing was asked: nothing to continue
        messages = trim_to_turns([*earlier, *current], self.max_turns)
        summaries = []
        if prior is not None and prior.active and prior.conversation.summary:
            summaries.append(prior.conversation.summary)
        if self.context.summary:
            summaries.append(self.context.summary)
        escalation = self.escalation
        if escalation is None and prior is not None and prior.active:
            escalation = prior.conversation.escalation
        notes = dict(prior.conversation.notes) if prior is not None and prior.active else {}
        notes.update(self.notes)
        topic = self.topic_of([m.message for m in messages]) if self.topic_of else None
        if topic is None and prior is not None and prior.active:
            topic = prior.topic
        return ResumableConversation(
            call_id=self.continuity.call_id,
            saved_at=time.time(),
            messages=messages,
            summary=_scrub(" ".join(summaries)) or None,
            topic=topic,
            locale=self.locale,
            consent=self.consent_source or ("not_required" if not self.require_consent else None),
            escalation=escalation,
            notes=notes,
        )

    async def save(self) -> bool:
        """Save the snapshot if it changed since the last save; True when written."""
        if not self.continuity.owner:
            return False
        conversation = self.snapshot()
        if conversation is None:
            return False
        signature = (
            len(conversation.messages),
            repr([m.message for m in conversation.messages[-2:]]),
            conversation.summary,
            repr(conversation.escalation),
            repr(conversation.notes),
            self.continuity.owner,
        )
        if signature == self._saved_signature:
            return False
        if await self.continuity.save(conversation):
            self._saved_signature = signature
            return True
        return False

    def _current_messages(self) -> list[PriorMessage]:
        paused = self._paused_from
        entries = self.context.entries
        out: list[PriorMessage] = []
        after_tool = False  # in this turn a tool returned: later words may read it back
        for index in range(self._first, len(entries)):
            entry = entries[index]
            if id(entry) in self._excluded or (paused is not None and index >= paused):
                continue
            out.append(self._message(entry, after_tool))
            role = entry.role
            if role == "user":
                after_tool = False
            elif role == "tool":
                after_tool = True
        return out

    def _message(self, entry: ContextEntry, after_tool: bool) -> PriorMessage:
        message = _scrub_message(entry.message)
        role = entry.role
        sensitive = (
            role == "tool"
            or bool(message.get("tool_calls"))
            or (role == "assistant" and after_tool)
            or self.is_sensitive(message_text(message))
        )
        return PriorMessage(message, sensitive=sensitive, interrupted=entry.interrupted)

    async def cleanup(self) -> None:
        # However the call ended (a dropped line is a cancel): save last, then free the lease.
        await super().cleanup()
        if self._paused_from is not None:
            self._end_pause()
        await self.save()
        await self.continuity.end()


class StartOverDetector(FrameProcessor):
    """Before the user aggregator: a caller's final transcript containing one of ``phrases``
    (the bot's, per language) starts the conversation over (``ContinuityKeeper.start_over``)."""

    def __init__(self, keeper: ContinuityKeeper, phrases: Iterable[str]) -> None:
        super().__init__()
        self.keeper = keeper
        self.phrases = tuple(p.lower() for p in phrases if p.strip())

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptionFrame) and self._wants_fresh_start(frame.text):
            prior = self.keeper.context.prior
            if prior is not None and prior.active:
                self.logger.info("caller asked to start over: earlier conversation dropped")
                await self.keeper.start_over()
        await self.push_frame(frame, direction)

    def _wants_fresh_start(self, text: str) -> bool:
        said = " ".join(text.lower().split())
        return any(p in said for p in self.phrases)


def trim_to_turns(messages: list[PriorMessage], max_turns: int) -> list[PriorMessage]:
    """The last ``max_turns`` turns (a turn starts at a user message), valid for OpenAI: every
    tool call followed by its result, no result without its call."""
    starts = [i for i, m in enumerate(messages) if m.message.get("role") == "user"]
    if len(starts) > max_turns:
        messages = messages[starts[-max_turns] :]
    out: list[PriorMessage] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        i += 1
        if m.message.get("role") == "tool":
            continue  # an orphan: results are taken right after their call below
        out.append(m)
        calls = m.message.get("tool_calls") or []
        if not calls:
            continue
        results: dict[str, PriorMessage] = {}
        while i < len(messages) and messages[i].message.get("role") == "tool":
            results[str(messages[i].message.get("tool_call_id"))] = messages[i]
            i += 1
        for call in calls:
            cid = str(call.get("id"))
            out.append(
                results.get(cid)
                or PriorMessage(
                    {"role": "tool", "tool_call_id": cid, "content": INTERRUPTED_CALL_RESULT},
                    sensitive=True,
                )
            )
    return out


def _scrub(text: str) -> str:
    return redact_card_numbers(text)[0] if text else text


def _scrub_message(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if isinstance(out.get("content"), str):
        out["content"] = _scrub(out["content"])
    elif isinstance(out.get("content"), list):
        out["content"] = message_text(out)  # a plain string is enough to continue from
        out["content"] = _scrub(out["content"])
    if out.get("tool_calls"):
        calls = []
        for call in out["tool_calls"]:
            fn = dict(call.get("function", {}))
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = _scrub(fn["arguments"])
            calls.append(dict(call, function=fn))
        out["tool_calls"] = calls
    return out
