"""LLMContext: rolling window of the last N messages, summary prepended ahead of time, valid tool
sequences."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from voxpipe.processors.aggregators.context import (
    INTERRUPTED_CALL_RESULT,
    LLMContext,
    Summarizer,
    render_transcript,
)


class RecordingSummarizer:
    """Summarizes to a marker naming the caller lines it saw; can be held or made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], str | None]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def summarize(self, messages: Sequence[dict[str, Any]], previous: str | None) -> str:
        self.calls.append((list(messages), previous))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("summarizer down")
        said = [m["content"] for m in messages if m["role"] == "user"]
        return " | ".join(([previous] if previous else []) + said)


def add_turns(ctx: LLMContext, start: int, stop: int) -> None:
    for i in range(start, stop):
        ctx.add_user_message(f"u{i}")
        ctx.add_assistant_message(f"a{i}")


def users(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def conversation(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] != "system"]


def test_window_sends_the_last_8_messages_and_the_system_prompt() -> None:
    # The spec's "8 turns (4 caller, 4 AI)": the last 8 messages, not 8 exchanges (16).
    ctx = LLMContext("You are a helpful agent.", max_turns=8)
    add_turns(ctx, 1, 13)
    w = ctx.window_messages()
    assert w[0] == {"role": "system", "content": "You are a helpful agent."}
    assert [m["content"] for m in conversation(w)] == [
        x for i in range(9, 13) for x in (f"u{i}", f"a{i}")
    ]
    assert len(ctx.messages) == 24  # the full history is kept for transcripts


def test_a_tool_call_counts_with_its_results_and_is_never_split_from_them() -> None:
    ctx = LLMContext(None, max_turns=3)
    ctx.add_user_message("where is order 7")
    ctx.add_assistant_message("Let me look.")
    ctx.add_tool_call("c1", "order_status", {"order": "7"})
    ctx.add_tool_call("c2", "eta", {})
    ctx.add_tool_result("c1", "order_status", {}, '"shipped"')
    ctx.add_tool_result("c2", "eta", {}, '"tomorrow"')
    ctx.add_assistant_message("It ships tomorrow.")
    ctx.add_user_message("thanks")
    # Messages: user, assistant+calls, tool, tool, assistant, user. Three units from the end
    # are the call (with both results), the answer and "thanks".
    w = ctx.window_messages()
    assert [(m["role"], m.get("tool_call_id")) for m in w] == [
        ("assistant", None),
        ("tool", "c1"),
        ("tool", "c2"),
        ("assistant", None),
        ("user", None),
    ]
    ctx.add_assistant_message("You're welcome.")
    # One more message: the call leaves the window with its results, never one without other.
    w = ctx.window_messages()
    assert [m["role"] for m in w] == ["assistant", "user", "assistant"]
    assert all(m["role"] != "tool" for m in w)


async def test_while_a_summary_is_pending_the_cap_still_holds() -> None:
    s = RecordingSummarizer()
    s.gate = asyncio.Event()  # the summarizer never answers in time
    ctx = LLMContext(None, max_turns=4, summarizer=s)
    for i in range(1, 20):
        add_turns(ctx, i, i + 1)
        job = ctx.summary_job()
        if job is not None:
            asyncio.get_running_loop().create_task(job)
        assert len(conversation(ctx.window_messages())) <= 4
    assert [m["content"] for m in ctx.window_messages()] == ["u18", "a18", "u19", "a19"]
    s.gate.set()
    await asyncio.sleep(0)  # let the summary finish (no timing involved: it was released)
    await asyncio.sleep(0)
    assert ctx.summary is not None
    assert len(conversation(ctx.window_messages())) == 4


async def test_summary_is_made_ahead_and_prepended() -> None:
    s = RecordingSummarizer()
    assert isinstance(s, Summarizer)
    ctx = LLMContext("Be brief.", max_turns=8, summarizer=s)
    add_turns(ctx, 1, 4)  # 6 messages
    ctx.add_user_message("u4")  # 7: the bot starts answering now
    # Its reply and the caller's next message will push "u1" out: summarize it now.
    job = ctx.summary_job()
    assert job is not None and ctx.summary_job() is None  # one at a time
    await job
    assert s.calls[0][0] == [{"role": "user", "content": "u1"}]
    ctx.add_assistant_message("a4")
    ctx.add_user_message("u5")
    w = ctx.window_messages()
    assert w[0] == {
        "role": "system",
        "content": "Be brief.\n\nSummary of the earlier conversation: u1",
    }
    assert [m["content"] for m in conversation(w)] == [
        "a1", "u2", "a2", "u3", "a3", "u4", "a4", "u5"
    ]  # fmt: skip
    assert sum(m["role"] == "system" for m in w) == 1
    job = ctx.summary_job()
    assert job is not None
    await job
    assert s.calls[1][1] == "u1"  # the previous summary is folded into the next
    assert ctx.summary == "u1 | u2"


async def test_a_failing_summarizer_keeps_turns_and_tries_again() -> None:
    s = RecordingSummarizer()
    s.fail = True
    ctx = LLMContext(None, max_turns=2, summarizer=s)
    add_turns(ctx, 1, 2)
    ctx.add_user_message("u2")
    await ctx.summary_job()  # type: ignore[misc]  # u1 and a1 leave with the next exchange
    assert ctx.summary is None
    s.fail = False
    job = ctx.summary_job()
    assert job is not None
    await job
    assert ctx.summary == "u1"


def test_tool_results_follow_their_calls_and_missing_ones_are_filled() -> None:
    ctx = LLMContext(None)
    ctx.add_user_message("book it and tell me the weather")
    ctx.add_assistant_message("Let me see.")
    ctx.add_tool_call("c1", "book", {"when": "7pm"})
    ctx.add_tool_call("c2", "weather", {})
    ctx.add_tool_result("c2", "weather", {}, '"rain"')
    ctx.add_user_message("thanks")  # c1 never finished (interrupted)
    ctx.add_tool_result("c9", "late", {"x": 1}, "late result")  # its call was never seen
    w = ctx.window_messages()
    roles = [(m["role"], m.get("tool_call_id")) for m in w]
    assert roles == [
        ("user", None),
        ("assistant", None),
        ("tool", "c1"),
        ("tool", "c2"),
        ("user", None),
        ("assistant", None),
        ("tool", "c9"),
    ]
    assert w[1]["content"] == "Let me see."  # the text and its calls are one message
    assert [c["id"] for c in w[1]["tool_calls"]] == ["c1", "c2"]
    assert w[1]["tool_calls"][0]["function"]["arguments"] == '{"when": "7pm"}'
    assert w[2]["content"] == INTERRUPTED_CALL_RESULT
    assert w[3]["content"] == '"rain"'
    # Copies: changing what was sent does not change the context.
    w[1]["tool_calls"].clear()
    assert len(ctx.window_messages()[1]["tool_calls"]) == 2


def test_render_transcript_for_summarizers() -> None:
    text = render_transcript(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ],
        "Before.",
    )
    assert text.splitlines() == [
        "Summary so far: Before.",
        "",
        "Conversation:",
        "Caller: Hi",
        "Assistant: Hello",
        "Assistant called f({})",
        "Tool result: ok",
    ]


def test_max_turns_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        LLMContext(None, max_turns=0)
