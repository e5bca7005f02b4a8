"""The call recording: caller left, bot right as heard (cut at the flush), silence during payment
pauses, nothing without consent, sealed chunk by chunk; an hour-long call in flat memory.

Whole pipelines run on the virtual clock with the in-memory wire, whose far-end player
(``MemorySink.render_pcm16``) is the oracle for what the caller heard.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import tracemalloc
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from voxpipe.audio.convert import to_pcm16
from voxpipe.bench.interruption import ToneBot
from voxpipe.frames import (
    EndFrame,
    InterruptionFrame,
    OutputAudioFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
    TTSSpeakFrame,
)
from voxpipe.pipelines import Pipeline, PipelineTask, VirtualClock
from voxpipe.records.envelope import EnvelopeError, KeyRing, open_sealed
from voxpipe.records.recording import CallRecording, _Timeline, recording_aad
from voxpipe.records.storage import FileBackend, RecordingSpool, RecordingStore
from voxpipe.transports.memory import MemorySink, MemoryTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

PHONE = AudioFormat("mulaw", 8000)
RATE = 8000


def _store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(
        FileBackend(tmp_path / "recordings"), RecordingSpool(tmp_path / "spool" / "recordings")
    )


def _tone(freq: float, seconds: float, amp: int = 8000) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * amp).astype("<i2").tobytes()


Script = Callable[[PipelineTask, MemoryTransport], Awaitable[None]]


class _ForgetfulSink(MemorySink):
    """A wire that keeps nothing of what it is sent (so only the recorder's memory is measured)."""

    async def send_audio(self, audio: bytes) -> None:
        now = self._check()
        self._play_end = max(self._play_end, now) + len(audio) / self._bytes_per_sec


def run(
    recording: CallRecording, script: Script, *, bot: bool = True, keep_wire: bool = True
) -> MemoryTransport:
    params = TransportParams(audio_in=PHONE, audio_out=PHONE, vad_enabled=False)
    sink = MemorySink(PHONE) if keep_wire else _ForgetfulSink(PHONE)
    transport = MemoryTransport(params, sink=sink)

    async def main() -> None:
        recording.attach(transport.input(), transport.output())
        middle = [ToneBot(PHONE, reply_secs=3.0, speed=4.0)] if bot else []
        task = PipelineTask(
            Pipeline([transport.input(), recording, *middle, transport.output()]),
            params=transport.task_params(),
            end_timeout=10.0,
        )
        runner = asyncio.get_running_loop().create_task(task.run())
        await task.wait_started()
        await script(task, transport)
        await task.queue_frame(EndFrame(reason="test"))
        await runner

    VirtualClock().run(main())
    return transport


def stored_wav(tmp_path: Path, call_id: str, ring: KeyRing | None) -> tuple[np.ndarray, int]:
    blob = (tmp_path / "recordings" / f"{call_id}.wav").read_bytes()
    if ring is not None:
        blob = open_sealed(ring, blob, recording_aad(call_id))
    # A sealed object keeps the streaming header (unknown length): give wave the real one.
    from voxpipe.records.recording import wav_header

    fixed = wav_header(RATE, len(blob) - 44) + blob[44:]
    with wave.open(io.BytesIO(fixed)) as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        rate = w.getframerate()
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return frames, rate


def test_interrupted_reply_is_cut_where_the_caller_stopped_hearing_it(tmp_path: Path) -> None:
    ring = KeyRing(os.urandom(32))
    rec = CallRecording("CA-int", _store(tmp_path), ring=ring)
    caller = _tone(300, 2.5)

    async def script(task: PipelineTask, t: MemoryTransport) -> None:
        feeding = asyncio.get_running_loop().create_task(t.play_caller(caller, RATE))
        await task.queue_frame(TTSSpeakFrame("long"))
        await task.clock.sleep(0.5)
        await task.queue_frame(InterruptionFrame())
        await task.clock.sleep(0.8)
        await task.queue_frame(TTSSpeakFrame("again"))
        await feeding
        await task.clock.sleep(0.5)

    t = run(rec, script)
    frames, rate = stored_wav(tmp_path, "CA-int", ring)
    assert rate == RATE
    assert not (tmp_path / "spool" / "recordings" / "CA-int.rec").exists()  # uploaded
    left, right = frames[:, 0], frames[:, 1]

    # Right channel: exactly what the far end played, on the call's timeline (the sink's
    # player cuts its buffer at the clear, like Twilio).
    heard = np.frombuffer(t.memory_sink.render_pcm16(0.0, len(right) / RATE), dtype="<i2")
    [clear] = t.memory_sink.clears
    cut = round(clear.time * RATE)
    # Equal but for one sample at the cut where the two round the clear's instant apart.
    assert len(heard) == len(right)
    assert all(abs(int(i) - cut) <= 1 for i in np.nonzero(right != heard)[0])
    sent_1 = [e for e in t.memory_sink.audio_events if e.time <= clear.time]
    sent_end = round((sent_1[-1].play_start + 0.02) * RATE)
    assert sent_end > cut + 400  # audio was sent ahead of the cut (the lead) ...
    assert np.count_nonzero(right[cut:sent_end]) == 0  # ... and is not in the recording
    assert np.count_nonzero(right[cut - 800 : cut]) > 700  # heard up to the cut
    second = round(1.4 * RATE)
    assert np.count_nonzero(right[second : second + 800]) > 700  # the next reply is there

    # Left channel: the caller's audio as it arrived (the wire's mu-law, decoded).
    wire = to_pcm16(t.to_wire(caller, RATE), "mulaw")
    expected = np.frombuffer(wire, dtype="<i2")
    assert np.array_equal(left[: len(expected)], expected)


def test_a_tampered_recording_fails_to_decrypt(tmp_path: Path) -> None:
    ring = KeyRing(os.urandom(32))
    rec = CallRecording("CA-tamper", _store(tmp_path), ring=ring)

    async def script(task: PipelineTask, t: MemoryTransport) -> None:
        await t.play_caller(_tone(300, 3.0), RATE)

    run(rec, script, bot=False)
    path = tmp_path / "recordings" / "CA-tamper.wav"
    blob = path.read_bytes()
    assert b"RIFF" not in blob  # sealed: no clear WAV header at rest
    assert len(open_sealed(ring, blob, recording_aad("CA-tamper"))) == 44 + 4 * 3 * RATE
    altered = bytearray(blob)
    altered[len(blob) // 2] ^= 1
    with pytest.raises(EnvelopeError):
        open_sealed(ring, bytes(altered), recording_aad("CA-tamper"))
    with pytest.raises(EnvelopeError):  # cut short
        open_sealed(ring, blob[: len(blob) - 100], recording_aad("CA-tamper"))
    with pytest.raises(EnvelopeError):  # moved to another call
        open_sealed(ring, blob, recording_aad("CA-other"))


def test_payment_pause_is_silence_on_both_channels(tmp_path: Path) -> None:
    rec = CallRecording("CA-pay", _store(tmp_path))  # no KEK: a clear WAV

    async def script(task: PipelineTask, t: MemoryTransport) -> None:
        feeding = asyncio.get_running_loop().create_task(t.play_caller(_tone(300, 3.0), RATE))
        await task.clock.sleep(1.0)
        await task.queue_frame(PauseRecordingFrame(reason="card"))
        await task.queue_frame(TTSSpeakFrame("go ahead"))
        await task.clock.sleep(1.0)
        await task.queue_frame(ResumeRecordingFrame())
        await feeding

    run(rec, script)
    frames, _ = stored_wav(tmp_path, "CA-pay", None)
    pause = frames[round(1.0 * RATE) + 1 : round(2.0 * RATE)]
    assert np.count_nonzero(pause) == 0
    assert np.count_nonzero(frames[: round(0.95 * RATE), 0]) > 0.9 * 0.95 * RATE
    assert np.count_nonzero(frames[round(2.05 * RATE) : round(2.9 * RATE), 0]) > 0.9 * 0.85 * RATE
    assert np.count_nonzero(frames[round(2.05 * RATE) :, 1]) > 0  # the reply's rest is heard


def _files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.rglob("*") if p.is_file())


def test_a_declined_call_leaves_no_recording(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = CallRecording("CA-no", store, require_consent=True)

    async def script(task: PipelineTask, t: MemoryTransport) -> None:
        feeding = asyncio.get_running_loop().create_task(t.play_caller(_tone(300, 2.0), RATE))
        await task.queue_frame(TTSSpeakFrame("may we record?"))
        await task.clock.sleep(1.5)
        await task.queue_frame(RetentionConsentFrame(granted=False, source="dtmf"))
        await feeding

    run(rec, script)
    assert not rec.recording
    assert _files(tmp_path) == []
    assert not asyncio.run(store.exists("CA-no"))


def test_recording_starts_at_consent_and_a_withdrawal_deletes_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    granted = CallRecording("CA-yes", store, require_consent=True)

    async def grant_late(task: PipelineTask, t: MemoryTransport) -> None:
        feeding = asyncio.get_running_loop().create_task(t.play_caller(_tone(300, 3.0), RATE))
        await task.clock.sleep(1.0)
        await task.queue_frame(RetentionConsentFrame(granted=True, source="dtmf"))
        await feeding

    run(granted, grant_late, bot=False)
    frames, _ = stored_wav(tmp_path, "CA-yes", None)
    # Nothing before the grant: the recording is the last 2 s of the caller's 3 s.
    assert abs(len(frames) - 2 * RATE) <= 0.05 * RATE

    # A store per call's event loop, as in a worker; written 0.5 s behind the clock (not the
    # default 20 s) a quarter second at a time (not 1 s) so that the withdrawal finds audio on
    # disk to delete.
    store = _store(tmp_path)
    withdrawn = CallRecording(
        "CA-withdrawn", store, require_consent=True, hold_s=0.5, commit_every_s=0.25
    )

    async def withdraw(task: PipelineTask, t: MemoryTransport) -> None:
        feeding = asyncio.get_running_loop().create_task(t.play_caller(_tone(300, 3.0), RATE))
        await task.queue_frame(RetentionConsentFrame(granted=True, source="dtmf"))
        await task.clock.sleep(1.5)
        assert store.spool.part_path("CA-withdrawn").stat().st_size > 0  # being written
        await task.queue_frame(RetentionConsentFrame(granted=False, source="withdrawn"))
        await feeding

    run(withdrawn, withdraw, bot=False)
    assert _files(tmp_path) == ["CA-yes.wav"]


@pytest.mark.slow
def test_an_hour_long_call_records_in_flat_memory(tmp_path: Path) -> None:
    """One simulated hour on the virtual clock: traced memory after the first minute and at
    the end differ by less than 1 MiB while ~115 MB of audio go to disk."""
    ring = KeyRing(base64.b64decode(base64.b64encode(os.urandom(32))))
    store = _store(tmp_path)
    rec = CallRecording("CA-hour", store, ring=ring)
    samples: dict[str, int] = {}
    frame_s = 0.2
    chunk = bytes([0x55]) * round(RATE * frame_s)  # mu-law, not silence

    async def script(task: PipelineTask, t: MemoryTransport) -> None:
        clock = task.clock
        inp = t.input()
        reply = OutputAudioFrame(audio=_tone(500, 2.0), sample_rate=RATE)
        for i in range(round(3600 / frame_s)):
            await inp.push_wire_audio(chunk)
            if i % 150 == 0:  # the bot speaks 2 s every 30 s
                await task.queue_frame(reply)
            await clock.sleep(frame_s)
            if i == round(60 / frame_s):
                tracemalloc.start()
                samples["minute"] = tracemalloc.get_traced_memory()[0]
        samples["hour"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()

    try:
        run(rec, script, bot=False, keep_wire=False)
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
    growth = samples["hour"] - samples["minute"]
    assert growth < 1024 * 1024, growth
    size = (tmp_path / "recordings" / "CA-hour.wav").stat().st_size
    assert size > 3600 * RATE * 4  # the whole hour went to disk, stereo 16-bit


def test_a_card_number_read_before_it_was_detected_is_silent_in_the_recording(
    tmp_path: Path,
) -> None:
    """The caller reads a card number unprompted: the transcript that reveals it comes after
    the audio, and the payment guard holds it 2 s more; the recording still has no digit."""
    from voxpipe.frames import (
        TranscriptionFrame,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
    )
    from voxpipe.processors.policy.payment import PaymentGuard

    rec = CallRecording("CA-card", _store(tmp_path))
    guard = PaymentGuard()

    async def script(task: PipelineTask, t: MemoryTransport) -> None:
        clock = task.clock
        await t.play_silence(1.0)
        await task.queue_frame(UserStartedSpeakingFrame())  # the VAD, a moment after onset
        await t.play_caller(_tone(300, 4.0), RATE)  # 1.0-5.0 s: "4111 1111 1111 1111"
        await task.queue_frame(UserStoppedSpeakingFrame())
        await t.play_silence(0.5)
        await task.queue_frame(TranscriptionFrame("my card is 4111 1111 1111 1111"))
        await t.play_silence(10.0)  # the guard's hold, then the pause's quiet spell
        assert guard.paused is False and guard.pauses == 1
        await task.queue_frame(UserStartedSpeakingFrame())
        await t.play_caller(_tone(440, 2.0), RATE)  # 16.5-18.5 s: after the pause
        await task.queue_frame(UserStoppedSpeakingFrame())
        await clock.sleep(0.5)

    params = TransportParams(audio_in=PHONE, audio_out=PHONE, vad_enabled=False)
    transport = MemoryTransport(params, sink=MemorySink(PHONE))

    async def main() -> None:
        rec.attach(transport.input(), transport.output())
        task = PipelineTask(
            Pipeline([transport.input(), guard, rec, transport.output()]),
            params=transport.task_params(),
            end_timeout=10.0,
        )
        runner = asyncio.get_running_loop().create_task(task.run())
        await task.wait_started()
        await script(task, transport)
        await task.queue_frame(EndFrame(reason="test"))
        await runner

    VirtualClock().run(main())
    frames, _ = stored_wav(tmp_path, "CA-card", None)
    assert guard.redactions == 1
    card = frames[: round(5.2 * RATE), 0]
    assert np.count_nonzero(card) == 0  # the whole number, though detected seconds later
    later = frames[round(16.6 * RATE) : round(18.4 * RATE), 0]
    assert np.count_nonzero(later) > 0.9 * len(later)  # recording goes on after the pause


class _Collect:
    """A RecordingWriter stand-in that keeps what the timeline writes."""

    def __init__(self) -> None:
        self.left: list[np.ndarray] = []
        self.right: list[np.ndarray] = []

    def write(self, left: np.ndarray, right: np.ndarray) -> None:
        self.left.append(left.copy())
        self.right.append(right.copy())


def test_caller_chunks_placed_in_one_run_equal_chunk_by_chunk() -> None:
    """The recording keeps caller chunks until a commit and places them in one run: the left
    channel is the same as placing each as it came, including the silence a stall leaves."""
    rng = np.random.default_rng(7)
    chunks = [rng.integers(-3000, 3000, 160, dtype=np.int16).tobytes() for _ in range(60)]
    # 20 ms apart, but the stream stalls 0.9 s after chunk 20 and 0.3 s (under the slack)
    # after chunk 40.
    times, t = [], 10.0
    for i in range(60):
        t += 0.02 + (0.9 if i == 20 else 0.3 if i == 40 else 0.0)
        times.append(t)
    one, run = _Collect(), _Collect()
    a, b = _Timeline(8000, 10.0, one), _Timeline(8000, 10.0, run)  # type: ignore[arg-type]
    for pcm, at in zip(chunks, times, strict=True):
        a.caller(pcm, at)
    b.caller_run(b"".join(chunks), [(160, at) for at in times])
    a.commit(times[-1], final=True)
    b.commit(times[-1], final=True)
    left_a, left_b = np.concatenate(one.left), np.concatenate(run.left)
    assert len(left_a) > 60 * 160 + 0.8 * 8000  # the long stall became silence
    assert np.array_equal(left_a, left_b)


def test_bot_segments_out_of_play_order_are_written_where_they_play() -> None:
    """Commits stop at the first bot segment not yet due, so segments are kept in play order:
    one handed over late (out of order) still lands at its time, across several commits."""
    rng = np.random.default_rng(3)
    segs = [(10.0 + 0.06 * i, rng.integers(-3000, 3000, 480, dtype=np.int16)) for i in range(40)]
    order = list(range(40))
    order[5], order[30] = order[30], order[5]  # one far ahead of its turn, one far behind
    ordered, shuffled = _Collect(), _Collect()
    a, b = _Timeline(8000, 10.0, ordered), _Timeline(8000, 10.0, shuffled)  # type: ignore[arg-type]
    for i in range(40):
        a.bot(segs[i][1], segs[i][0])
        b.bot(segs[order[i]][1], segs[order[i]][0])
    for t in (10.5, 11.0, 11.7, 12.6):
        for tl in (a, b):
            tl.caller(bytes(2 * 8000), t)
            tl.commit(t)
    a.commit(13.0, final=True)
    b.commit(13.0, final=True)
    right_a = np.concatenate(ordered.right)
    assert np.count_nonzero(right_a) > 0.9 * 40 * 480
    assert np.array_equal(right_a, np.concatenate(shuffled.right))
