"""Preemptive replies on the virtual clock: the caller's recorded speech through the real VAD,
the input transport's turn detection (Smart Turn's verdicts scripted), the user aggregator and
an LLM service whose provider takes 200 ms to its first token.

The STT stands in for Deepgram as the bench's fake does: asked to finalize when the caller
goes quiet, it sends the final of the segment just spoken 150 ms later, with word times on
the call's clock; an interim can be scripted to arrive before that.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tests.transports.conftest import DATA, CallLog, run_call
from voxpipe.audio import read_wav, resample_pcm16
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    LLMMessagesFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStoppedSpeakingFrame,
    Word,
)
from voxpipe.processors.aggregators import (
    AssistantContextAggregator,
    LLMContext,
    UserContextAggregator,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.base import ChatChunk, LLMService
from voxpipe.processors.turn.frames import (
    PreemptiveLLMMessagesFrame,
    UserSilenceStartedFrame,
    UserSpeechResumedFrame,
)
from voxpipe.processors.turn.gate import TurnGate
from voxpipe.processors.turn.params import transport_turn_kwargs
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM
STT_S = 0.15
LLM_S = 0.2


def _speech() -> tuple[bytes, list[tuple[float, float]], list[str]]:
    """The recording at 8 kHz, its speech segments (s) and their texts."""
    truth = json.loads((DATA / "speech_16k.json").read_text())
    audio = read_wav(DATA / "speech_16k.wav")
    pcm = resample_pcm16(audio.pcm, audio.sample_rate, 8000)
    return pcm, [tuple(s) for s in truth["segments"]["8000"]], truth["texts"]


def _clip(pcm: bytes, start: float, end: float) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2")
    return x[round(start * 8000) : round(end * 8000)].tobytes()


@dataclass
class _Segment:
    text: str
    end: float  # call time the caller's speech of it ends
    interim: str | None = None  # an interim sent 50 ms before the end, its words up to the end


class ScriptedSTT(FrameProcessor):
    """The STT's part: finals at the caller's pauses (as Finalize gets them), by call time."""

    def __init__(self, segments: list[_Segment]) -> None:
        super().__init__()
        self.segments = segments
        self._upto = 0
        self._interims_sent = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        now = self.clock.now()
        while self._interims_sent < len(self.segments):
            seg = self.segments[self._interims_sent]
            if seg.interim is None or now < seg.end - 0.05:
                break
            self._interims_sent += 1
            await self.push_frame(
                InterimTranscriptionFrame(seg.interim, words=_words(seg.interim, seg.end))
            )
        if isinstance(frame, UserSilenceStartedFrame) and self._upto < len(self.segments):
            seg = self.segments[self._upto]
            if now >= seg.end - 0.05:  # a pause inside the segment finalizes nothing new
                self._upto += 1
                self.create_task(self._final(seg), name="final", interruptible=False)

    async def _final(self, seg: _Segment) -> None:
        await self.clock.sleep(STT_S)
        await self.push_frame(TranscriptionFrame(seg.text, words=_words(seg.text, seg.end)))


def _words(text: str, end: float) -> list[Word]:
    tokens = text.split()
    return [
        Word(
            w, call_start=end - 0.3 * (len(tokens) - i), call_end=end - 0.3 * (len(tokens) - i - 1)
        )
        for i, w in enumerate(tokens)
    ]


class EchoLLM(LLMService):
    """A provider taking ``LLM_S`` to its first token; it answers "You said: <last user turn>."""

    def __init__(self) -> None:
        super().__init__(max_tokens=100, first_token_timeout=5.0, retries=0, fallback_text="Sorry.")
        self.requests: list[list[dict[str, Any]]] = []
        self.closed = 0

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        self.requests.append(messages)
        try:
            await self.clock.sleep(LLM_S)
            said = messages[-1]["content"]
            for piece in ("You said: ", said):
                yield ChatChunk(text=piece)
        finally:
            self.closed += 1


class Requests(FrameProcessor):
    """Between the user aggregator and the LLM: the requests it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[LLMMessagesFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMMessagesFrame):
            self.frames.append(frame)
        await self.push_frame(frame, direction)


class Played(FrameProcessor):
    """Stands in for TTS + output: each text is heard at once (and says so upstream)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[float, str]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWN and isinstance(frame, LLMResponseStartFrame):
            await self.push_frame(BotStartedSpeakingFrame(), UP)
        if direction is DOWN and isinstance(frame, LLMTextFrame):
            self.heard.append((self.clock.now(), frame.text))
            await self.push_frame(TTSTextFrame(frame.text))
            return
        await self.push_frame(frame, direction)


class _Scripted:
    """Smart Turn's verdicts, one per decision."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = list(probs)

    def complete_now(self, clip: np.ndarray) -> float:
        return self.probs.pop(0)

    def backlog_s(self) -> float:
        return 0.0  # never behind: the model is always asked


@dataclass
class _Run:
    log: CallLog
    user: UserContextAggregator
    llm: EchoLLM
    played: Played
    context: LLMContext
    sent: Requests

    @property
    def heard(self) -> str:
        return "".join(t for _, t in self.played.heard)

    def requests(self, cls: type) -> list[LLMMessagesFrame]:
        return [f for f in self.sent.frames if type(f) is cls]


def _run(
    parts: list[tuple[float, float]],
    segments: list[_Segment],
    probs: list[float],
    *,
    preemptive: bool = True,
    gap: float = 0.6,
) -> _Run:
    """The caller says ``parts`` of the recording with ``gap`` s of silence between them."""
    pcm, _, _ = _speech()
    settings = VoxpipeSettings(_env_file=None, preemptive_replies=preemptive)  # type: ignore[call-arg]
    transport = MemoryTransport(TransportParams(**transport_turn_kwargs(settings)))
    inp = transport.input()
    gate = inp.turn_gate
    assert gate is not None
    inp.turn_gate = TurnGate(gate.params, gate.sample_rate, _Scripted(probs))  # type: ignore[arg-type]
    context = LLMContext("Be brief.")
    user = UserContextAggregator(context)
    llm = EchoLLM()
    played = Played()
    sent = Requests()

    async def script(task: Any) -> None:
        await transport.play_silence(0.5)
        for k, (a, b) in enumerate(parts):
            if k:
                await transport.play_silence(gap)
            await transport.play_caller(_clip(pcm, a, b), 8000)
        await transport.play_silence(2.5)

    log = run_call(
        transport,
        [ScriptedSTT(segments), user, sent, llm, played],
        script,
        after=[AssistantContextAggregator(context)],
    )
    return _Run(log, user, llm, played, context, sent)


def _roles(context: LLMContext) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in context.messages if m["role"] != "system"]


# The first utterance, "Hello, I need some help with my order.", and the call time it ends at
# when played after 0.5 s of silence (the clip starts 0.1 s before the speech).
def _first() -> tuple[tuple[float, float], float, str]:
    _, segs, texts = _speech()
    start, end = segs[0]
    return (start - 0.1, end + 0.1), 0.5 + 0.1 + (end - start), texts[0]


def test_a_preemptive_reply_is_released_when_the_turn_confirms_the_same_words() -> None:
    part, end, text = _first()
    run = _run([part], [_Segment(text, end)], probs=[0.9])
    stop = run.log.times(UserStoppedSpeakingFrame)
    assert len(stop) == 1
    silence = run.log.times(UserSilenceStartedFrame)
    assert silence and silence[-1] < stop[0]
    # One request, made before the turn was decided, and it is the reply heard.
    assert len(run.llm.requests) == 1
    [held] = run.requests(PreemptiveLLMMessagesFrame)
    assert held.messages[-1] == {"role": "user", "content": text}
    assert run.requests(LLMMessagesFrame) == []
    assert (run.user.preemptive_used, run.user.preemptive_discarded) == (1, 0)
    assert run.heard == f"You said: {text}"
    # Asked when the final the silence asked for came, heard as soon as both the turn was
    # decided and the reply was there: the STT and the LLM ran while the turn was decided,
    # where they used to start after it (stop + STT + LLM).
    first_heard = run.played.heard[0][0]
    final_at = silence[-1] + STT_S
    assert held.timestamp == pytest.approx(final_at, abs=0.005)
    assert first_heard == pytest.approx(max(stop[0], final_at + LLM_S), abs=0.01)
    assert first_heard < stop[0] + STT_S + LLM_S - 0.1
    assert _roles(run.context) == [("user", text), ("assistant", f"You said: {text}")]


def test_the_same_words_twice_make_two_turns_each_answered_by_its_held_reply() -> None:
    part, end, text = _first()
    second_end = end + 0.1 + 3.0 + 0.1 + (part[1] - part[0]) - 0.2
    run = _run([part, part], [_Segment(text, end), _Segment(text, second_end)], [0.9, 0.9], gap=3.0)
    assert len(run.log.times(UserStoppedSpeakingFrame)) == 2
    assert (run.user.preemptive_used, run.user.preemptive_discarded) == (2, 0)
    assert len(run.llm.requests) == 2
    # The second request carries the whole conversation: the first turn was left alone.
    reply = f"You said: {text}"
    assert run.llm.requests[1][1:] == [
        {"role": "user", "content": text},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": text},
    ]
    assert _roles(run.context) == [("user", text), ("assistant", reply)] * 2


def test_a_preemptive_reply_is_discarded_unheard_when_the_caller_goes_on() -> None:
    pcm, segs, texts = _speech()
    (a0, a1), (b0, b1) = segs[0], segs[1]
    parts = [(a0 - 0.1, a1 + 0.1), (b0 - 0.1, b1 + 0.1)]
    end_a = 0.5 + (a1 - a0) + 0.1
    end_b = end_a + 0.1 + 0.7 + 0.1 + (b1 - b0)
    # Smart Turn calls the first pause incomplete: the turn stays open, the caller goes on.
    run = _run(
        parts, [_Segment(texts[0], end_a), _Segment(texts[1], end_b)], probs=[0.1, 0.9], gap=0.7
    )
    assert len(run.log.times(UserStoppedSpeakingFrame)) == 1
    assert run.log.frames(UserSpeechResumedFrame)
    # A reply to the half sentence was prepared, and thrown away: never heard, never recorded.
    first, second = run.llm.requests
    assert first[-1]["content"] == texts[0]
    whole = f"{texts[0]} {texts[1]}"
    assert second[-1]["content"] == whole
    assert run.user.preemptive_discarded == 1 and run.user.preemptive_used == 1
    assert run.llm.holds.discarded == 1
    assert run.heard == f"You said: {whole}"
    assert _roles(run.context) == [("user", whole), ("assistant", f"You said: {whole}")]


def test_a_preemptive_reply_from_an_interim_is_redone_when_the_final_differs() -> None:
    part, end, text = _first()
    interim = "Hello I need some help with my"  # a word short, as an interim can be
    run = _run([part], [_Segment(text, end, interim=interim)], probs=[0.9])
    first, second = run.llm.requests
    assert first[-1]["content"] == interim
    assert second[-1]["content"] == text
    assert (run.user.preemptive_discarded, run.user.preemptive_used) == (1, 1)
    assert run.heard == f"You said: {text}"
    assert _roles(run.context) == [("user", text), ("assistant", f"You said: {text}")]


def test_an_interim_that_says_the_same_words_starts_the_reply_at_the_silence() -> None:
    part, end, text = _first()
    interim = re.sub(r"[,.]", "", text.lower())  # the final differs in case and punctuation only
    run = _run([part], [_Segment(text, end, interim=interim)], probs=[0.9])
    assert len(run.llm.requests) == 1
    assert (run.user.preemptive_discarded, run.user.preemptive_used) == (0, 1)
    [held] = run.requests(PreemptiveLLMMessagesFrame)
    # Asked at the silence, before the final came.
    silence = run.log.times(UserSilenceStartedFrame)[-1]
    assert run.heard.startswith("You said: ")
    assert ("user", text) in _roles(run.context)  # the context keeps the final's words
    assert held.timestamp < silence + STT_S


def test_with_preemptive_replies_off_the_reply_is_asked_once_the_turn_is_decided() -> None:
    part, end, text = _first()
    run = _run([part], [_Segment(text, end)], probs=[0.9], preemptive=False)
    stop = run.log.times(UserStoppedSpeakingFrame)[0]
    assert run.requests(PreemptiveLLMMessagesFrame) == []
    [request] = run.requests(LLMMessagesFrame)
    assert request.timestamp >= stop
    assert run.user.preemptive_started == 0 and run.llm.holds.started == 0
    assert run.heard == f"You said: {text}"
    assert run.played.heard[0][0] >= stop + LLM_S


@pytest.mark.parametrize("release", [True, False])
def test_a_decision_before_the_request_is_taken_up_is_kept(release: bool) -> None:
    from voxpipe.processors.llm.hold import ReplyHolds

    holds = ReplyHolds()
    holds.remember(7, release)
    assert holds.begin(7) is (True if release else False)
    assert holds.begin(8) is None and holds.current is not None
