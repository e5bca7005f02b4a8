"""The conversing caller's decisions, driven by hand (no sockets, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from voxpipe.bench.conversation import Conversation, Question
from voxpipe.testing.twilio_caller import CallerLog


@dataclass
class StubCaller:
    """What Conversation reads and calls on a TwilioCaller."""

    elapsed: float = 0.0
    playout_end: float = 0.0
    said: list[bytes] = field(default_factory=list)

    def say(self, audio: bytes, *, speech_end: int | None = None) -> None:
        self.said.append(audio)


def bot_audio(log: CallerLog, caller: StubCaller, at: float, seconds: float) -> None:
    log.media_times.append(at)
    log.media_sizes.append(int(seconds * 8000))
    caller.playout_end = max(caller.playout_end, at) + seconds


def step(convo: Conversation, caller: StubCaller, log: CallerLog, at: float) -> bool:
    caller.elapsed = at
    return convo(log)


def test_greeting_question_answer_question_answer_hang_up() -> None:
    caller, log = StubCaller(), CallerLog()
    q1, q2 = Question(b"\x01" * 800, 600), Question(b"\x02" * 800, 700)
    convo = Conversation(caller, [q1, q2], quiet_s=0.5)  # type: ignore[arg-type]
    assert not step(convo, caller, log, 1.0)  # nothing yet
    bot_audio(log, caller, 1.2, 3.0)  # the greeting plays until 4.2
    assert not step(convo, caller, log, 4.5) and caller.said == []  # not quiet long enough
    assert not step(convo, caller, log, 4.8) and caller.said == [q1.audio]
    log.said.append(4.82)
    assert not step(convo, caller, log, 5.0)  # still speaking: no end of speech yet
    log.speech_ends.append(5.6)
    assert not step(convo, caller, log, 5.7)
    bot_audio(log, caller, 6.5, 2.0)  # answered 0.9 s after the end of speech
    assert not step(convo, caller, log, 8.9) and len(caller.said) == 1
    assert not step(convo, caller, log, 9.0) and caller.said[-1] == q2.audio
    log.said.append(9.02)
    log.speech_ends.append(9.9)
    bot_audio(log, caller, 10.7, 1.0)
    assert not step(convo, caller, log, 11.0)
    assert step(convo, caller, log, 12.3)  # the last answer played out: hang up
    assert convo.done and not convo.error
    assert [t.v2v_s for t in convo.turns] == [pytest.approx(0.9), pytest.approx(0.8)]
    assert not any(t.talked_over for t in convo.turns)


def test_no_answer_fails_the_call_and_early_answers_are_flagged() -> None:
    caller, log = StubCaller(), CallerLog()
    convo = Conversation(
        caller,  # type: ignore[arg-type]
        [Question(b"\x01" * 800, 600)],
        reply_timeout_s=5.0,
    )
    bot_audio(log, caller, 0.5, 1.0)
    assert not step(convo, caller, log, 2.1)
    log.said.append(2.1)
    bot_audio(log, caller, 2.4, 0.2)  # the bot talks while the question is being said
    log.speech_ends.append(2.9)
    assert not step(convo, caller, log, 3.0)
    assert convo.turns[0].talked_over
    assert step(convo, caller, log, 8.0)
    assert convo.error == "no answer to question 1" and not convo.done


def test_no_greeting_fails_the_call() -> None:
    caller, log = StubCaller(), CallerLog()
    convo = Conversation(caller, [], greeting_timeout_s=3.0)  # type: ignore[arg-type]
    assert not step(convo, caller, log, 2.0)
    assert step(convo, caller, log, 3.5) and convo.error == "no greeting"
