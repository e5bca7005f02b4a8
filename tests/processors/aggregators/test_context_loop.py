"""The context loop against FakeOpenAI over a real socket: user aggregator -> OpenAI LLM ->
(a stand-in for TTS + output transport) -> assistant aggregator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMMessagesFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines import Pipeline, PipelineTask
from voxpipe.pipelines.clock import Clock
from voxpipe.processors.aggregators import LLMContext, LLMContextAggregatorPair
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.openai import OpenAILLMService
from voxpipe.testing import run_frames
from voxpipe.testing.fakes import FakeOpenAI, FakeReply

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


class PlayedText(FrameProcessor):
    """Stands in for TTS + output transport: each text fragment is 'played' at once and comes
    out as a TTSTextFrame; after ``interrupt_after`` fragments the caller barges in."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        super().__init__()
        self.interrupt_after = interrupt_after
        self.played = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWN and isinstance(frame, LLMResponseStartFrame):
            # The first audio of the reply "reaches the wire": the output transport tells
            # the processors upstream, as the real one does.
            await self.push_frame(BotStartedSpeakingFrame(), UP)
        if direction is DOWN and isinstance(frame, LLMTextFrame | TTSSpeakFrame):
            await self.push_frame(TTSTextFrame(frame.text))
            self.played += 1
            if self.played == self.interrupt_after:
                await self.request_interruption("caller barged in")
            return
        await self.push_frame(frame, direction)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll a condition the code under test sets on its own schedule (guarded by a timeout)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


class Call:
    """Drives a pipeline turn by turn on the real clock, waiting for each reply to end."""

    def __init__(self, processors: list[FrameProcessor]) -> None:
        self.task = PipelineTask(Pipeline(processors), clock=Clock())
        self.replies = 0
        self.task.on_downstream(self._seen)
        self.runner: asyncio.Task[None] | None = None

    def _seen(self, frame: Frame) -> None:
        if isinstance(frame, LLMResponseEndFrame):
            self.replies += 1

    async def __aenter__(self) -> Call:
        self.runner = asyncio.create_task(self.task.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.task.stop_when_done()
        assert self.runner is not None
        await asyncio.wait_for(self.runner, 5.0)

    async def say(self, text: str) -> None:
        expected = self.replies + 1
        for f in (UserStartedSpeakingFrame(), TranscriptionFrame(text), UserStoppedSpeakingFrame()):
            await self.task.queue_frame(f)
        await until(lambda: self.replies >= expected)


def last_reply_request(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The messages of the last streaming (reply) request, skipping summary requests."""
    return [q.json for q in fake.requests if q.json.get("stream")][-1]["messages"]


def user_turns(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


async def test_eight_message_window_with_summary_made_off_the_critical_path() -> None:
    summary_gate = asyncio.Event()
    summaries: list[dict[str, Any]] = []

    async def script(body: dict[str, Any]) -> FakeReply | str:
        if not body.get("stream"):  # the summary request
            summaries.append(body)
            await summary_gate.wait()
            return f"Summary {len(summaries)}."
        said = body["messages"][-1]["content"]
        return f"Reply to {said}."

    def conversation(sent: list[dict[str, Any]]) -> list[str]:
        return [m["content"] for m in sent if m["role"] != "system"]

    async with FakeOpenAI(replies=script, first_token_delay=0.0) as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="gpt-4o-mini", first_token_timeout=2
        )
        ctx = LLMContext("You are a booking agent.", max_turns=8, summarizer=llm)
        pair = LLMContextAggregatorPair(ctx)
        async with Call([pair.user(), llm, PlayedText(), pair.assistant()]) as call:
            for i in range(1, 5):
                await call.say(f"turn {i}")
            # The reply to turn 4 started (7 messages): it and turn 5 will push "turn 1" out
            # of the 8-message window, so its summary was asked for, and is held by the fake;
            # the reply to turn 4 did not wait for it.
            await fake.wait_for(lambda: len(summaries) == 1)
            assert call.replies == 4
            asked = summaries[0]["messages"][-1]["content"]
            assert "Caller: turn 1" in asked and "Reply to turn 1" not in asked

            await call.say("turn 5")  # the summary is still pending: the cap holds anyway
            sent = last_reply_request(fake)
            assert sent[0] == {"role": "system", "content": "You are a booking agent."}
            assert conversation(sent) == [
                "Reply to turn 1.", "turn 2", "Reply to turn 2.", "turn 3", "Reply to turn 3.",
                "turn 4", "Reply to turn 4.", "turn 5",
            ]  # fmt: skip

            summary_gate.set()
            await until(lambda: ctx.summary is not None)
            assert ctx.summary == "Summary 1."
            await call.say("turn 6")
            sent = last_reply_request(fake)
            assert sent[0]["content"].endswith("Summary of the earlier conversation: Summary 1.")
            assert len(conversation(sent)) == 8 and conversation(sent)[-1] == "turn 6"
            # What will leave next (up to "turn 3") is summarized ahead, folding in Summary 1.
            await until(lambda: ctx.summary == "Summary 2.")
            asked = summaries[1]["messages"][-1]["content"]
            assert "Summary so far: Summary 1." in asked and "Caller: turn 3" in asked

            await call.say("turn 7")
            sent = last_reply_request(fake)
            # Summary prepended in the one system message, then exactly the last 8 messages.
            assert sent[0] == {
                "role": "system",
                "content": "You are a booking agent.\n\n"
                "Summary of the earlier conversation: Summary 2.",
            }
            assert conversation(sent) == [
                "Reply to turn 3.", "turn 4", "Reply to turn 4.", "turn 5", "Reply to turn 5.",
                "turn 6", "Reply to turn 6.", "turn 7",
            ]  # fmt: skip
            assert len(sent) == 1 + 8
        # The whole conversation is kept, heard replies included.
        assert len(ctx.messages) == 14
        assert ctx.messages[-1] == {"role": "assistant", "content": "Reply to turn 7."}


async def test_interruption_mid_reply_closes_the_stream_and_keeps_only_what_was_heard() -> None:
    words = " ".join(f"w{i}" for i in range(80))
    async with FakeOpenAI(replies=[words], first_token_delay=0.0, chunk_delay=0.005) as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="m", first_token_timeout=2.0
        )
        ctx = LLMContext(None)
        ctx.add_user_message("Talk to me.")
        pair = LLMContextAggregatorPair(ctx)
        r = await run_frames(
            [llm, PlayedText(interrupt_after=4), pair.assistant()],
            [LLMMessagesFrame(ctx.window_messages())],
            clock=Clock(),
        )
        await fake.wait_for(lambda: fake.requests[0].client_disconnected, 2.0)
    assert not fake.requests[0].completed
    assert ctx.messages[-1] == {"role": "assistant", "content": "w0 w1 w2 w3"}
    assert ctx.entries[-1].interrupted
    assert any(isinstance(f, InterruptionFrame) for f in r.downstream)


async def test_tool_round_trip_is_recorded_in_the_context() -> None:
    replies = [
        FakeReply.call("lookup_order", {"order": "A17"}),
        "Your order A17 has shipped.",
        "You're welcome.",
    ]
    async with FakeOpenAI(replies=replies, first_token_delay=0.0) as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="m", first_token_timeout=2.0
        )
        llm.register_function(
            "lookup_order",
            lambda order: {"order": order, "status": "shipped"},
            {"type": "object", "properties": {"order": {"type": "string"}}},
        )
        ctx = LLMContext("Help with orders.", tools=llm.tools)
        pair = LLMContextAggregatorPair(ctx)
        async with Call([pair.user(), llm, PlayedText(), pair.assistant()]) as call:
            await call.say("Where is order A17?")
            await call.say("Thanks!")
    roles = [m["role"] for m in ctx.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    call_msg = ctx.messages[1]
    assert call_msg["tool_calls"][0]["function"]["name"] == "lookup_order"
    assert ctx.messages[2]["tool_call_id"] == call_msg["tool_calls"][0]["id"]
    # The next request carried the call and its result from the context.
    third = fake.requests[2].json["messages"]
    assert [m["role"] for m in third] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]


async def test_a_tool_round_keeps_the_window_cap_in_its_follow_up_request() -> None:
    replies = [FakeReply.call("order_status", {"order": "7"}), FakeReply.say("It ships today.")]
    async with FakeOpenAI(replies=replies, first_token_delay=0.0) as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="gpt-4o", first_token_timeout=2
        )

        @llm.function
        async def order_status(order: str) -> str:
            """Status of an order."""
            return "shipped"

        ctx = LLMContext("Be brief.", max_turns=4)
        for i in range(1, 4):
            ctx.add_user_message(f"u{i}")
            ctx.add_assistant_message(f"a{i}")
        pair = LLMContextAggregatorPair(ctx)
        async with Call([pair.user(), llm, PlayedText(), pair.assistant()]) as call:
            await call.say("where is order 7")
    first, follow_up = (q.json["messages"] for q in fake.requests)
    assert [m["content"] for m in first[1:]] == ["a2", "u3", "a3", "where is order 7"]
    # The follow-up adds the call with its result (one unit): the oldest message leaves.
    assert len([m for m in follow_up if m["role"] not in ("system", "tool")]) == 4
    assert [m.get("content") for m in follow_up[1:4]] == ["u3", "a3", "where is order 7"]
    assert [m["role"] for m in follow_up] == [
        "system", "user", "assistant", "user", "assistant", "tool"
    ]  # fmt: skip
    assert follow_up[-2]["tool_calls"][0]["function"]["name"] == "order_status"
