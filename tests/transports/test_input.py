"""Input transport: wire audio in, VAD events on real speech, interruptions and their guard."""

import logging

import pytest

from voxpipe.audio import pcm16_to_mulaw
from voxpipe.bench.interruption import ToneBot
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    FrameDirection,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines import Observer
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy import InterruptionGuardParams, uninterruptible
from voxpipe.processors.vad import BatchedVAD
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams

START_SECS = 0.224  # the VAD's 0.2 s start, in whole 32 ms windows at 8 kHz
TOLERANCE = 0.1 + 0.02  # the VAD's accuracy plus one 20 ms wire chunk


class Inputs(Observer):
    def __init__(self) -> None:
        self.frames = []

    def on_input(self, frame, direction) -> None:
        self.frames.append(frame)


def _clip(pcm: bytes, start: float, end: float) -> bytes:
    return pcm[round(start * 8000) * 2 : round(end * 8000) * 2]


@pytest.mark.parametrize("batched", [False, True], ids=["inline", "batched"])
def test_vad_events_on_real_speech(call, speech_8k_pcm, truth, batched):
    t = MemoryTransport(TransportParams(), batched_vad=BatchedVAD() if batched else None)
    inputs = Inputs()

    async def script(task):
        await t.play_caller(speech_8k_pcm, 8000)
        await t.play_silence(1.0)

    log = call(t, [], script, observers=[inputs])
    segments = truth["segments"]["8000"]
    starts = log.times(UserStartedSpeakingFrame)
    stops = log.times(UserStoppedSpeakingFrame)
    assert len(starts) == len(stops) == len(segments)
    stop_secs = t.params.vad_params.stop_secs
    for (on, off), s, e in zip(segments, starts, stops, strict=True):
        assert abs(s - START_SECS - on) <= TOLERANCE, (s, on)
        assert abs(e - stop_secs - off) <= TOLERANCE + 0.032, (e, off)
    # Audio went downstream untouched, in the wire's own format (Deepgram takes it as is)...
    audio = log.frames(InputAudioFrame)
    assert {(f.encoding, f.sample_rate) for f in audio} == {("mulaw", 8000)}
    assert [len(f.audio) for f in audio].count(160) == len(audio) - 1  # the recording's end
    assert b"".join(f.audio for f in audio[: len(speech_8k_pcm) // 320]) == pcm16_to_mulaw(
        speech_8k_pcm[: len(speech_8k_pcm) // 320 * 320]
    )
    # ...and entered the call as input a recorder sees; VAD events are derived, not input.
    assert len([f for f in inputs.frames if isinstance(f, InputAudioFrame)]) == len(audio)
    assert not any(isinstance(f, UserStartedSpeakingFrame) for f in inputs.frames)


def test_replayed_input_audio_runs_through_the_vad(call, speech_8k_pcm, truth):
    # A recording replays InputAudioFrames into the task: the VAD decides again, the same way.
    t = MemoryTransport(TransportParams())
    mulaw = pcm16_to_mulaw(speech_8k_pcm[: round(3.9 * 8000) * 2])

    async def script(task):
        for i in range(0, len(mulaw), 160):
            await task.clock.sleep_until(i / 8000)
            await task.inject(
                InputAudioFrame(audio=mulaw[i : i + 160], sample_rate=8000, encoding="mulaw")
            )

    log = call(t, [], script)
    [(on, off), *_] = truth["segments"]["8000"]
    [start] = log.times(UserStartedSpeakingFrame)
    [stop] = log.times(UserStoppedSpeakingFrame)
    assert abs(start - START_SECS - on) <= TOLERANCE
    assert stop > off


def _barge_in(call, pcm, params, *, speech=(0.5, 2.9), bot_secs=10.0, before=1.0, middle=None):
    """Bot speaks; ``before`` s later the caller says ``pcm[speech]``; returns (log, transport)."""
    t = MemoryTransport(params)
    bot = ToneBot(t.params.audio_out, reply_secs=bot_secs, speed=4.0)
    clip = _clip(pcm, *speech)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("long reply"))
        await t.play_silence(before)
        await t.play_caller(clip, 8000)
        await t.play_silence(1.0)

    return call(t, [*(middle or []), bot], script), t


def test_caller_speech_over_the_bot_interrupts_it(call, speech_8k_pcm, truth):
    log, t = _barge_in(call, speech_8k_pcm, TransportParams())
    [interrupted] = log.times(InterruptionFrame)
    [clear] = t.memory_sink.clears
    assert clear.time == interrupted
    onset = truth["segments"]["8000"][0][0] - 0.5 + 1.0  # where the clip put it on the call
    # At least the guard's 0.4 s since the onset, in a window where the caller is speaking:
    # "Hello," pauses at 0.45 s here, so the bot yields when "I need" starts.
    assert onset + 0.4 - TOLERANCE <= interrupted <= onset + 0.4 + 0.3
    assert t.input().interruptions == 1
    # The caller's turn had started; the bot is silent from the interruption on.
    assert log.times(UserStartedSpeakingFrame)[0] < interrupted
    assert all(e.time <= clear.time for e in t.memory_sink.audio_events)


def test_guard_ignores_a_short_burst(call, speech_8k_pcm, truth):
    on = truth["segments"]["8000"][0][0]
    burst = (on - 0.1, on + 0.3)  # 0.3 s: long enough for the VAD, too short to interrupt
    guarded = TransportParams(guard=InterruptionGuardParams(min_speech_secs=0.5))
    log, t = _barge_in(call, speech_8k_pcm, guarded, speech=burst, bot_secs=4.0)
    assert len(log.times(UserStartedSpeakingFrame)) == 1, "the VAD did hear it"
    assert not log.times(InterruptionFrame) and not t.memory_sink.clears
    assert sum(len(e.audio) for e in t.memory_sink.audio_events) == 4.0 * 8000, "bot went on"

    # The same burst does interrupt when the guard asks for less speech than it holds.
    loose = TransportParams(guard=InterruptionGuardParams(min_speech_secs=0.2))
    log, t = _barge_in(call, speech_8k_pcm, loose, speech=burst, bot_secs=4.0)
    assert len(log.times(InterruptionFrame)) == 1 and len(t.memory_sink.clears) == 1


def test_no_interruption_when_the_bot_is_silent(call, speech_8k_pcm):
    t = MemoryTransport(TransportParams())

    async def script(task):
        await t.play_caller(_clip(speech_8k_pcm, 0.0, 3.9), 8000)

    log = call(t, [], script)
    assert log.times(UserStartedSpeakingFrame) and log.times(UserStoppedSpeakingFrame)
    assert not log.times(InterruptionFrame)


class AskOnUserSpeech(FrameProcessor):
    """A processor that asks for an interruption whenever the caller starts speaking."""

    async def process_frame(self, frame, direction):
        await self.push_frame(frame, direction)
        if isinstance(frame, UserStartedSpeakingFrame):
            await self.request_interruption("asked")


def test_interruptions_disallowed_for_the_call(call, speech_8k_pcm):
    t = MemoryTransport(TransportParams())
    bot = ToneBot(t.params.audio_out, reply_secs=5.0)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("x"))
        await t.play_silence(0.5)
        await t.play_caller(_clip(speech_8k_pcm, 0.4, 2.9), 8000)

    log = call(t, [AskOnUserSpeech(), bot], script, allow_interruptions=False)
    assert not log.times(InterruptionFrame)
    assert t.input().requests_refused == 1  # the processor's request stopped at the input


def test_uninterruptible_span_then_the_caller_takes_the_turn(call, speech_8k_pcm, truth):
    t = MemoryTransport(TransportParams())
    bot = ToneBot(t.params.audio_out, reply_secs=1.5, speed=4.0)
    on, _ = truth["segments"]["8000"][0]

    async def script(task):
        for f in uninterruptible(TTSSpeakFrame("legal notice")):
            await task.queue_frame(f)
        await task.queue_frame(TTSSpeakFrame("and then more"))
        await t.play_silence(0.2)
        await t.play_caller(_clip(speech_8k_pcm, on - 0.1, on + 2.0), 8000)  # talks over it
        await t.play_silence(1.0)

    log = call(t, [AskOnUserSpeech(), bot], script)
    notice_end = t.memory_sink.audio_events[0].play_start + 1.5
    [interrupted] = log.times(InterruptionFrame)
    # Nobody could interrupt the notice, neither the VAD nor the processor that asked...
    assert t.input().requests_refused == 1
    # ...but the caller still talking when it ended takes the turn at once.
    assert interrupted == pytest.approx(notice_end)
    assert all(e.time <= interrupted for e in t.memory_sink.audio_events)


@pytest.mark.parametrize("interrupts", [True, False])
def test_dtmf(call, interrupts):
    t = MemoryTransport(TransportParams(dtmf_interrupts=interrupts))
    bot = ToneBot(t.params.audio_out, reply_secs=3.0)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("menu"))
        await t.play_silence(0.5)
        await t.push_dtmf("1")
        await t.play_silence(0.5)

    log = call(t, [bot], script)
    assert [f.digit for f in log.frames(DTMFFrame)] == ["1"]
    assert len(log.times(InterruptionFrame)) == (1 if interrupts else 0)


def test_hang_up_ends_the_call_gracefully(call, speech_8k_pcm, caplog):
    t = MemoryTransport(TransportParams())
    bot = ToneBot(t.params.audio_out, reply_secs=20.0, speed=4.0)
    seen_end = []

    class Aggregator(FrameProcessor):
        async def process_frame(self, frame, direction):
            if isinstance(frame, EndFrame):
                seen_end.append(self.clock.now())
            await self.push_frame(frame, direction)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("long"))
        await t.play_silence(1.0)
        await t.play_caller(_clip(speech_8k_pcm, 3.9, 4.6), 8000)  # mid-sentence...
        await t.on_wire_closed()  # ...the caller hangs up

    with caplog.at_level(logging.INFO):
        log = call(t, [bot], script, after=[Aggregator()], send_end=False)
    assert log.end_reason == "caller hung up"
    # Ended promptly (the bot's 20 s reply was not paced into a dead line), through the
    # whole pipeline, with the caller's unfinished turn closed first.
    assert seen_end and seen_end[0] < 2.0
    kinds = [type(f).__name__ for _, f in log.down]
    assert kinds.index("UserStoppedSpeakingFrame") < kinds.index("EndFrame")
    assert t.output().closed and t.input().closed


def test_hang_up_is_bounded_when_the_end_cannot_drain(call):
    params = TransportParams(hangup_timeout_secs=2.0)
    t = MemoryTransport(params)

    class Stuck(FrameProcessor):
        async def on_end(self, frame):
            import asyncio

            await asyncio.Event().wait()

    async def script(task):
        await t.play_silence(0.5)
        await t.on_wire_closed()

    log = call(t, [Stuck()], script, send_end=False, end_timeout=60.0)
    assert "end did not finish" in log.end_reason
    assert log.end_time == pytest.approx(2.5, abs=0.05)


def test_bot_speaking_is_tracked_from_upstream_frames():
    from voxpipe.testing import run_frames_sync

    inp = MemoryTransport(TransportParams(vad_enabled=False)).input()

    class Tell(FrameProcessor):
        async def process_frame(self, frame, direction):
            await self.push_frame(frame, direction)
            if isinstance(frame, TTSSpeakFrame):
                await self.push_frame(BotStartedSpeakingFrame(), FrameDirection.UPSTREAM)

    run_frames_sync([inp, Tell()], [TTSSpeakFrame("x")])
    assert inp.bot_speaking


class FakeSTT(FrameProcessor):
    """Says ``text`` as an interim 0.3 s into each caller turn and as a final at its end."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    async def process_frame(self, frame, direction):
        await self.push_frame(frame, direction)
        if isinstance(frame, UserStartedSpeakingFrame):
            self.create_task(self._interim(), interruptible=False)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.push_frame(TranscriptionFrame(self.text))

    async def _interim(self):
        await self.clock.sleep(0.3)
        await self.push_frame(InterimTranscriptionFrame(self.text))


@pytest.mark.parametrize(("said", "interrupts"), [("Mm-hmm.", False), ("Wait, stop.", True)])
def test_words_guard_end_to_end(call, speech_8k_pcm, said, interrupts):
    params = TransportParams(guard=InterruptionGuardParams(min_words=2))
    t = MemoryTransport(params)
    stt = FakeSTT(said)
    guard = t.guard()
    bot = ToneBot(t.params.audio_out, reply_secs=6.0, speed=4.0)
    clip = _clip(speech_8k_pcm, 0.5, 2.9)  # 2.3 s of speech: the VAD alone would interrupt

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("long reply"))
        await t.play_silence(0.5)
        await t.play_caller(clip, 8000)
        await t.play_silence(1.0)

    log = call(t, [stt, guard, bot], script)
    assert len(log.times(InterruptionFrame)) == (1 if interrupts else 0)
    finals = [f.text for f in log.frames(TranscriptionFrame) if f.final]
    assert finals == ([said] if interrupts else [])
    if interrupts:
        # At the interim, 0.3 s after the VAD's start: well before the duration guard would.
        [started] = log.times(UserStartedSpeakingFrame)
        assert log.times(InterruptionFrame)[0] == pytest.approx(started + 0.3)


def test_audio_arriving_before_the_start_follows_the_start_frame():
    from voxpipe.pipelines import Pipeline, PipelineTask, VirtualClock

    async def main():
        t = MemoryTransport(TransportParams(vad_enabled=False))
        task = PipelineTask(Pipeline([t.input(), t.output()]), params=t.task_params())
        out = []
        task.on_downstream(out.append)
        await t.push_wire_audio(b"\x01" * 160)  # the wire is a step ahead of the task
        await task.queue_frame(EndFrame())
        await task.run()
        return out

    out = VirtualClock().run(main())
    assert [type(f).__name__ for f in out] == ["StartFrame", "InputAudioFrame", "EndFrame"]
    assert out[1].audio == b"\x01" * 160


def test_a_failing_vad_does_not_take_the_call_down(call, caplog):
    from voxpipe.frames import ErrorFrame
    from voxpipe.transports.input import BaseInputTransport

    class Broken(BaseInputTransport):
        async def _analyze(self, vad, pcm):
            raise RuntimeError("model file corrupt")

    class BrokenTransport(MemoryTransport):
        input_class = Broken

    t = BrokenTransport(TransportParams())

    async def script(task):
        await t.play_silence(0.2)

    with caplog.at_level(logging.ERROR):
        log = call(t, [], script)
    [error] = log.frames(ErrorFrame, up=True)
    assert "VAD failed" in error.error and not error.fatal
    assert len(log.frames(InputAudioFrame)) == 10  # audio kept flowing
    assert t.input().vad is None
