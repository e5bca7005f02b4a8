"""LLMContext: the conversation of one call, and the window of it the LLM is sent.

The full history is kept (for transcripts); the LLM gets the system prompt, a summary of the
older conversation, and the last ``max_turns`` conversation *messages* verbatim: the spec's
"8 turns (4 caller, 4 AI)" is the last 8 messages, so ``max_turns`` counts messages, not
exchanges. An assistant message that calls tools counts once with the results of its calls,
and the two are never split (a result without its call, or a call without its result, is
invalid for the provider).

Summaries are made by a ``Summarizer`` (the LLM service itself) in the background, ahead of
time: when the bot starts answering, the messages that the reply and the caller's next message
will push out of the window are summarized, so the summary is normally ready before it is
needed. The cap holds whether or not it is: messages that left the window before a summary
covers them are left out of the prompt until it does (a slow summarizer costs a little memory
of the conversation for a turn, never a longer prompt, the reply's latency, nor the transcript).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

SUMMARY_INSTRUCTIONS = (
    "You summarize the earlier part of a phone conversation between a caller and a voice "
    "assistant, for the assistant's own memory. Keep facts the caller gave (names, numbers, "
    "dates, choices), what was asked and answered, what tools returned and what is still "
    "open. Write at most five short sentences in plain text, no lists."
)

# Messages added before the next request: the reply now being spoken and the caller's next one.
_AHEAD = 2

INTERRUPTED_CALL_RESULT = '{"error": "no result: the call was interrupted or is still running"}'


@runtime_checkable
class Summarizer(Protocol):
    """Something that condenses older conversation turns into a short summary."""

    async def summarize(
        self, messages: Sequence[dict[str, Any]], previous_summary: str | None
    ) -> str: ...


@dataclass(slots=True)
class ContextEntry:
    """One message of the conversation (OpenAI chat format) and what we know about it."""

    message: dict[str, Any]
    interrupted: bool = False  # an assistant message the caller cut off: only what was heard

    @property
    def role(self) -> str:
        return str(self.message.get("role", ""))


@dataclass(slots=True)
class _SummaryState:
    text: str | None = None
    turns: int = 0  # how many units (``LLMContext.units``), from the call's start, it covers
    running: bool = False


def message_text(message: dict[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def render_transcript(messages: Sequence[dict[str, Any]], previous_summary: str | None) -> str:
    """A plain-text rendering of messages for a summarizer to read."""
    lines = []
    if previous_summary:
        lines.append(f"Summary so far: {previous_summary}")
        lines.append("")
    lines.append("Conversation:")
    for m in messages:
        role = m.get("role")
        text = message_text(m).strip()
        if role == "user" and text:
            lines.append(f"Caller: {text}")
        elif role == "assistant":
            if text:
                lines.append(f"Assistant: {text}")
            for call in m.get("tool_calls") or ():
                fn = call.get("function", {})
                lines.append(f"Assistant called {fn.get('name')}({fn.get('arguments', '')})")
        elif role == "tool":
            lines.append(f"Tool result: {text}")
    return "\n".join(lines)


class LLMContext:
    """Messages, system prompt and tools of one call, windowed to the last ``max_turns``
    conversation messages (an assistant message counts with its tool results)."""

    def __init__(
        self,
        system_prompt: str | None = None,
        *,
        messages: Sequence[dict[str, Any]] = (),
        tools: list[dict[str, Any]] | None = None,
        max_turns: int = 8,
        summarizer: Summarizer | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.system_prompt = system_prompt
        self.tools = tools
        # Conversation messages sent verbatim (the CONTEXT_TURNS setting; see the module doc).
        self.max_turns = max_turns
        self.summarizer = summarizer
        self.entries: list[ContextEntry] = [ContextEntry(dict(m)) for m in messages]
        self._summary = _SummaryState()

    # ------------------------------------------------------------------ adding

    def add_message(self, message: dict[str, Any], *, interrupted: bool = False) -> ContextEntry:
        """Append one message (OpenAI chat format)."""
        entry = ContextEntry(dict(message), interrupted=interrupted)
        self.entries.append(entry)
        return entry

    def add_user_message(self, text: str) -> ContextEntry:
        return self.add_message({"role": "user", "content": text})

    def add_assistant_message(self, text: str, *, interrupted: bool = False) -> ContextEntry:
        return self.add_message({"role": "assistant", "content": text}, interrupted=interrupted)

    def add_tool_call(self, call_id: str, name: str, arguments: dict[str, Any] | str) -> None:
        """Record a tool call, joining the assistant message it belongs to where there is one."""
        call = {
            "id": call_id,
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        if self._find_call(call_id) is not None:
            return
        last = self.entries[-1] if self.entries else None
        if last is not None and last.role == "assistant":
            # Text said just before the call, or parallel calls of one round: one message.
            last.message.setdefault("tool_calls", []).append(call)
            if not message_text(last.message):
                last.message["content"] = None
        else:
            self.add_message({"role": "assistant", "content": None, "tool_calls": [call]})

    def add_tool_result(
        self, call_id: str, name: str, arguments: dict[str, Any] | str, content: str
    ) -> None:
        """Record a tool result right after its call (adding the call if it was never seen)."""
        index = self._find_call(call_id)
        if index is None:
            self.add_tool_call(call_id, name, arguments)
            index = self._find_call(call_id)
            assert index is not None
        at = index + 1
        while at < len(self.entries) and self.entries[at].role == "tool":
            if self.entries[at].message.get("tool_call_id") == call_id:
                self.entries[at].message["content"] = content
                return
            at += 1
        self.entries.insert(
            at, ContextEntry({"role": "tool", "tool_call_id": call_id, "content": content})
        )

    def _find_call(self, call_id: str) -> int | None:
        for i in range(len(self.entries) - 1, -1, -1):
            for call in self.entries[i].message.get("tool_calls") or ():
                if call.get("id") == call_id:
                    return i
        return None

    # ------------------------------------------------------------------ reading

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The whole conversation so far (no system prompt, no summary)."""
        return [_copy(e.message) for e in self.entries]

    @property
    def summary(self) -> str | None:
        """The summary of the turns before the window, if one was made."""
        return self._summary.text

    def turns(self) -> list[list[ContextEntry]]:
        """Entries grouped in turns: each starts at a user message (what precedes the first
        user message, e.g. a greeting, is a turn of its own)."""
        out: list[list[ContextEntry]] = []
        for entry in self.entries:
            if entry.role == "user" or not out:
                out.append([entry])
            else:
                out[-1].append(entry)
        return out

    def units(self) -> list[list[ContextEntry]]:
        """Entries grouped in the units the window counts: one message each, except that an
        assistant message calling tools carries the results that follow it."""
        out: list[list[ContextEntry]] = []
        for entry in self.entries:
            if entry.role == "tool" and out:
                out[-1].append(entry)  # with its call (an orphan result is dropped when sent)
            else:
                out.append([entry])
        return out

    def window_messages(self) -> list[dict[str, Any]]:
        """What the LLM is sent: system prompt (+ summary) and at most ``max_turns``
        conversation messages, valid for OpenAI (every tool call followed by its result)."""
        units = self.units()
        start = max(0, len(units) - self.max_turns)
        out: list[dict[str, Any]] = []
        system = self._system_text()
        if system:
            out.append({"role": "system", "content": system})
        out.extend(_sanitize([_copy(e.message) for unit in units[start:] for e in unit]))
        return out

    def _system_text(self) -> str:
        # One system message: several, or one not in first place, break some local models'
        # chat templates.
        parts = [self.system_prompt] if self.system_prompt else []
        if self._summary.text and self._summary.turns > 0:
            parts.append(f"Summary of the earlier conversation: {self._summary.text}")
        return "\n\n".join(parts)

    # ------------------------------------------------------------------ summaries

    def summary_job(self) -> Coroutine[Any, Any, None] | None:
        """A coroutine that summarizes the messages leaving the window, or None when there is
        nothing to do (or a summary is already being made). Run it off the critical path."""
        state = self._summary
        if self.summarizer is None or state.running:
            return None
        units = self.units()
        # Ahead of time: what the reply being spoken and the caller's next message will push
        # out of the window, so the summary is ready by then (the caller speaks for seconds; a
        # summary takes less). Never the newest message, whose reply is still to come.
        upto = min(len(units) + _AHEAD - self.max_turns, len(units) - 1)
        if upto <= state.turns:
            return None
        old = [_copy(e.message) for unit in units[state.turns : upto] for e in unit]
        state.running = True
        return self._summarize(old, upto, state.text)

    async def _summarize(
        self, messages: list[dict[str, Any]], upto: int, previous: str | None
    ) -> None:
        state = self._summary
        try:
            assert self.summarizer is not None
            text = (await self.summarizer.summarize(messages, previous)).strip()
        except Exception as exc:
            # The next reply's start tries again.
            logger.warning("summarizing %d older messages failed: %s", upto - state.turns, exc)
            return
        finally:
            state.running = False
        if text:
            state.text = text
            state.turns = max(state.turns, upto)


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if "tool_calls" in out and out["tool_calls"] is not None:
        out["tool_calls"] = [
            dict(c, function=dict(c.get("function", {}))) for c in out["tool_calls"]
        ]
    return out


def _sanitize(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make the list valid for OpenAI: results follow their calls, no orphan results."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        i += 1
        role = m.get("role")
        if role == "tool":
            continue  # an orphan: results are consumed right after their call below
        out.append(m)
        if role != "assistant" or not m.get("tool_calls"):
            continue
        results: dict[str, dict[str, Any]] = {}
        while i < len(messages) and messages[i].get("role") == "tool":
            results[str(messages[i].get("tool_call_id"))] = messages[i]
            i += 1
        for call in m["tool_calls"]:
            cid = str(call.get("id"))
            out.append(
                results.get(cid)
                or {"role": "tool", "tool_call_id": cid, "content": INTERRUPTED_CALL_RESULT}
            )
    return out


__all__ = [
    "ContextEntry",
    "INTERRUPTED_CALL_RESULT",
    "LLMContext",
    "SUMMARY_INSTRUCTIONS",
    "Summarizer",
    "message_text",
    "render_transcript",
]
