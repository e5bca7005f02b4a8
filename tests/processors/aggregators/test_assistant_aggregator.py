"""AssistantContextAggregator: the context holds what the caller heard, cut at an interruption."""

from __future__ import annotations

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    FrameDirection,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    TTSTextFrame,
)
from voxpipe.processors.aggregators import AssistantContextAggregator, LLMContext
from voxpipe.testing import run_frames

DOWN = FrameDirection.DOWNSTREAM


def words(text: str) -> list[TTSTextFrame]:
    return [TTSTextFrame(w) for w in text.split()]


async def test_heard_words_of_a_reply_become_one_assistant_message() -> None:
    ctx = LLMContext(None)
    ctx.add_user_message("Hours?")
    agg = AssistantContextAggregator(ctx)
    r = await run_frames(
        [agg],
        [
            LLMResponseStartFrame(),
            BotStartedSpeakingFrame(),
            *words("We're open nine to five ,"),
            TTSTextFrame(" every day."),
            LLMTextFrame("generated text is never recorded"),
            LLMResponseEndFrame(),
            BotStoppedSpeakingFrame(),
        ],
    )
    assert ctx.messages == [
        {"role": "user", "content": "Hours?"},
        {"role": "assistant", "content": "We're open nine to five, every day."},
    ]
    assert not ctx.entries[-1].interrupted
    assert len(r.of_type(TTSTextFrame)) == 7  # everything passes on


async def test_interruption_commits_only_what_was_heard_marked_interrupted() -> None:
    ctx = LLMContext(None)
    ctx.add_user_message("Tell me about your menu.")
    agg = AssistantContextAggregator(ctx)
    await run_frames(
        [agg],
        [
            LLMResponseStartFrame(),
            *words("We have pasta, pizza"),
            InterruptionFrame(),
            # Whatever the pipeline still delivers of the old reply is not part of it.
            LLMResponseEndFrame(),
        ],
    )
    assert ctx.messages[-1] == {"role": "assistant", "content": "We have pasta, pizza"}
    assert ctx.entries[-1].interrupted
    assert len(ctx.messages) == 2


async def test_interrupted_before_anything_was_heard_adds_nothing() -> None:
    ctx = LLMContext(None)
    ctx.add_user_message("Hi")
    await run_frames(
        [AssistantContextAggregator(ctx)], [LLMResponseStartFrame(), InterruptionFrame()]
    )
    assert ctx.messages == [{"role": "user", "content": "Hi"}]


async def test_the_message_grows_as_words_are_heard() -> None:
    ctx = LLMContext(None)
    agg = AssistantContextAggregator(ctx)
    await agg.process_frame(LLMResponseStartFrame(), DOWN)
    await agg.process_frame(TTSTextFrame("Hello"), DOWN)
    assert ctx.messages == [{"role": "assistant", "content": "Hello"}]
    await agg.process_frame(TTSTextFrame("there."), DOWN)
    assert ctx.messages == [{"role": "assistant", "content": "Hello there."}]
    assert agg.heard_text == "Hello there."


async def test_lines_outside_a_response_are_recorded_and_closed_when_the_bot_stops() -> None:
    ctx = LLMContext(None)
    agg = AssistantContextAggregator(ctx)
    await run_frames(
        [agg],
        [
            BotStartedSpeakingFrame(),
            *words("Hello! This call may be recorded."),
            BotStoppedSpeakingFrame(),
            *words("Press one to agree."),
            BotStoppedSpeakingFrame(),
        ],
    )
    assert ctx.messages == [
        {"role": "assistant", "content": "Hello! This call may be recorded."},
        {"role": "assistant", "content": "Press one to agree."},
    ]


async def test_tool_calls_and_results_are_recorded_in_order() -> None:
    ctx = LLMContext(None)
    ctx.add_user_message("Weather in Paris?")
    agg = AssistantContextAggregator(ctx)
    await run_frames(
        [agg],
        [
            LLMResponseStartFrame(),
            *words("Let me check."),
            FunctionCallInProgressFrame("call_1", "get_weather", {"city": "Paris"}),
            FunctionCallResultFrame("call_1", "get_weather", {"city": "Paris"}, {"sky": "clear"}),
            *words("It's clear."),
            LLMResponseEndFrame(),
        ],
    )
    assert ctx.messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
        {"role": "assistant", "content": "It's clear."},
    ]


async def test_words_after_a_new_user_message_start_a_new_assistant_message() -> None:
    # Interruptions off: the caller's turn lands while the bot is still talking.
    ctx = LLMContext(None)
    agg = AssistantContextAggregator(ctx)
    await agg.process_frame(TTSTextFrame("One"), DOWN)
    ctx.add_user_message("Stop.")
    await agg.process_frame(TTSTextFrame("two."), DOWN)
    assert ctx.messages == [
        {"role": "assistant", "content": "One"},
        {"role": "user", "content": "Stop."},
        {"role": "assistant", "content": "two."},
    ]
