"""ScriptedLLMService: a dialog "LLM" from rules, for the offline stack and for tests.

Rules map the caller's intent (regular expressions or keywords) to a reply and, optionally, a
tool call. Tool calls go through the same path as a real model's: the registered function
runs, its result comes back as a tool message, and the service is run again to say the
``after_tool`` line (which may use the result). No network, no keys, deterministic.

    llm = ScriptedLLMService([
        Intent("hours", keywords=["open", "hours"], reply="We're open nine to five."),
        Intent("weather", patterns=[r"weather in (?P<city>\\w+)"], reply="Let me check {city}.",
               tool="get_weather", after_tool="It's {summary} in {city}."),
    ])

    @llm.function
    async def get_weather(city: str) -> dict[str, str]: ...

The tools are the ones registered on the service, declared once: an intent names one (or
passes the function itself), and its arguments are the pattern's named groups that are
parameters of the tool, converted to the parameter types (``int``, an ``Enum`` value matched
whatever its case, a ``list`` from "a, b and c"...).
"""

from __future__ import annotations

import itertools
import json
import re
import string
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxpipe.processors.aggregators.context import message_text
from voxpipe.processors.llm.base import ChatChunk, LLMService, ToolCallDelta

_TOKEN = re.compile(r"\s*\S+|\s+$")


@dataclass(slots=True)
class IntentMatch:
    """What matched: the intent, the caller's text and the named groups of the pattern."""

    intent: Intent
    text: str
    groups: dict[str, str] = field(default_factory=dict)


Template = str | Callable[[IntentMatch], str]


@dataclass(slots=True)
class Intent:
    """One rule: when the caller's words match, reply (and maybe call a tool).

    ``patterns`` are regular expressions searched case-insensitively; ``keywords`` match whole
    words or phrases. Templates (``reply``, ``after_tool``) are ``str.format`` strings over the
    pattern's named groups (and, for ``after_tool``, the tool result's keys and ``{result}``),
    or callables. ``tool`` is a registered tool's name (or its function); its ``arguments``
    default to the named groups that are parameters of the tool, converted to their types.
    """

    name: str
    patterns: Sequence[str] = ()
    keywords: Sequence[str] = ()
    reply: Template | None = None
    tool: str | Callable[..., Any] | None = None
    arguments: dict[str, Any] | Callable[[IntentMatch], dict[str, Any]] | None = None
    after_tool: str | Callable[[IntentMatch, Any], str] | None = None
    _compiled: list[re.Pattern[str]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled = [re.compile(p, re.IGNORECASE) for p in self.patterns]
        self._compiled += [
            re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, k.split())) + r"(?!\w)", re.I)
            for k in self.keywords
        ]
        if not self._compiled:
            raise ValueError(f"intent {self.name!r} needs at least one pattern or keyword")

    def match(self, text: str) -> IntentMatch | None:
        for rx in self._compiled:
            m = rx.search(text)
            if m is not None:
                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                return IntentMatch(self, text, groups)
        return None


class _Fields(dict[str, Any]):
    """format_map source that leaves unknown fields as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, values: dict[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), _Fields(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


class ScriptedLLMService(LLMService):
    """An ``LLMService`` whose "model" is a list of ``Intent`` rules (first match wins).

    ``default_reply`` answers what no rule matches; ``greeting`` answers a request with no
    caller message yet. ``first_token_delay`` and ``token_delay`` (seconds on the pipeline
    clock) emulate a model's latency. It also summarizes deterministically (extractive).
    """

    def __init__(
        self,
        intents: Sequence[Intent] = (),
        *,
        default_reply: str = "Sorry, I didn't catch that. Could you say it another way?",
        greeting: str | None = None,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        summary_max_chars: int = 600,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("model", "scripted")
        super().__init__(**kwargs)
        self.intents = list(intents)
        self.default_reply = default_reply
        self.greeting = greeting
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.summary_max_chars = summary_max_chars
        self._ids = itertools.count(1)
        self._calls: dict[str, IntentMatch] = {}  # tool call id -> the match that made it

    def add_intent(self, intent: Intent) -> None:
        """Add a rule after the existing ones."""
        self.intents.append(intent)

    def match(self, text: str) -> IntentMatch | None:
        """The first intent matching ``text``, if any."""
        for intent in self.intents:
            m = intent.match(text)
            if m is not None:
                return m
        return None

    # ------------------------------------------------------------------ the "model"

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        text, call = self._decide(messages)
        if self.first_token_delay > 0:
            await self.clock.sleep(self.first_token_delay)
        for i, token in enumerate(_TOKEN.findall(text)):
            if i and self.token_delay > 0:
                await self.clock.sleep(self.token_delay)
            yield ChatChunk(text=token)
        if call is not None:
            call_id, name, arguments = call
            yield ChatChunk(
                tool_calls=[ToolCallDelta(0, call_id, name, json.dumps(arguments, default=str))]
            )
        yield ChatChunk(finish_reason="tool_calls" if call else "stop")

    def _decide(
        self, messages: list[dict[str, Any]]
    ) -> tuple[str, tuple[str, str, dict[str, Any]] | None]:
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return self._after_tools(messages), None
        user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if user is None:
            return self.greeting or self.default_reply, None
        said = message_text(user)
        m = self.match(said)
        if m is None:
            return self.default_reply, None
        reply = self._render(m.intent.reply, m)
        if m.intent.tool is None:
            return reply, None
        spec = self.function_named(m.intent.tool)
        name = spec.name if spec is not None else _name_of(m.intent.tool)
        args = m.intent.arguments
        if callable(args):
            arguments = args(m)
        elif args is not None:
            arguments = dict(args)
        elif spec is not None and spec.signature is not None:
            arguments = spec.signature.from_text(m.groups)
        else:
            arguments = dict(m.groups)
        call_id = f"call_scripted_{next(self._ids)}"
        self._calls[call_id] = m
        return reply, (call_id, name, arguments)

    def _after_tools(self, messages: list[dict[str, Any]]) -> str:
        results: list[tuple[str, str]] = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            results.insert(0, (str(m.get("tool_call_id")), message_text(m)))
        lines = []
        for call_id, content in results:
            match = self._calls.get(call_id)
            if match is None or match.intent.after_tool is None:
                continue
            result: Any
            try:
                result = json.loads(content)
            except ValueError:
                result = content
            template = match.intent.after_tool
            if callable(template):
                lines.append(template(match, result))
            else:
                values: dict[str, Any] = dict(match.groups)
                if isinstance(result, dict):
                    values.update(result)
                values["result"] = content
                lines.append(_fill(template, values))
        return " ".join(line for line in lines if line)

    @staticmethod
    def _render(template: Template | None, m: IntentMatch) -> str:
        if template is None:
            return ""
        if callable(template):
            return template(m)
        return _fill(template, m.groups)

    # ------------------------------------------------------------------ summaries

    async def summarize(
        self, messages: Sequence[dict[str, Any]], previous_summary: str | None
    ) -> str:
        """An extractive summary: the first sentence of each message, newest kept on overflow."""
        parts = [previous_summary] if previous_summary else []
        for m in messages:
            role = m.get("role")
            text = _first_sentence(message_text(m))
            if role == "user" and text:
                parts.append(f"Caller: {text}")
            elif role == "assistant":
                if text:
                    parts.append(f"Assistant: {text}")
                for call in m.get("tool_calls") or ():
                    parts.append(f"Called {call.get('function', {}).get('name')}.")
            elif role == "tool" and text:
                parts.append(f"Result: {text[:80]}")
        summary = " ".join(parts)
        if len(summary) > self.summary_max_chars:
            summary = "…" + summary[-(self.summary_max_chars - 1) :]
        return summary


def _name_of(tool: str | Callable[..., Any]) -> str:
    return tool if isinstance(tool, str) else str(getattr(tool, "__name__", tool))


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = re.match(r".+?[.!?](?=\s|$)", text)
    sentence = m.group(0) if m else text
    return sentence[:120]


__all__ = ["Intent", "IntentMatch", "ScriptedLLMService"]
