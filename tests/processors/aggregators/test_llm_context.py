"""LLMContext: rolling window of turns, summary prepended ahead of time, valid tool sequences."""

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


def test_window_keeps_the_last_n_turns_and_the_system_prompt() -> None:
    ctx = LLMContext("You are a helpful agent.", max_turns=8)
    add_turns(ctx, 1, 13)
    w = ctx.window_messages()
    assert w[0] == {"role": "system", "content": "You are a helpful agent."}
    # No summarizer: turns beyond the window are simply dropped.
    assert users(w) == [f"u{i}" for i in range(5, 13)]
    assert w[1] == {"role": "user", "content": "u5"}
    assert len(ctx.messages) == 24  # the full history is kept for transcripts


def test_while_no_summary_comes_at_most_twice_the_window_is_sent() -> None:
    ctx = LLMContext(None, max_turns=3, summarizer=RecordingSummarizer())
    add_turns(ctx, 1, 20)
    assert users(ctx.window_messages()) == [f"u{i}" for i in range(14, 20)]
    ctx = LLMContext(None, max_turns=3, max_unsummarized_turns=0, summarizer=RecordingSummarizer())
    add_turns(ctx, 1, 20)
    assert users(ctx.window_messages()) == ["u17", "u18", "u19"]


async def test_summary_is_made_one_turn_ahead_and_prepended() -> None:
    s = RecordingSummarizer()
    assert isinstance(s, Summarizer)
    ctx = LLMContext("Be brief.", max_turns=8, summarizer=s)
    for i in range(1, 8):
        add_turns(ctx, i, i + 1)
        assert ctx.summary_job() is None  # nothing will leave the window yet
    ctx.add_user_message("u8")
    job = ctx.summary_job()  # the 9th turn will push turn 1 out: summarize it now
    assert job is not None and ctx.summary_job() is None  # one at a time
    await job
    assert s.calls[0][0] == [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
    ]
    ctx.add_assistant_message("a8")
    ctx.add_user_message("u9")
    w = ctx.window_messages()
    assert w[0] == {
        "role": "system",
        "content": "Be brief.\n\nSummary of the earlier conversation: u1",
    }
    assert users(w) == [f"u{i}" for i in range(2, 10)]  # exactly 8 turns verbatim
    assert sum(m["role"] == "system" for m in w) == 1
    job = ctx.summary_job()
    assert job is not None
    await job
    assert s.calls[1][1] == "u1"  # the previous summary is folded into the next
    assert ctx.summary == "u1 | u2"


async def test_turns_stay_verbatim_until_a_summary_covers_them() -> None:
    s = RecordingSummarizer()
    s.gate = asyncio.Event()
    ctx = LLMContext(None, max_turns=2, summarizer=s)
    add_turns(ctx, 1, 2)
    ctx.add_user_message("u2")
    task = asyncio.create_task(ctx.summary_job())  # type: ignore[arg-type]
    ctx.add_assistant_message("a2")
    ctx.add_user_message("u3")
    # The summary of turn 1 is still being made: nothing is lost meanwhile.
    assert users(ctx.window_messages()) == ["u1", "u2", "u3"]
    s.gate.set()
    await task
    assert users(ctx.window_messages()) == ["u2", "u3"]
    assert "Summary of the earlier conversation: u1" in ctx.window_messages()[0]["content"]


async def test_a_failing_summarizer_keeps_turns_and_tries_again() -> None:
    s = RecordingSummarizer()
    s.fail = True
    ctx = LLMContext(None, max_turns=2, summarizer=s)
    add_turns(ctx, 1, 2)
    ctx.add_user_message("u2")
    await ctx.summary_job()  # type: ignore[misc]
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
