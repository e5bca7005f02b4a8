"""Escalation to a human: on request, on a repeated question, on strong negative sentiment."""

from __future__ import annotations

from voxpipe.frames import TranscriptionFrame, TTSSpeakFrame
from voxpipe.processors.aggregators import LLMContext
from voxpipe.processors.policy.escalation import Escalation, EscalationPolicy
from voxpipe.testing import run_frames


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
    assert passed == ["where is my order", "hello? a human please"]
    assert [e.message["content"] for e in context.entries] == ["I want to talk to a real person"]


async def test_same_question_three_times_escalates() -> None:
    log, passed, _ = await run(
        ["what is my balance", "What is my balance?", "um what is my balance please"]
    )
    assert [r for r, _ in log.transfers] == ["same question asked 3 times"]
    assert len(passed) == 2


async def test_strong_negative_sentiment_escalates_but_mild_does_not() -> None:
    log, _, _ = await run(["this is a bit annoying", "ok thanks"])
    assert log.transfers == []
    log, _, _ = await run(["this is ridiculous, absolutely useless service"])
    assert [r for r, _ in log.transfers] == ["caller is upset"]
    log, _, _ = await run(["that was terrible", "where is my order", "the worst"])
    assert [r for r, _ in log.transfers] == ["caller is upset"]


async def test_a_travel_agent_is_not_a_request_for_one() -> None:
    log, _, _ = await run(["I booked through my travel agent last week"])
    assert log.transfers == []
