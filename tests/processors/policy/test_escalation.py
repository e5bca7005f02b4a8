"""Escalation to a human: on request, on a repeated question, on strong negative sentiment."""

from __future__ import annotations

import asyncio
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    EscalationEndedFrame,
    EscalationStartedFrame,
    Frame,
    FrameDirection,
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
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.openai import OpenAILLMService
from voxpipe.processors.llm.scripted import Intent, ScriptedLLMService
from voxpipe.processors.policy.escalation import (
    ESCALATE_TOOL,
    Escalation,
    EscalationParams,
    EscalationPolicy,
    EscalationState,
)
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.fakes import FakeOpenAI

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


class Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self.transfers: list[tuple[str, str]] = []

    async def record(self, reason: str, summary: str) -> None:
        self.records.append((reason, summary))

    async def transfer(self, reason: str, summary: str) -> None:
        assert self.records, "the escalation is recorded (agent briefed) before the transfer"
        self.transfers.append((reason, summary))


async def run(texts: list[str]) -> tuple[Log, list[str], LLMContext]:
    log = Log()
    context = LLMContext()
    esc = Escalation(record=log.record, transfer=log.transfer)
    r = await run_frames([EscalationPolicy(esc, context)], [TranscriptionFrame(t) for t in texts])
    passed = [f.text for f in r.of_type(TranscriptionFrame)]
    spoken = [f.text for f in r.of_type(TTSSpeakFrame)]
    assert len(spoken) == len(log.transfers)
    return log, passed, context


async def test_explicit_request_for_a_person_escalates_once() -> None:
    log, passed, context = await run(
        ["where is my order", "I want to talk to a real person", "hello? a human please"]
    )
    assert [r for r, _ in log.transfers] == ["caller asked for a person"]
    assert "where is my order" in log.transfers[0][1]
    # Every word goes on (the user aggregator keeps them without asking for a reply).
    assert passed == [
        "where is my order",
        "I want to talk to a real person",
        "hello? a human please",
    ]
    assert context.entries == []


async def test_same_question_three_times_escalates() -> None:
    log, passed, _ = await run(
        ["what is my balance", "What is my balance?", "um what is my balance please"]
    )
    assert [r for r, _ in log.transfers] == ["same question asked 3 times"]
    assert len(passed) == 3


async def test_strong_negative_sentiment_escalates_but_mild_does_not() -> None:
    log, _, _ = await run(["this is a bit annoying", "ok thanks"])
    assert log.transfers == []
    # One strongly negative utterance is not enough; a second one in the call is.
    log, _, _ = await run(["this is ridiculous, absolutely useless service"])
    assert log.transfers == []
    log, _, _ = await run(
        ["this is ridiculous, absolutely useless service", "where is my order", "I am so angry"]
    )
    assert [r for r, _ in log.transfers] == ["caller is upset"]
    # One very strong one is.
    log, _, _ = await run(["I hate this, a complete waste of time, worst company ever!!"])
    assert [r for r, _ in log.transfers] == ["caller is upset"]
    # Negated: not an upset caller.
    log, _, _ = await run(["not terrible, not the worst", "not terrible, not the worst"])
    assert log.transfers == []


async def test_a_travel_agent_is_not_a_request_for_one() -> None:
    log, _, _ = await run(["I booked through my travel agent last week"])
    assert log.transfers == []


# ---------------------------------------------------------------- no LLM reply during a hand-over


class PlayedText(FrameProcessor):
    """Stands in for TTS + output transport: LLM text and spoken lines are 'played' at once."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWN and isinstance(frame, LLMResponseStartFrame):
            await self.push_frame(BotStartedSpeakingFrame(), UP)
        if direction is DOWN and isinstance(frame, LLMTextFrame | TTSSpeakFrame):
            await self.push_frame(TTSTextFrame(frame.text))
            return
        await self.push_frame(frame, direction)


async def test_the_second_half_of_a_request_for_a_person_starts_no_llm_request() -> None:
    """The cloud LLM over a real socket: the handoff line is heard once, and the rest of the
    utterance (a second final) reaches the context but never the LLM, until the transfer
    fails; then the caller is answered again."""
    transfers: list[str] = []

    async def transfer(reason: str, summary: str) -> None:
        transfers.append(reason)  # the carrier moves the call; it has not answered yet

    async with FakeOpenAI(replies=lambda body: "Sure, let me connect you.") as fake:
        llm = OpenAILLMService(
            api_key="test-key", base_url=fake.base_url, model="gpt-4o", first_token_timeout=2
        )
        context = LLMContext("You are a support agent.")
        escalation = Escalation(transfer=transfer)
        llm.register_function("escalate_to_human", escalation.escalate, ESCALATE_TOOL)
        user = UserContextAggregator(context)
        task = PipelineTask(
            Pipeline([EscalationPolicy(escalation, context), user, llm, PlayedText()]),
            clock=Clock(),
        )
        out: list[Frame] = []
        changed = asyncio.Event()

        def seen(frame: Frame) -> None:
            out.append(frame)
            changed.set()

        task.on_downstream(seen)
        runner = asyncio.create_task(task.run())
        await task.wait_started()
        for f in (
            UserStartedSpeakingFrame(),
            TranscriptionFrame("I'd like to talk to a real person please."),
            TranscriptionFrame("Can you put me through now?"),
            UserStoppedSpeakingFrame(),
        ):
            await task.inject(f)
        # The turn ended inside that last push: a request would have gone to the LLM by now.
        assert escalation.in_progress and user.replies_held
        assert [m["content"] for m in context.messages] == [
            "I'd like to talk to a real person please. Can you put me through now?"
        ]
        for f in (
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Hello?"),
            UserStoppedSpeakingFrame(),
        ):
            await task.inject(f)
        assert [f.text for f in out if isinstance(f, TTSTextFrame)] == [
            "I'm connecting you to a colleague who can help. Please hold."
        ]
        # The transfer work reports a failure: the next words are answered again.
        await task.inject(EscalationEndedFrame(transferred=False, detail="no agent free"))
        assert escalation.state is EscalationState.FAILED and not user.replies_held
        for f in (
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Still there?"),
            UserStoppedSpeakingFrame(),
        ):
            await task.inject(f)
        async with asyncio.timeout(10):
            while not any(isinstance(f, LLMResponseEndFrame) for f in out):
                changed.clear()
                await changed.wait()
        await task.stop_when_done()
        await asyncio.wait_for(runner, 10)

    # One request in the whole call: the one after the failure, knowing what was said.
    assert len(fake.requests) == 1
    users = [m["content"] for m in fake.requests[0].json["messages"] if m["role"] == "user"]
    assert users == [
        "I'd like to talk to a real person please. Can you put me through now?",
        "Hello?",
        "Still there?",
    ]
    assert transfers == ["caller asked for a person"]
    started = [f for f in out if isinstance(f, EscalationStartedFrame)]
    ended = [f for f in out if isinstance(f, EscalationEndedFrame)]
    assert len(started) == 1 and [(f.transferred, f.detail) for f in ended] == [
        (False, "no agent free")
    ]


async def _moved(reason: str, summary: str) -> None:
    """A transfer path that moved the caller to hold; an agent answers later, or never."""


async def test_after_the_llm_escalates_no_transcript_starts_a_reply_until_the_transfer_fails() -> (
    None
):
    """The scripted LLM calls ``escalate_to_human``; the caller's next words start nothing; a
    transfer that neither finishes nor fails is failed after ``transfer_timeout_s``."""
    context = LLMContext(None)
    escalation = Escalation(transfer=_moved)  # the caller was moved; no agent yet
    llm = ScriptedLLMService(
        [
            Intent(
                "supervisor",
                keywords=["supervisor"],
                reply="Of course.",
                tool="escalate_to_human",
                arguments={"reason": "asked for a supervisor", "summary": "-"},
                after_tool="Connecting you now.",
            ),
            Intent("anything", patterns=[r"\w"], reply="How can I help?"),
        ]
    )
    llm.register_function("escalate_to_human", escalation.escalate, ESCALATE_TOOL)
    policy = EscalationPolicy(escalation, context, EscalationParams(transfer_timeout_s=30))

    def turn(text: str) -> list[Any]:
        return [UserStartedSpeakingFrame(), TranscriptionFrame(text), UserStoppedSpeakingFrame()]

    r = await run_frames(
        [policy, UserContextAggregator(context), llm, PlayedText()],
        [
            *turn("is your supervisor around today"),  # ambiguous: left to the model
            Sleep(2),
            *turn("so are you putting me through"),  # during the hand-over: no reply
            Sleep(40),  # the transfer timed out: failed
            *turn("hello"),
            Sleep(2),
        ],
    )
    spoken = "".join(f.text for f in r.of_type(TTSTextFrame))
    assert spoken.replace(" ", "") == "Ofcourse.Connectingyounow.HowcanIhelp?"
    assert len(r.of_type(LLMResponseStartFrame)) == 2
    [ended] = r.of_type(EscalationEndedFrame)
    assert not ended.transferred and ended.detail == "no transfer after 30 s"
    assert "so are you putting me through" in [m["content"] for m in context.messages]


async def test_a_finished_transfer_keeps_the_bot_quiet() -> None:
    context = LLMContext(None)
    escalation = Escalation(transfer=_moved)  # the caller was moved; no agent yet
    llm = ScriptedLLMService([Intent("anything", patterns=[r"\w"], reply="How can I help?")])
    r = await run_frames(
        [EscalationPolicy(escalation, context), UserContextAggregator(context), llm, PlayedText()],
        [
            UserStartedSpeakingFrame(),
            TranscriptionFrame("I want a human"),
            UserStoppedSpeakingFrame(),
            EscalationEndedFrame(transferred=True, detail="agent joined"),
            UserStartedSpeakingFrame(),
            TranscriptionFrame("hi is this a person"),
            UserStoppedSpeakingFrame(),
            Sleep(5),
        ],
    )
    assert escalation.state is EscalationState.TRANSFERRED
    assert r.of_type(LLMResponseStartFrame) == []
    assert [f.text for f in r.of_type(TTSTextFrame)] == [EscalationParams().handoff_line]
