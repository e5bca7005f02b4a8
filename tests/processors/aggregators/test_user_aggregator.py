"""UserContextAggregator: final transcripts of a turn become one user message and one request."""

from __future__ import annotations

from voxpipe.frames import (
    Frame,
    InterimTranscriptionFrame,
    LLMMessagesFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.testing import RunResult, Sleep, run_frames


def requests(r: RunResult) -> list[tuple[float, LLMMessagesFrame]]:
    return [
        (t, f)
        for t, f in zip(r.downstream_times, r.downstream, strict=True)
        if isinstance(f, LLMMessagesFrame)
    ]


def turn(*frames: Frame | Sleep) -> list[Frame | Sleep]:
    return [UserStartedSpeakingFrame(), *frames, UserStoppedSpeakingFrame()]


async def test_finals_of_a_turn_become_one_user_message_at_turn_end() -> None:
    ctx = LLMContext("Be brief.", tools=[{"type": "function", "function": {"name": "f"}}])
    agg = UserContextAggregator(ctx)
    r = await run_frames(
        [agg],
        turn(
            InterimTranscriptionFrame("I'd like"),
            TranscriptionFrame("I'd like to book"),
            InterimTranscriptionFrame("a table"),
            TranscriptionFrame("a table for two."),
            Sleep(0.1),
        ),
    )
    ((_, req),) = requests(r)
    assert req.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I'd like to book a table for two."},
    ]
    assert req.tools == ctx.tools
    # Interim transcripts go on for display, and finals too (transcripts, observers).
    assert [f.text for f in r.of_type(InterimTranscriptionFrame)] == ["I'd like", "a table"]
    names = [type(f).__name__ for f in r.downstream]
    assert names.index("UserStoppedSpeakingFrame") < names.index("LLMMessagesFrame")
    assert ctx.messages[-1] == {"role": "user", "content": "I'd like to book a table for two."}


async def test_late_final_after_stop_is_sent_as_soon_as_it_arrives() -> None:
    agg = UserContextAggregator(LLMContext(None), transcript_timeout_s=1.0)
    r = await run_frames(
        [agg],
        [
            *turn(InterimTranscriptionFrame("what time")),
            Sleep(0.3),
            TranscriptionFrame("What time do you open?"),
            Sleep(2.0),
        ],
    )
    ((t, req),) = requests(r)
    assert req.messages[-1]["content"] == "What time do you open?"
    stopped = next(
        t0
        for t0, f in zip(r.downstream_times, r.downstream, strict=True)
        if isinstance(f, UserStoppedSpeakingFrame)
    )
    assert abs((t - stopped) - 0.3) < 1e-6  # when the final came, not at the timeout


async def test_a_final_followed_by_an_interim_waits_for_the_rest() -> None:
    agg = UserContextAggregator(LLMContext(None), transcript_timeout_s=1.0)
    r = await run_frames(
        [agg],
        [
            *turn(TranscriptionFrame("I want to book"), InterimTranscriptionFrame("a tab")),
            Sleep(0.2),
            TranscriptionFrame("a table."),
            Sleep(2.0),
        ],
    )
    ((_, req),) = requests(r)
    assert req.messages[-1]["content"] == "I want to book a table."


async def test_interim_never_finalised_sends_the_finals_at_the_timeout() -> None:
    agg = UserContextAggregator(LLMContext(None), transcript_timeout_s=0.5)
    r = await run_frames(
        [agg],
        [*turn(TranscriptionFrame("Hello"), InterimTranscriptionFrame("um")), Sleep(2.0)],
    )
    ((t, req),) = requests(r)
    assert req.messages[-1]["content"] == "Hello"


async def test_speech_with_no_transcript_sends_nothing() -> None:
    ctx = LLMContext(None)
    r = await run_frames([UserContextAggregator(ctx)], [*turn(Sleep(0.4)), Sleep(3.0)])
    assert requests(r) == [] and ctx.messages == []


async def test_speaking_again_while_waiting_joins_the_same_turn() -> None:
    agg = UserContextAggregator(LLMContext(None), transcript_timeout_s=1.0)
    r = await run_frames(
        [agg],
        [
            *turn(InterimTranscriptionFrame("so")),
            Sleep(0.2),
            *turn(TranscriptionFrame("So, um"), TranscriptionFrame("tomorrow at six.")),
            Sleep(2.0),
        ],
    )
    ((_, req),) = requests(r)
    assert req.messages[-1]["content"] == "So, um tomorrow at six."


async def test_finals_without_any_vad_turn_are_sent_after_a_pause() -> None:
    agg = UserContextAggregator(LLMContext(None), idle_delay_s=0.5)
    r = await run_frames(
        [agg],
        [TranscriptionFrame("Yes"), Sleep(0.2), TranscriptionFrame("please."), Sleep(1.0)],
    )
    ((t, req),) = requests(r)
    assert req.messages[-1]["content"] == "Yes please."
    assert abs(t - r.downstream_times[0] - 0.5) < 1e-6


async def test_each_turn_is_a_new_request_with_the_history() -> None:
    ctx = LLMContext(None)
    agg = UserContextAggregator(ctx)
    r = await run_frames(
        [agg],
        [*turn(TranscriptionFrame("One.")), *turn(TranscriptionFrame("Two."))],
    )
    reqs = [f for _, f in requests(r)]
    assert [len(f.messages) for f in reqs] == [1, 2]
    assert reqs[1].messages[-1]["content"] == "Two."


async def test_speech_before_the_reply_is_heard_interrupts_it_and_a_cough_resends() -> None:
    from voxpipe.frames import FrameDirection, InterruptionRequestFrame, LLMMessagesFrame
    from voxpipe.frames import TranscriptionFrame as TF
    from voxpipe.frames import UserStartedSpeakingFrame as Started
    from voxpipe.frames import UserStoppedSpeakingFrame as Stopped
    from voxpipe.processors.aggregators.context import LLMContext
    from voxpipe.processors.aggregators.user import UserContextAggregator
    from voxpipe.testing import Sleep, run_frames

    agg = UserContextAggregator(LLMContext(system_prompt="be brief"), transcript_timeout_s=0.5)
    r = await run_frames(
        [agg],
        [
            Started(),
            TF("what are your hours"),
            Stopped(),
            Sleep(0.1),
            Started(),  # no bot audio yet: the pending reply is stale
            Sleep(0.3),
            Stopped(),  # ... and it was only a cough: no transcript
            Sleep(1.0),
        ],
    )
    requests = r.of_type(LLMMessagesFrame)
    assert len(requests) == 2
    assert requests[0].messages == requests[1].messages
    assert len(r.of_type(InterruptionRequestFrame, FrameDirection.UPSTREAM)) == 1
