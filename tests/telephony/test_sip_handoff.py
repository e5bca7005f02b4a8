"""SipHandoff's decisions over a scripted call control: next target, success, return, hang-up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from voxpipe.processors.policy.escalation import Escalation, EscalationState
from voxpipe.telephony.sip_transfer import SipHandoff, sip_targets


@dataclass
class Result:
    transferred: bool
    status: int
    detail: str


class Control:
    """Answers each REFER from a script and records what the handoff did."""

    def __init__(self, results: list[Result]) -> None:
        self.results = results
        self.referred: list[tuple[str, str]] = []
        self.said: list[str] = []
        self.ended: list[str] = []
        self.spoken = asyncio.Event()

    def watch_speech(self) -> None:
        self.spoken.clear()

    async def wait_spoken(self, start_within_s: float = 5.0, limit_s: float = 30.0) -> None:
        await self.spoken.wait()

    async def refer(self, target: str, *, brief: str = "", notify_timeout_s: float = 30.0) -> Any:
        self.referred.append((target, brief))
        return self.results.pop(0)

    async def say(self, text: str) -> None:
        self.said.append(text)

    def end_transferred(self, target: str) -> None:
        self.ended.append(target)


class Recorder:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.retaining = False


async def _run(results: list[Result]) -> tuple[Control, Recorder, Escalation, SipHandoff]:
    control, recorder = Control(results), Recorder()
    handoff = SipHandoff(
        control,
        ["sip:a@pbx", "sip:b@pbx"],
        call_id="c1",
        recorder=recorder,  # type: ignore[arg-type]
        sessions=None,  # type: ignore[arg-type]
        brief=lambda reason, summary: f"Reason: {reason}. Summary: {summary}",
        nobody_free="nobody is free",
    )
    escalation = Escalation(transfer=handoff)
    handoff.escalation = escalation
    assert (await escalation.escalate("upset", "wants a refund"))["status"] == "transferring"
    assert control.referred == []  # nothing is referred before the handoff line has played
    control.spoken.set()
    await asyncio.wait_for(handoff.done.wait(), 5)
    return control, recorder, escalation, handoff


async def test_a_refused_refer_tries_the_next_target_which_takes_the_call() -> None:
    control, recorder, escalation, _ = await _run(
        [Result(False, 603, "REFER refused: Decline"), Result(True, 200, "OK")]
    )
    assert [t for t, _ in control.referred] == ["sip:a@pbx", "sip:b@pbx"]
    assert control.referred[0][1] == "Reason: upset. Summary: wants a refund"
    assert control.ended == ["sip:b@pbx"] and control.said == []
    record = recorder.meta["escalation"]
    assert record["outcome"] == "connected" and record["connected_to"] == "sip:b@pbx"
    assert [a["result"] for a in record["attempts"]] == ["declined", "connected"]
    assert escalation.state is EscalationState.TRANSFERRED


async def test_nobody_takes_the_call_and_the_bot_has_the_caller_again() -> None:
    control, recorder, escalation, _ = await _run(
        [Result(False, 480, "Temporarily Unavailable"), Result(False, 408, "no final NOTIFY")]
    )
    assert control.ended == [] and control.said == ["nobody is free"]
    record = recorder.meta["escalation"]
    assert record["outcome"] == "no_answer" and record["connected_to"] is None
    assert escalation.state is EscalationState.FAILED  # the bot answers the caller again


async def test_a_caller_who_hangs_up_stops_the_transfer() -> None:
    control, recorder, escalation, _ = await _run([Result(False, 0, "caller hung up")])
    assert len(control.referred) == 1 and control.said == [] and control.ended == []
    assert recorder.meta["escalation"]["outcome"] == "caller_hung_up"


def test_transfer_to_entries_become_refer_targets() -> None:
    assert sip_targets("sip:desk@pbx.example.com, +15550001111", "10.0.0.5:5060") == [
        "sip:desk@pbx.example.com",
        "sip:+15550001111@10.0.0.5:5060",
    ]
    assert sip_targets(None, "h") == []
