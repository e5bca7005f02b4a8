"""Restoring a caller's earlier conversation into a new call's LLM context, unverified.

Caller ids can be spoofed, so a restored conversation is an *unverified prior conversation*:
``ResumableContext`` sends the LLM the earlier turns with every sensitive message (anything a
tool returned, tool call arguments, what was read back from them, whatever the bot marked:
account numbers, addresses, order contents) replaced by a placeholder, and a system note
naming the topic, until the bot's verification hook calls ``PriorConversation.verify()``;
from the next request on the details and the earlier summary are sent in full.
``dismiss()`` (the caller wants to start over) drops the earlier conversation from the call.

The earlier turns are kept outside ``LLMContext.entries``: this call's transcript, its
summaries and the recorder's bookkeeping see only this call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voxpipe.processors.aggregators.context import LLMContext, Summarizer
from voxpipe.processors.llm.window import cap_messages
from voxpipe.state.continuity import MESSAGE_NOTE, PriorMessage, ResumableConversation

__all__ = [
    "WITHHELD_TEXT",
    "PriorConversation",
    "PriorNotes",
    "ResumableContext",
]

WITHHELD_TEXT = "[withheld until the caller is verified]"


@dataclass(frozen=True, slots=True)
class PriorNotes:
    """The system-note templates for a restored conversation (a bot passes its own wording).

    Placeholders: ``{topic}``, ``{count}`` (earlier messages that follow the note),
    ``{minutes}`` (since the earlier call's last activity), ``{summary}``, ``{escalation}``.
    """

    unverified: str = (
        "This phone number called before, {minutes} minute(s) ago; the {count} messages after "
        "this note are from that earlier call. Caller ids can be spoofed, so that conversation "
        "is unverified: you may say that it was about {topic}, but do not read back or confirm "
        "any detail from it (anything shown as " + WITHHELD_TEXT + " is hidden on purpose) "
        "until the caller has been verified.{escalation}"
    )
    verified: str = (
        "This phone number called before, {minutes} minute(s) ago; the {count} messages after "
        "this note are from that earlier call. The caller has been verified: you may use its "
        "details.{summary}{escalation}"
    )
    unknown_topic: str = "an earlier request"
    summary: str = " Summary of the earlier call: {summary}"
    escalation: str = " In that call a transfer to a human was requested ({reason})."
    # A message / callback number taken in the earlier call ({ending}: the callback number's
    # last digits). The message itself is a detail: only sent once the caller is verified.
    message_taken: str = (
        " In that call the caller left a message for a colleague (callback number ending "
        "{ending}): tell them we have their message and someone will call them back."
    )
    message_text: str = " Their message: {message}"


class PriorConversation:
    """A caller's earlier conversation as one call sees it: withheld details until verified."""

    def __init__(
        self,
        conversation: ResumableConversation,
        *,
        notes: PriorNotes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conversation = conversation
        self.notes = notes or PriorNotes()
        self.verified = False
        self.dismissed = False
        self._clock = clock

    @property
    def topic(self) -> str | None:
        """The bot's topic key of the earlier call (may be said before verification)."""
        return self.conversation.topic

    @property
    def active(self) -> bool:
        """True while the earlier conversation is part of this call (not started over)."""
        return not self.dismissed

    def verify(self) -> None:
        """The bot's verification step passed: send the details from the next request on."""
        self.verified = True

    def dismiss(self) -> None:
        """The caller wants to start over: the earlier conversation leaves this call."""
        self.dismissed = True

    def messages(self) -> list[dict[str, Any]]:
        """The earlier messages as the LLM may see them now."""
        if self.dismissed:
            return []
        return [
            _copy(m.message) if self.verified or not m.sensitive else _withheld(m.message)
            for m in self.conversation.messages
        ]

    def original_messages(self) -> list[PriorMessage]:
        """The earlier messages in full, for saving again at the end of this call."""
        return [] if self.dismissed else list(self.conversation.messages)

    def note(self) -> str:
        """The system note that introduces the earlier messages."""
        if self.dismissed:
            return ""
        conv = self.conversation
        minutes = max(0, round((self._clock() - conv.saved_at) / 60))
        escalation = ""
        if conv.escalation and conv.escalation.get("escalated", True):
            reason = str(conv.escalation.get("reason") or "no reason given")
            escalation = self.notes.escalation.format(reason=reason)
        taken = conv.notes.get(MESSAGE_NOTE)
        if isinstance(taken, dict):
            escalation += self.notes.message_taken.format(
                ending=str(taken.get("callback_ending") or "?")
            )
            if self.verified and taken.get("message"):
                escalation += self.notes.message_text.format(message=str(taken["message"]))
        values = {
            "topic": conv.topic or self.notes.unknown_topic,
            "count": len(conv.messages),
            "minutes": minutes,
            "escalation": escalation,
            "summary": "",
        }
        if not self.verified:
            return self.notes.unverified.format(**values)
        if conv.summary:
            values["summary"] = self.notes.summary.format(summary=conv.summary)
        return self.notes.verified.format(**values)


class ResumableContext(LLMContext):
    """An ``LLMContext`` that may start from a caller's earlier conversation (``prior``).

    ``window_messages()`` is the plain context's window with the prior conversation's note
    appended to the system message and its messages placed before this call's.
    """

    def __init__(
        self,
        system_prompt: str | None = None,
        *,
        messages: Sequence[dict[str, Any]] = (),
        tools: list[dict[str, Any]] | None = None,
        max_turns: int = 8,
        summarizer: Summarizer | None = None,
        prior: PriorConversation | None = None,
    ) -> None:
        super().__init__(
            system_prompt,
            messages=messages,
            tools=tools,
            max_turns=max_turns,
            summarizer=summarizer,
        )
        self.prior = prior

    def window_messages(self) -> list[dict[str, Any]]:
        out = super().window_messages()
        prior = self.prior
        if prior is None or not prior.active:
            return out
        note = prior.note()
        earlier = prior.messages()
        if out and out[0].get("role") == "system":
            system = dict(out[0])
            system["content"] = f"{system.get('content') or ''}\n\n{note}".strip()
            merged = [system, *earlier, *out[1:]]
        else:
            merged = [{"role": "system", "content": note}, *earlier, *out]
        # The earlier call's messages share the window's cap (CONTEXT_TURNS messages), oldest
        # first to go, a tool call never split from its results.
        return cap_messages(merged, self.max_turns)


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if out.get("tool_calls"):
        out["tool_calls"] = [
            dict(c, function=dict(c.get("function", {}))) for c in out["tool_calls"]
        ]
    return out


def _withheld(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with its content (and tool-call arguments) replaced by the placeholder."""
    out = _copy(message)
    role = out.get("role")
    if role == "tool":
        out["content"] = json.dumps({"withheld": WITHHELD_TEXT})
        return out
    if out.get("content") is not None:
        out["content"] = WITHHELD_TEXT
    for call in out.get("tool_calls") or ():
        call["function"]["arguments"] = "{}"
    return out
