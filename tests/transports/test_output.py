"""Output transport: pacing, bot speaking frames, held text, end draining, flushes, marks."""

import asyncio
import logging

import numpy as np
import pytest

from voxpipe.bench.interruption import ToneBot, reply_tag
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    InterruptionFrame,
    OutputAudioFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy import (
    EnableInterruptionsFrame,
    InterruptionsAllowedFrame,
    uninterruptible,
)
from voxpipe.transports.memory import MemorySink, MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

PCM16K = AudioFormat("pcm16", 16000)
PHONE = AudioFormat("mulaw", 8000)
CHUNK_SECS = 0.02


def _transport(fmt: AudioFormat = PCM16K, sink: MemorySink | None = None, **kw) -> MemoryTransport:
    params = TransportParams(audio_in=fmt, audio_out=fmt, vad_enabled=False, **kw)
    return MemoryTransport(params, sink=sink)


def _play_end(sink: MemorySink) -> float:
    last = sink.audio_events[-1]
    return last.play_start + CHUNK_SECS


def test_paced_a_lead_ahead_and_end_drains_after_the_audio(call):
    t = _transport()
    bot = ToneBot(PCM16K, reply_secs=1.0, speed=4.0)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hello"))

    log = call(t, [bot], script)
    sink = t.memory_sink
    audio = sink.audio_events
    assert len(audio) == 50 and all(len(e.audio) == 640 for e in audio)
    assert {reply_tag(e.audio) for e in audio} == {1}
    # Never more than the lead (plus the chunk being sent) ahead of what plays.
    lead = t.params.output_lead_secs
    for e in audio:
        assert e.play_start - e.time <= lead + 1e-9
    # The far end plays continuously from the first chunk: no gap in the bot's voice.
    starts = [e.play_start for e in audio]
    assert np.allclose(np.diff(starts), CHUNK_SECS)
    # The end passes only after the last chunk has played, the bot reported stopped first.
    [end_at] = log.times(EndFrame)
    [stopped_at] = log.times(BotStoppedSpeakingFrame)
    assert end_at >= _play_end(sink) - 1e-9
    assert _play_end(sink) - 1e-9 <= stopped_at <= end_at
    assert log.end_reason == "test"


def test_text_is_released_when_its_audio_has_played(call):
    t = _transport()
    bot = ToneBot(PCM16K, reply_secs=1.2, speed=4.0, word_secs=0.3)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hello"))

    log = call(t, [bot], script)
    first_play = t.memory_sink.audio_events[0].play_start
    released = log.times(TTSTextFrame)
    assert [f.text for f in log.frames(TTSTextFrame)] == ["w1.1", "w1.2", "w1.3", "w1.4"]
    # Word k follows 0.3 k s of audio: it passes when that audio has played, not when sent.
    assert np.allclose(released, [first_play + 0.3 * k for k in range(1, 5)])
    # TTSStoppedFrame follows the last audio too.
    [tts_stopped] = log.times(TTSStoppedFrame)
    assert tts_stopped == pytest.approx(_play_end(t.memory_sink))


def test_bot_speaking_frames_bracket_the_audio_actually_played(call):
    t = _transport()
    # A slow TTS: audio arrives at half real time, so the far end runs dry between frames.
    slow = ToneBot(PCM16K, reply_secs=0.6, speed=0.5, frame_ms=100)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("one"))
        await task.clock.sleep(3.0)
        await task.queue_frame(TTSSpeakFrame("two"))
        await task.clock.sleep(3.0)

    log = call(t, [slow], script)
    sink = t.memory_sink
    started, stopped = log.times(BotStartedSpeakingFrame), log.times(BotStoppedSpeakingFrame)
    # One utterance per reply despite the gaps inside it (bot_stop_secs bridges them).
    assert len(started) == len(stopped) == 2
    # Both directions, at the same instants.
    assert log.times(BotStartedSpeakingFrame, up=True) == started
    assert log.times(BotStoppedSpeakingFrame, up=True) == stopped
    for reply, (on, off) in enumerate(zip(started, stopped, strict=True), start=1):
        chunks = [e for e in sink.audio_events if reply_tag(e.audio) == reply]
        first = chunks[0].play_start
        last_end = chunks[-1].play_start + CHUNK_SECS
        assert on <= first + 1e-9, "started before the first chunk plays"
        assert off >= last_end - 1e-9, "stopped only after the last chunk played"
        # ...and right after it: the TTS said the reply was over.
        assert off - last_end < 1e-6


def test_interruption_drops_queued_output_and_the_wire_sees_the_flush(call):
    t = _transport()
    bot = ToneBot(PCM16K, reply_secs=3.0, speed=4.0, word_secs=0.3)
    out = t.output()

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("long"))
        await task.clock.sleep(0.5)
        await task.queue_frame(InterruptionFrame())
        await task.clock.sleep(0.5)
        await task.queue_frame(TTSSpeakFrame("again"))
        await task.clock.sleep(0.2)

    log = call(t, [bot], script)
    sink = t.memory_sink
    [clear] = sink.clears
    assert clear.time == pytest.approx(0.5)
    before = [e for e in sink.events[: sink.events.index(clear)] if e.kind == "audio"]
    after = [e for e in sink.events[sink.events.index(clear) :] if e.kind == "audio"]
    # Sent up to the lead ahead; the rest of what the TTS had delivered was queued and dropped.
    sent_secs = len(before) * CHUNK_SECS
    assert 0.5 - 0.025 + 0.1 <= sent_secs <= 0.5 - 0.025 + 0.1 + 2 * CHUNK_SECS
    assert out.chunks_dropped >= 10
    # Nothing of the interrupted reply after the flush; the next reply plays normally.
    assert {reply_tag(e.audio) for e in after} == {2}
    # The caller heard 0.475 s of reply 1: the far end's buffer was cut at the clear.
    heard_1 = sum(len(p.audio) / 32000 for p in sink.played() if reply_tag(p.audio[:2]) == 1)
    assert heard_1 == pytest.approx(0.475, abs=1e-3)
    assert out.interrupted_at is None  # reset by the second reply's start...
    # ...but the first utterance was cut where the caller stopped hearing it:
    stopped = log.times(BotStoppedSpeakingFrame)
    assert stopped[0] == pytest.approx(0.5)
    kinds = [type(f).__name__ for _, f in log.down]
    assert kinds.index("InterruptionFrame") < kinds.index("BotStoppedSpeakingFrame")
    # Only words heard before the interruption reached the next processor.
    texts = [f.text for f in log.frames(TTSTextFrame)]
    assert texts[:1] == ["w1.1"] and not any(x.startswith("w1.") for x in texts[1:])


@pytest.mark.parametrize(("marks", "heard"), [(False, 0.975), (True, 0.9)])
def test_interrupted_at_is_the_heard_part_of_the_utterance(call, marks, heard):
    # On the clock estimate: 1.0 s minus the 25 ms before the first chunk. With marks: up to
    # the last mark the wire echoed (one after each 0.3 s word), a lower bound.
    t = _transport(sink=MemorySink(PCM16K, supports_marks=marks))
    bot = ToneBot(PCM16K, reply_secs=3.0, speed=4.0)
    seen: list[float | None] = []

    class Peek(FrameProcessor):
        async def process_frame(self, frame, direction):
            if isinstance(frame, InterruptionFrame):
                seen.append(t.output().interrupted_at)
            await self.push_frame(frame, direction)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("long"))
        await task.clock.sleep(1.0)
        await task.queue_frame(InterruptionFrame())

    call(t, [bot], script, after=[Peek()])
    assert seen == [pytest.approx(heard, abs=1e-6)]


class SlowSink(MemorySink):
    """A wire whose writes take time (socket backpressure), to interrupt in the middle of one."""

    def __init__(self, *args, write_secs: float = 0.01, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.write_secs = write_secs
        self.writing = False
        self.aborted_writes = 0
        self.clears_during_write = 0

    async def send_audio(self, audio: bytes) -> None:
        self.writing = True
        try:
            await asyncio.sleep(self.write_secs)
        except asyncio.CancelledError:
            self.aborted_writes += 1
            raise
        finally:
            self.writing = False
        await super().send_audio(audio)

    async def send_clear(self) -> None:
        if self.writing:
            self.clears_during_write += 1
        await super().send_clear()


@pytest.mark.parametrize(("marks", "echo_delay"), [(False, 0.0), (True, 0.03)])
def test_no_stale_chunk_after_clear_at_random_instants(call, marks, echo_delay):
    sink = SlowSink(PCM16K, write_secs=0.012, supports_marks=marks, echo_delay=echo_delay)
    t = _transport(sink=sink)
    bot = ToneBot(PCM16K, reply_secs=2.0, speed=3.0)
    rng = np.random.default_rng(11)
    rounds = 40

    async def script(task):
        for _ in range(rounds):
            await task.queue_frame(TTSSpeakFrame("reply"))
            await task.clock.sleep(float(rng.uniform(0.01, 0.9)))
            await task.queue_frame(InterruptionFrame())
            await task.clock.sleep(float(rng.choice([0.0, 0.001, 0.05])))

    call(t, [bot], script)
    assert len(sink.clears) >= rounds - 2  # a few land before the first chunk: nothing to clear
    newest = cleared = stale = 0
    for ev in sink.events:
        if ev.kind == "clear":
            cleared = newest
        elif ev.kind == "audio":
            stale += reply_tag(ev.audio) <= cleared
            newest = max(newest, reply_tag(ev.audio))
    assert stale == 0
    assert sink.clears_during_write == 0
    assert sink.aborted_writes > 0, "some interruptions must land in the middle of a write"


def test_format_conversion_to_the_wire(call):
    t = _transport(PHONE)
    src = AudioFormat("pcm16", 24000)
    bot = ToneBot(src, reply_secs=1.0, speed=4.0)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hi"))

    call(t, [bot], script)
    chunks = t.memory_sink.audio_events
    assert all(len(e.audio) == 160 for e in chunks)
    total = sum(len(e.audio) for e in chunks) / 8000
    assert total == pytest.approx(1.0, abs=0.021)  # the last chunk padded


def test_marks_release_text_when_the_wire_says_it_played(call):
    sink = MemorySink(PCM16K, echo_delay=0.05)
    t = _transport(sink=sink)
    bot = ToneBot(PCM16K, reply_secs=0.9, speed=4.0, word_secs=0.3)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hi"))

    log = call(t, [bot], script)
    out = t.output()
    assert out.marks_enabled and out.marks_sent >= 3
    first_play = sink.audio_events[0].play_start
    released = log.times(TTSTextFrame)
    assert np.allclose(released, [first_play + 0.3 * k + 0.05 for k in range(1, 4)])
    assert out.played_seconds == pytest.approx(0.9)
    # The bot is reported stopped once the last mark came back.
    [stopped] = log.times(BotStoppedSpeakingFrame)
    assert stopped == pytest.approx(_play_end(sink) + 0.05)


def test_a_wire_that_never_echoes_marks_falls_back_to_the_clock(call, caplog):
    sink = MemorySink(PCM16K, echo_marks=False)
    t = _transport(sink=sink, mark_timeout_secs=0.5)
    bot = ToneBot(PCM16K, reply_secs=0.9, speed=4.0, word_secs=0.3)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hi"))
        await task.clock.sleep(3.0)
        await task.queue_frame(TTSSpeakFrame("again"))

    with caplog.at_level(logging.WARNING):
        log = call(t, [bot], script)
    assert not t.output().marks_enabled
    assert "did not echo a mark" in caplog.text
    texts = [f.text for f in log.frames(TTSTextFrame)]
    assert texts == ["w1.1", "w1.2", "w1.3", "w2.1", "w2.2", "w2.3"]
    # The second reply runs on clock estimates: its words at their play times exactly.
    second = [e for e in sink.audio_events if reply_tag(e.audio) == 2][0].play_start
    assert np.allclose(log.times(TTSTextFrame)[3:], [second + 0.3 * k for k in range(1, 4)])


def test_uninterruptible_span_is_announced_upstream_while_it_plays(call):
    t = _transport()
    bot = ToneBot(PCM16K, reply_secs=1.0, speed=4.0)

    async def script(task):
        for f in uninterruptible(TTSSpeakFrame("legal notice"), reason="notice"):
            await task.queue_frame(f)
        await task.clock.sleep(2.0)

    log = call(t, [bot], script)
    allowed = [(tm, f.allowed) for tm, f in log.up if isinstance(f, InterruptionsAllowedFrame)]
    first_play = t.memory_sink.audio_events[0].play_start
    assert [a for _, a in allowed] == [False, True]
    assert allowed[0][0] <= first_play + 1e-9
    assert allowed[1][0] == pytest.approx(_play_end(t.memory_sink))
    assert len(log.frames(EnableInterruptionsFrame)) == 1
    # The input transport refused to interrupt in between, and allows it again after.
    assert t.input().span_allowed


def test_flush_inside_a_span_re_enables_interruptions(call):
    t = _transport()
    bot = ToneBot(PCM16K, reply_secs=2.0, speed=4.0)

    async def script(task):
        for f in uninterruptible(TTSSpeakFrame("notice")):
            await task.queue_frame(f)
        await task.clock.sleep(0.5)
        assert not t.input().span_allowed
        await task.queue_frame(InterruptionFrame())  # from outside the input's gate
        await task.clock.sleep(0.1)

    log = call(t, [bot], script)
    assert [f.allowed for f in log.frames(InterruptionsAllowedFrame, up=True)] == [False, True]
    assert t.input().span_allowed


def test_wire_failure_is_a_closed_wire(call, caplog):
    t = _transport()
    bot = ToneBot(PCM16K, reply_secs=2.0, speed=4.0)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hi"))
        await task.clock.sleep(0.5)
        t.memory_sink.close()
        await task.clock.sleep(0.5)

    with caplog.at_level(logging.WARNING):
        log = call(t, [bot], script)
    out = t.output()
    assert out.closed and "treating it as closed" in caplog.text
    # Reported stopped; words never heard do not reach the assistant side; the call ends.
    assert len(log.times(BotStoppedSpeakingFrame)) == 1
    assert len(log.frames(TTSTextFrame)) <= 2
    assert log.end_reason == "test"


def test_mono_only_and_audio_before_other_frames(call):
    t = _transport()

    class Stereo(FrameProcessor):
        async def process_frame(self, frame, direction):
            if isinstance(frame, TTSSpeakFrame):
                await self.push_frame(
                    OutputAudioFrame(audio=bytes(1280), sample_rate=16000, num_channels=2)
                )
                await self.push_frame(OutputAudioFrame(audio=bytes(1000), sample_rate=16000))
                await self.push_frame(TTSTextFrame("x"))
                return
            await self.push_frame(frame, direction)

    async def script(task):
        await task.queue_frame(TTSSpeakFrame("hi"))

    log = call(t, [Stereo()], script)
    sizes = [len(e.audio) for e in t.memory_sink.audio_events]
    # The stereo frame is refused; chunks are whole (the last one padded with silence), and
    # the text waits for the part of its audio that went out in the second chunk.
    assert sizes == [640, 640]
    assert t.memory_sink.audio_events[1].audio[360:] == bytes(280)
    [text_at] = log.times(TTSTextFrame)
    assert text_at == pytest.approx(1000 / 32000)


class _FirstAudioProbe(FrameProcessor):
    """Speaks one chunk per TTSSpeakFrame and notes what was on the wire when its push returned."""

    def __init__(self, sink: MemorySink) -> None:
        super().__init__()
        self.sink = sink
        self.on_wire: list[int] = []

    async def process_frame(self, frame, direction):
        if isinstance(frame, TTSSpeakFrame):
            before = len(self.sink.audio_events)
            await self.push_frame(TTSStartedFrame())
            await self.push_frame(OutputAudioFrame(b"\x01\x00" * 960, sample_rate=16000))
            # No turn of the event loop in between: only a chunk sent inside the push counts.
            self.on_wire.append(len(self.sink.audio_events) - before)
            await self.push_frame(TTSStoppedFrame())
            return
        await self.push_frame(frame, direction)


def test_an_utterances_first_chunk_is_on_the_wire_when_the_push_returns(call):
    t = _transport()
    probe = _FirstAudioProbe(t.memory_sink)

    async def script(task):
        for _ in range(2):  # the second utterance starts after the first one has played
            await task.queue_frame(TTSSpeakFrame("hi"))
            await asyncio.sleep(1.0)

    log = call(t, [probe], script)
    # The first 20 ms chunk of each utterance went out from inside the push; the other two
    # chunks of each followed from the sender, paced as usual.
    assert probe.on_wire == [1, 1]
    assert len(t.memory_sink.audio_events) == 6
    assert len(log.times(BotStartedSpeakingFrame)) == 2
