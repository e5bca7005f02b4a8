"""Backchannels and barge-ins on a whole call: real VAD on real speech, the arbiter, the wire.

The caller's speech is cut from the test recording; what the STT "heard" is scripted (the
decision is the arbiter's, from words); the bot's audio carries a sequence number in every
20 ms chunk, so the bytes on the wire show whether anything was repeated or skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from voxpipe.frames import (
    BackchannelFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    InterruptionFrame,
    OutputAudioFrame,
    PauseBotOutputFrame,
    ResumeBotOutputFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.context import LLMContext
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.turn.backchannel import InterruptionArbiter, InterruptionParams
from voxpipe.processors.turn.params import TurnParams
from voxpipe.processors.vad.analyzer import VADParams
from voxpipe.transports.memory import MemorySink, MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

PHONE = AudioFormat("mulaw", 8000)
CHUNK = 160  # 20 ms of mu-law 8 kHz
WORD_CHUNKS = 10  # a word every 0.2 s of audio
REPLY_CHUNKS = 300  # a 6 s reply


class SeqBot(FrameProcessor):
    """A bot and TTS in one: a ``TTSSpeakFrame`` becomes a numbered reply, 4x real time.

    Chunk ``i`` starts with ``i`` (two bytes); a ``TTSTextFrame`` "w<k>" follows every
    ``WORD_CHUNKS`` chunks of audio, as a TTS with word timestamps would send it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.generated = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TTSSpeakFrame) and direction is FrameDirection.DOWNSTREAM:
            self.create_task(self._speak(), name="speak")
            return
        await self.push_frame(frame, direction)

    async def _speak(self) -> None:
        await self.push_frame(TTSStartedFrame())
        for i in range(REPLY_CHUNKS):
            await self.clock.sleep(0.005)
            audio = i.to_bytes(2, "little") + bytes([0x55]) * (CHUNK - 2)
            self.generated += 1
            await self.push_frame(OutputAudioFrame(audio=audio, sample_rate=8000, encoding="mulaw"))
            if (i + 1) % WORD_CHUNKS == 0:
                await self.push_frame(TTSTextFrame(f"w{(i + 1) // WORD_CHUNKS}"))
        await self.push_frame(TTSStoppedFrame())


FULL_REPLY = " ".join(f"w{k}" for k in range(1, REPLY_CHUNKS // WORD_CHUNKS + 1))


@dataclass
class Said:
    """What the scripted STT reports for one caller utterance."""

    final: str | None
    interims: list[tuple[float, str]] = field(default_factory=list)  # (secs after onset, text)
    latency: float = 0.15  # final after the caller stopped


class ScriptedSTT(FrameProcessor):
    """An STT stand-in: for each caller utterance (VAD onset) the next ``Said`` of its script."""

    def __init__(self, script: list[Said]) -> None:
        super().__init__()
        self.script = list(script)
        self._now: Said | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, UserStartedSpeakingFrame) and self.script:
            self._now = self.script.pop(0)
            for at, text in self._now.interims:
                self.create_task(
                    self._later(at, InterimTranscriptionFrame(text)), interruptible=False
                )
        elif isinstance(frame, UserStoppedSpeakingFrame) and self._now is not None:
            said, self._now = self._now, None
            if said.final is not None:
                final = TranscriptionFrame(said.final)
                self.create_task(self._later(said.latency, final), interruptible=False)

    async def _later(self, delay: float, frame: Frame) -> None:
        await self.clock.sleep(delay)
        await self.push_frame(frame)


def _params() -> TransportParams:
    # The served smart-turn VAD (0.2 s stop); the end-of-turn model is not needed here.
    return TransportParams(audio_in=PHONE, audio_out=PHONE, vad_params=VADParams(stop_secs=0.2))


def _clip(pcm: bytes, start: float, end: float) -> bytes:
    return pcm[round(start * 8000) * 2 : round(end * 8000) * 2]


def _run_bot(call, pcm, speech, said, *, locale="en", mode="smart", before=1.5):
    t = MemoryTransport(_params())
    context = LLMContext("test")
    arbiter = InterruptionArbiter(InterruptionParams(mode=mode), locale=locale)
    bot = SeqBot()

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("reply"))
        await t.play_silence(before)
        await t.play_caller(_clip(pcm, *speech), 8000)
        await t.play_silence(8.0)

    log = call(
        t, [ScriptedSTT([said]), arbiter, bot], script, after=[AssistantContextAggregator(context)]
    )
    return log, t, arbiter, context


def _wire_seq(t: MemoryTransport) -> list[int]:
    return [int.from_bytes(e.audio[:2], "little") for e in t.memory_sink.audio_events]


def _assistant_text(context: LLMContext) -> str:
    msgs = [m for m in context.messages if m["role"] == "assistant"]
    assert len(msgs) == 1, msgs
    return str(msgs[0]["content"])


def _short(truth) -> tuple[float, float]:
    """The first 0.35 s of the first utterance ("Hello"): the VAD hears it, a backchannel's length."""
    on = truth["segments"]["8000"][0][0]
    return on - 0.1, on + 0.35


def _long(truth) -> tuple[float, float]:
    on, off = truth["segments"]["8000"][0]
    return on - 0.1, off


def _gap_at(t: MemoryTransport) -> tuple[int, float]:
    """Where the wire's audio stopped for a while: (chunks sent before, seconds of the gap)."""
    events = t.memory_sink.audio_events
    gaps = [
        (i, b.time - a.time)
        for i, (a, b) in enumerate(zip(events[:-1], events[1:], strict=True), 1)
    ]
    i, gap = max(gaps, key=lambda g: g[1])
    return i, gap


def test_uh_huh_pauses_the_bot_and_it_resumes_from_the_heard_position(call, speech_8k_pcm, truth):
    log, t, arbiter, context = _run_bot(call, speech_8k_pcm, _short(truth), Said("Uh-huh."))
    out = t.output()
    # Paused once, resumed once, never interrupted, the wire never cleared.
    assert (out.pauses, out.resumes) == (1, 1)
    assert not log.times(InterruptionFrame) and not t.memory_sink.clears
    assert arbiter.backchannels == 1 and arbiter.interruptions == 0
    # Every chunk of the reply went out exactly once, in order: nothing repeated or skipped...
    assert _wire_seq(t) == list(range(REPLY_CHUNKS))
    # ...with the pause in the middle: the bot fell silent, then went on from the next byte.
    sent_before, gap = _gap_at(t)
    assert gap > 0.3
    assert out.pause_position is not None
    assert abs(out.pause_position - sent_before * 0.02) < 1e-6
    # The far end played it all, contiguous: what the caller heard is the reply, once.
    played = b"".join(p.audio for p in t.memory_sink.played())
    assert [int.from_bytes(played[i : i + 2], "little") for i in range(0, len(played), CHUNK)] == (
        list(range(REPLY_CHUNKS))
    )
    # The caller spoke ~0.2 s into the reply's audio still queued at the far end: the pause
    # starts at the VAD's onset, with at most the output's lead still to play.
    [paused_at] = log.times(PauseBotOutputFrame)
    [onset] = log.times(UserStartedSpeakingFrame)
    assert paused_at == onset
    [bc] = log.frames(BackchannelFrame)
    assert bc.text == "Uh-huh." and bc.paused
    # The context has the whole reply, and nothing of the caller's "uh-huh".
    assert _assistant_text(context) == FULL_REPLY
    assert not [m for m in context.messages if m["role"] == "user"]
    assert not log.frames(TranscriptionFrame)


def test_a_noise_with_no_words_does_not_stop_the_bot(call, speech_8k_pcm, truth):
    log, t, arbiter, context = _run_bot(call, speech_8k_pcm, _short(truth), Said(None))
    assert not log.times(InterruptionFrame) and not t.memory_sink.clears
    assert _wire_seq(t) == list(range(REPLY_CHUNKS))
    [bc] = log.frames(BackchannelFrame)
    assert bc.text == "" and arbiter.last_reason == "noise"
    # Judged once the STT had a chance to say something (final_wait_secs after the stop).
    [stopped] = log.times(UserStoppedSpeakingFrame)
    [decided] = log.times(BackchannelFrame)
    assert abs(decided - stopped - InterruptionParams().final_wait_secs) < 1e-6
    assert _assistant_text(context) == FULL_REPLY


def _assert_interrupted(log, t, context):
    [interrupted] = log.times(InterruptionFrame)
    [clear] = t.memory_sink.clears
    assert clear.time == interrupted
    # Nothing of the reply after the clear, and the reply was cut short.
    assert all(e.time <= clear.time for e in t.memory_sink.audio_events)
    seq = _wire_seq(t)
    assert seq == list(range(len(seq))) and len(seq) < REPLY_CHUNKS
    # The context holds what the caller heard: the words whose audio had played.
    heard = _assistant_text(context)
    assert FULL_REPLY.startswith(heard) and heard != FULL_REPLY
    played_chunks = round(t.memory_sink.played_seconds() / 0.02)
    assert len(heard.split()) == played_chunks // WORD_CHUNKS
    return interrupted


def test_wait_interrupts_and_the_caller_is_heard(call, speech_8k_pcm, truth):
    log, t, arbiter, context = _run_bot(call, speech_8k_pcm, _short(truth), Said("Wait."))
    interrupted = _assert_interrupted(log, t, context)
    assert arbiter.interruptions == 1 and "'wait'" in arbiter.last_reason
    # The decision came with the STT's final, right after the caller stopped.
    [stopped] = log.times(UserStoppedSpeakingFrame)
    assert abs(interrupted - stopped - 0.15) < 1e-6
    # "Wait." goes on to the conversation, after the sweep.
    [final] = log.frames(TranscriptionFrame)
    assert final.text == "Wait."
    assert not log.frames(BackchannelFrame)


def test_stop_on_an_interim_interrupts_before_the_caller_finishes(call, speech_8k_pcm, truth):
    said = Said("Stop, stop.", interims=[(0.1, "stop")])
    log, t, arbiter, context = _run_bot(call, speech_8k_pcm, _long(truth), said)
    interrupted = _assert_interrupted(log, t, context)
    [onset] = log.times(UserStartedSpeakingFrame)
    assert abs(interrupted - onset - 0.1) < 1e-6


def test_a_real_sentence_interrupts_with_the_context_cut_to_what_was_heard(
    call, speech_8k_pcm, truth
):
    said = Said(
        "Hello, I need some help with my order.",
        interims=[(0.2, "hello"), (0.45, "hello i need")],
    )
    log, t, arbiter, context = _run_bot(call, speech_8k_pcm, _long(truth), said)
    interrupted = _assert_interrupted(log, t, context)
    [onset] = log.times(UserStartedSpeakingFrame)
    assert abs(interrupted - onset - 0.45) < 1e-6  # at the second word that is not a backchannel
    assert "3 word" in arbiter.last_reason
    texts = [f.text for f in log.frames(TranscriptionFrame)]
    assert texts[-1] == "Hello, I need some help with my order."


def test_long_speech_interrupts_even_without_words(call, speech_8k_pcm, truth):
    # An STT that says nothing in time: the VAD's limit (max_speech_secs) decides.
    log, t, arbiter, context = _run_bot(call, speech_8k_pcm, _long(truth), Said(None))
    interrupted = _assert_interrupted(log, t, context)
    on = 1.5 + 0.1  # the speech onset on the call clock (the clip starts 0.1 s before it)
    limit = InterruptionParams().max_speech_secs
    assert on + limit - 0.12 <= interrupted <= on + limit + 0.3
    assert t.input().interruptions == 1 and arbiter.interruptions == 0


def test_spanish_aja_and_vale_are_backchannels_espera_stops(call, speech_8k_pcm, truth):
    for text in ("Ajá.", "Vale, vale."):
        log, t, arbiter, _ = _run_bot(call, speech_8k_pcm, _short(truth), Said(text), locale="es")
        assert not log.times(InterruptionFrame), text
        assert _wire_seq(t) == list(range(REPLY_CHUNKS)) and arbiter.backchannels == 1
    log, t, arbiter, context = _run_bot(
        call, speech_8k_pcm, _short(truth), Said("¡Espera!"), locale="es-MX"
    )
    _assert_interrupted(log, t, context)
    # The English list does not apply to a Spanish call: "espera" is no English stop word.
    log, t, arbiter, _ = _run_bot(call, speech_8k_pcm, _short(truth), Said("ajá"), locale="en")
    assert log.times(InterruptionFrame), "one unknown word after the caller stopped is a turn"


def test_immediate_mode_keeps_the_vad_guard_alone(call, speech_8k_pcm, truth):
    log, t, arbiter, _ = _run_bot(
        call, speech_8k_pcm, _long(truth), Said("Uh-huh."), mode="immediate"
    )
    assert not log.frames(PauseBotOutputFrame) and t.output().pauses == 0
    [interrupted] = log.times(InterruptionFrame)
    on = 1.5 + 0.1
    # The guard's 0.4 s (the first utterance pauses at 0.45 s: at the next speech window).
    assert interrupted < on + 0.8
    assert t.input().interruptions == 1


def _paused_call(call, script, *, sink=None):
    t = MemoryTransport(
        TransportParams(audio_in=PHONE, audio_out=PHONE, vad_enabled=False), sink=sink
    )
    context = LLMContext("test")
    log = call(t, [SeqBot()], script(t), after=[AssistantContextAggregator(context)])
    return log, t, context


def test_a_pause_nobody_decides_ends_by_itself(call):
    def script(t):
        async def run(task):
            await task.queue_frame(TTSSpeakFrame("reply"))
            await task.clock.sleep(1.0)
            await task.queue_frame(PauseBotOutputFrame(timeout_secs=0.5))
            await task.clock.sleep(8.0)

        return run

    log, t, context = _paused_call(call, script)
    out = t.output()
    assert (out.pauses, out.resumes) == (1, 1) and out.paused_seconds == [pytest.approx(0.5)]
    assert _wire_seq(t) == list(range(REPLY_CHUNKS))
    _, gap = _gap_at(t)
    assert abs(gap - 0.5) <= 0.021  # at most a chunk's time of difference
    assert _assistant_text(context) == FULL_REPLY


def test_an_interruption_while_paused_flushes_and_the_next_reply_plays(call):
    def script(t):
        async def run(task):
            await task.queue_frame(TTSSpeakFrame("reply"))
            await task.clock.sleep(1.0)
            await task.queue_frame(PauseBotOutputFrame())
            await task.clock.sleep(0.3)
            await t.input().request_interruption("test")
            await task.clock.sleep(0.5)
            await task.queue_frame(TTSSpeakFrame("again"))
            await task.clock.sleep(8.0)

        return run

    log, t, context = _paused_call(call, script)
    out = t.output()
    [clear] = t.memory_sink.clears
    before = [e for e in t.memory_sink.audio_events if e.time <= clear.time]
    after = [e for e in t.memory_sink.audio_events if e.time > clear.time]
    # Nothing was sent while paused, nothing of the first reply after the clear...
    assert before[-1].time < 1.0 + 1e-9
    first = [int.from_bytes(e.audio[:2], "little") for e in before]
    assert first == list(range(len(first)))
    # ...and the next reply went out whole: the sender was not left waiting for a resume.
    assert [int.from_bytes(e.audio[:2], "little") for e in after] == list(range(REPLY_CHUNKS))
    assert not out.paused and out.resumes == 0


def test_resume_with_marks_echoed_late_repeats_and_skips_nothing(call):
    def script(t):
        async def run(task):
            await task.queue_frame(TTSSpeakFrame("reply"))
            await task.clock.sleep(1.3)
            await task.queue_frame(PauseBotOutputFrame())
            await task.clock.sleep(0.4)
            await task.queue_frame(ResumeBotOutputFrame())
            await task.clock.sleep(8.0)

        return run

    sink = MemorySink(PHONE, echo_delay=0.08)  # a phone network's round trip
    log, t, context = _paused_call(call, script, sink=sink)
    assert t.output().marks_enabled, "the marks were echoed in time"
    assert _wire_seq(t) == list(range(REPLY_CHUNKS))
    played = b"".join(p.audio for p in sink.played())
    assert played == b"".join(e.audio for e in sink.audio_events)
    assert _assistant_text(context) == FULL_REPLY


def test_speech_over_the_bot_ends_at_the_vads_stop_without_the_turn_model(
    call, speech_8k_pcm, truth
):
    params = TransportParams(
        audio_in=PHONE, audio_out=PHONE, vad_params=VADParams(stop_secs=0.2), turn=TurnParams()
    )
    t = MemoryTransport(params)
    arbiter = InterruptionArbiter()

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("reply"))
        await t.play_silence(1.5)
        await t.play_caller(_clip(speech_8k_pcm, *_short(truth)), 8000)
        await t.play_silence(8.0)

    log = call(t, [ScriptedSTT([Said("Mm-hmm.")]), arbiter, SeqBot()], script)
    gate = t.input().turn_gate
    assert gate is not None and gate.decisions == 0
    assert arbiter.backchannels == 1 and not log.times(InterruptionFrame)
    assert _wire_seq(t) == list(range(REPLY_CHUNKS))


def test_okay_as_the_reply_ends_is_an_answer_not_a_backchannel(call, speech_8k_pcm, truth):
    # The caller's "okay" is detected in the reply's last 0.1 s: all of its audio was sent, so
    # nothing is paused, the bot stops as it would have, and "Okay." is the caller's turn.
    end = REPLY_CHUNKS * 0.02
    log, t, arbiter, context = _run_bot(
        call, speech_8k_pcm, _short(truth), Said("Okay."), before=end - 0.43
    )
    [started] = log.times(UserStartedSpeakingFrame)
    assert end - 0.1 < started < end
    assert t.output().pauses == 0 and not log.frames(BackchannelFrame)
    assert not log.times(InterruptionFrame)
    assert [f.text for f in log.frames(TranscriptionFrame)] == ["Okay."]
    assert _assistant_text(context) == FULL_REPLY
