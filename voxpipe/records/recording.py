"""Call recording: two channels, caller on the left, the bot on the right *as the caller heard it*.

``CallRecording`` is a processor the bot places right after its compliance processors (payment
guard, consent gate), so it learns of a payment pause or a consent answer the moment it is
decided. It taps the call's transports (``attach``): the input transport hands it the caller's
audio as it arrives; the output transport hands it every chunk it puts on the wire with the
clock time that chunk starts playing, and tells it when a flush (an interruption, a cancel, the
wire closing) discarded what the far end had not played yet. So the right channel is cut
exactly where the caller stopped hearing the bot, on the call's clock.

Both channels are placed on one timeline (samples since the recording began, at the output's
rate, 8 kHz on phone lines) and written out interleaved, a fraction of a second behind the
clock (bot audio may still be flushed until it has played), to a spool file through
``RecordingWriter``: sealed chunk by chunk with the envelope's streaming writer when a KEK is
set. Memory is that short window, whatever the call's length.

Compliance: while a payment pause lasts both channels are written as silence. Where consent is
required nothing is written before it is granted: the recording *starts at the grant* (there is
no pre-consent buffer). A refusal at any time (``RetentionConsentFrame(granted=False)``, also
after a grant: withdrawal) deletes what was written and stops recording.
"""

from __future__ import annotations

import asyncio
import bisect
import fcntl
import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxpipe.audio.convert import AudioConverter, bytes_per_sample
from voxpipe.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
    StartFrame,
)
from voxpipe.processors.base import FrameProcessor

if TYPE_CHECKING:
    from voxpipe.call import Call
    from voxpipe.records.envelope import KeyRing
    from voxpipe.records.storage import RecordingStore
    from voxpipe.transports.input import BaseInputTransport
    from voxpipe.transports.output import BaseOutputTransport

__all__ = ["CallRecording", "RecordingWriter", "recording_aad", "recording_for_call", "wav_header"]

logger = logging.getLogger(__name__)

WAV_HEADER_LEN = 44
RECORDING_CHUNK = 64 * 1024  # envelope chunk: ~2 s of 8 kHz stereo PCM16


def recording_aad(call_id: str) -> bytes:
    """Associated data binding a sealed recording to its call (a moved object does not open)."""
    return b"voxpipe-recording:" + call_id.encode()


def wav_header(sample_rate: int, data_len: int, channels: int = 2) -> bytes:
    """The 44-byte header of a PCM16 WAV; ``data_len`` 0xFFFFFFFF while the length is unknown."""
    riff = 0xFFFFFFFF if data_len >= 0xFFFFFFFF - 36 else 36 + data_len
    block = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", min(data_len, 0xFFFFFFFF))
    )


class RecordingWriter:
    """Writes a stereo PCM16 WAV to a file as it grows, sealed when ``ring`` is given.

    The WAV header's lengths are unknown while writing (streaming WAV, 0xFFFFFFFF); readers
    take the length from the object's size (``voxpipe.records.playback``).
    """

    def __init__(
        self, path: Path, sample_rate: int, *, ring: KeyRing | None = None, aad: bytes = b""
    ) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()/abort()
        # Held while this process writes: salvage (voxpipe.records.salvage) takes a `.part`
        # only when this lock is free, i.e. when its writer died.
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._sealer: Any = None
        if ring is not None:
            from voxpipe.records.envelope import EnvelopeWriter

            self._sealer = EnvelopeWriter(ring, aad, chunk_size=RECORDING_CHUNK)
            self._file.write(self._sealer.header)
        self.frames = 0
        self._write(wav_header(sample_rate, 0xFFFFFFFF))

    def _write(self, data: bytes) -> None:
        if self._sealer is not None:
            data = self._sealer.write(data)
        if data:
            self._file.write(data)

    def write(self, left: np.ndarray, right: np.ndarray) -> None:
        """Append ``len(left)`` stereo frames (two int16 arrays of equal length)."""
        stereo = np.empty((len(left), 2), dtype="<i2")
        stereo[:, 0] = left
        stereo[:, 1] = right
        self._write(stereo.tobytes())
        self.frames += len(left)

    def close(self) -> None:
        """Finish the file (the envelope's final chunk), flushed to disk."""
        if self._file.closed:
            return
        if self._sealer is not None:
            self._file.write(self._sealer.close())
        elif self.frames:
            # A clear file can carry its real lengths (a sealed one is never rewritten).
            self._file.seek(0)
            self._file.write(wav_header(self.sample_rate, self.frames * 4))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        """Close and delete what was written."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class _Timeline:
    """Caller and bot audio placed on one sample timeline, released once it cannot change."""

    def __init__(self, rate: int, t0: float, writer: RecordingWriter, delay_s: float = 0.0) -> None:
        self.rate = rate
        # Held back from the file: a pause reaching back (a card number spoken before it was
        # detected) can still silence it. Memory is this window, whatever the call's length.
        self.delay = round(delay_s * rate)
        self.t0 = t0
        self.writer = writer
        self.done = 0  # samples written to the file
        # Caller samples from ``done`` on, as int16 bytes: appending a frame and dropping what
        # is written are amortized O(frame) (an array concatenated per frame copied the whole
        # held-back window, 20 s, fifty times a second).
        self._left = bytearray()
        self.segments: list[tuple[int, np.ndarray]] = []  # bot audio: (start sample, samples)
        self.pauses: list[list[int]] = []  # [start, end] samples; end -1 while the pause lasts
        # Caller audio more than this behind the clock is taken as a gap (silence), so memory
        # stays bounded even if the caller's stream stalls.
        self.slack = rate // 2

    def sample_at(self, t: float) -> int:
        return max(0, round((t - self.t0) * self.rate))

    def caller(self, pcm: bytes, now: float) -> None:
        """Caller audio (little-endian PCM16 bytes) that arrived at ``now``."""
        self.caller_run(pcm, [(len(pcm) // 2, now)])

    def caller_run(self, pcm: bytes, chunks: list[tuple[int, float]]) -> None:
        """Caller chunks that arrived one after another, their PCM16 joined in ``pcm``.

        ``chunks`` holds each chunk's length in samples and arrival time, in order. A chunk
        arriving more than ``slack`` after the audio before it ended is preceded by silence.
        """
        end = self.done + len(self._left) // 2  # where the next chunk's audio lands
        taken = 0  # bytes of ``pcm`` placed so far
        pos = 0  # bytes of ``pcm`` up to the current chunk
        for n, now in chunks:
            gap = self.sample_at(now) - n - end
            if gap > self.slack:
                self._left += pcm[taken:pos]
                self._left += bytes(2 * gap)
                taken = pos
                end += gap
            end += n
            pos += 2 * n
        self._left += pcm[taken:] if taken else pcm

    def bot(self, pcm: np.ndarray, start_t: float) -> None:
        start = round((start_t - self.t0) * self.rate)
        if start < self.done:  # began before the recording (or before what is written)
            pcm = pcm[self.done - start :]
            start = self.done
        if len(pcm):
            segments = self.segments
            if segments and start < segments[-1][0]:
                # Out of play order (not from an output transport): keep the list sorted,
                # which is what lets a commit stop at the first segment it cannot write yet.
                bisect.insort(segments, (start, pcm), key=lambda seg: seg[0])
            else:
                segments.append((start, pcm))

    def flush_bot(self, t: float) -> None:
        """The far end discarded what it had not played at ``t``: cut the bot channel there."""
        cut = max(self.done, self.sample_at(t))
        kept: list[tuple[int, np.ndarray]] = []
        for start, pcm in self.segments:
            if start >= cut:
                continue
            if start + len(pcm) > cut:
                pcm = pcm[: cut - start]
            kept.append((start, pcm))
        self.segments = kept

    def pause(self, t: float) -> bool:
        """Silence from ``t`` on; False when part of that was already written."""
        start = self.sample_at(t)
        if not self.pauses or self.pauses[-1][1] != -1:
            self.pauses.append([max(start, self.done), -1])
        elif start < self.pauses[-1][0]:
            self.pauses[-1][0] = max(start, self.done)
        return start >= self.done

    def due_at(self, every: int) -> float:
        """The clock time from which at least ``every`` more samples can be written."""
        return self.t0 + (self.done + self.delay + every) / self.rate

    def resume(self, t: float) -> None:
        if self.pauses and self.pauses[-1][1] == -1:
            self.pauses[-1][1] = self.sample_at(t)

    def commit(self, now: float, *, final: bool = False) -> None:
        """Write out what can no longer change (everything on ``final``)."""
        limit = self.sample_at(now)
        left_end = self.done + len(self._left) // 2
        if not final:
            limit -= self.delay
        if final:
            bot_end = max((s + len(p) for s, p in self.segments), default=0)
            upto = max(left_end, min(bot_end, limit))
        else:
            if left_end < limit - self.slack:  # the caller's stream stalled: silence
                self._left += bytes(2 * (limit - self.slack - left_end))
                left_end = limit - self.slack
            upto = min(left_end, limit)
            # Caller audio fed faster than the clock (a replay): keep at most a minute ahead.
            upto = max(upto, left_end - 60 * self.rate)
        n = upto - self.done
        if n <= 0:
            return
        left = np.zeros(n, dtype=np.int16)
        have = min(n, len(self._left) // 2)
        left[:have] = np.frombuffer(self._left, dtype="<i2", count=have)
        del self._left[: 2 * have]
        right = np.zeros(n, dtype=np.int16)
        # Segments are in start order: only the head (starting before ``upto``) is written;
        # the held 20 s of bot audio after it is not walked at every commit.
        segments = self.segments
        i, kept = 0, []
        while i < len(segments) and segments[i][0] < upto:
            start, pcm = segments[i]
            a, b = max(start, self.done), min(start + len(pcm), upto)
            if b > a:
                right[a - self.done : b - self.done] = pcm[a - start : b - start]
            if start + len(pcm) > upto:
                kept.append((upto, pcm[upto - start :]))
            i += 1
        if i:
            self.segments = kept + segments[i:] if kept else segments[i:]
        for p_start, p_end in self.pauses:
            end = upto if p_end == -1 else p_end
            a, b = max(p_start, self.done), min(end, upto)
            if b > a:
                left[a - self.done : b - self.done] = 0
                right[a - self.done : b - self.done] = 0
        self.pauses = [p for p in self.pauses if p[1] == -1 or p[1] > upto]
        self.writer.write(left, right)
        self.done = upto


class CallRecording(FrameProcessor):
    """Records the call in two channels (caller left, bot as heard right) to the recording spool.

    Place it right after the compliance processors and ``attach`` it to the call's input and
    output transports. At the end of the call the file is finished and uploaded (retried from
    the spool while the object store is down).
    """

    def __init__(
        self,
        call_id: str,
        store: RecordingStore,
        *,
        ring: KeyRing | None = None,
        require_consent: bool = False,
        sample_rate: int | None = None,
        commit_every_s: float = 1.0,
        hold_s: float = 20.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.recorded_call_id = call_id
        self.store = store
        self.ring = ring
        self.require_consent = require_consent
        self.sample_rate = sample_rate
        # How much is written at a time (each write costs the same whatever its length).
        self.commit_every_s = commit_every_s
        # Audio is written this far behind the clock, so a card number detected in a transcript
        # (seconds after it was spoken, a held final up to 10 s later) is silenced in the file.
        self.hold_s = hold_s
        self.consent: bool | None = None
        self.paused = False
        self.deleted = False
        self.finished: Path | None = None
        self._timeline: _Timeline | None = None
        self._writer: RecordingWriter | None = None
        self._in: AudioConverter | None = None
        self._out: AudioConverter | None = None
        self._upload: asyncio.Task[bool] | None = None
        # What the taps handed over since the last commit: (audio, encoding, rate, time).
        self._caller_in: list[tuple[bytes, str, int, float]] = []
        self._bot_in: list[tuple[bytes, str, int, float]] = []
        self._due_at = float("inf")

    # ------------------------------------------------------------------ wiring

    def attach(
        self, input_transport: BaseInputTransport, output_transport: BaseOutputTransport
    ) -> None:
        """Tap the call's transports (their ``audio_taps``) for caller and played bot audio."""
        input_transport.audio_taps.append(self)
        output_transport.audio_taps.append(self)
        if self.sample_rate is None:
            self.sample_rate = output_transport.params.audio_out.sample_rate

    @property
    def recording(self) -> bool:
        """Whether audio is being written now."""
        return self._timeline is not None

    # ------------------------------------------------------------------ taps

    def _pcm_bytes(self, conv_attr: str, audio: bytes, encoding: str, rate: int) -> bytes:
        conv: AudioConverter | None = getattr(self, conv_attr)
        target = self.sample_rate or rate
        if conv is None or conv.in_encoding != encoding or conv.in_rate != rate:
            conv = AudioConverter(encoding, rate, "pcm16", target)
            setattr(self, conv_attr, conv)
        return conv.process(audio)

    def _pcm(self, conv_attr: str, audio: bytes, encoding: str, rate: int) -> np.ndarray:
        return np.frombuffer(self._pcm_bytes(conv_attr, audio, encoding, rate), dtype="<i2")

    def caller_audio(self, audio: bytes, encoding: str, sample_rate: int) -> None:
        """Input transport tap: caller audio that just arrived."""
        tl = self._timeline
        if tl is None:
            return
        now = self.clock.now()
        # Kept as it came and placed on the timeline at the next commit, decoded in one go:
        # per 20 ms frame this tap is then an append (it was ~20 us of the loop at 100 calls).
        self._caller_in.append((audio, encoding, sample_rate, now))
        if now >= self._due_at:
            self._commit(tl, now)

    def bot_audio(self, chunk: bytes, encoding: str, sample_rate: int, play_at: float) -> None:
        """Output transport tap: a chunk sent to the wire that starts playing at ``play_at``."""
        tl = self._timeline
        if tl is None:
            return
        self._bot_in.append((chunk, encoding, sample_rate, play_at))
        now = self.clock.now()
        if now >= self._due_at:
            self._commit(tl, now)

    def bot_flushed(self, at: float) -> None:
        """Output transport tap: what the far end had not played at ``at`` was discarded."""
        if self._timeline is not None:
            self._settle(self._timeline)
            self._timeline.flush_bot(at)
        if self._out is not None:
            self._out.reset()

    def _settle(self, tl: _Timeline) -> None:
        """Place the audio the taps kept since the last commit on the timeline, in order."""
        if self._caller_in:
            pending, self._caller_in = self._caller_in, []
            i = 0
            while i < len(pending):
                # A run of chunks in one format is decoded in one call.
                _, encoding, rate, _ = pending[i]
                j = i + 1
                while j < len(pending) and pending[j][1] == encoding and pending[j][2] == rate:
                    j += 1
                self._caller_run(tl, pending[i:j], encoding, rate)
                i = j
        if self._bot_in:
            pending_bot, self._bot_in = self._bot_in, []
            for chunk, encoding, rate, play_at in pending_bot:
                tl.bot(self._pcm("_out", chunk, encoding, rate), play_at)

    def _caller_run(
        self, tl: _Timeline, run: list[tuple[bytes, str, int, float]], encoding: str, rate: int
    ) -> None:
        target = self.sample_rate or rate
        if target != rate:
            # A resampler's output per chunk is not a fixed share of its input: chunk by chunk.
            for audio, _, _, now in run:
                tl.caller(self._pcm_bytes("_in", audio, encoding, rate), now)
            return
        width = bytes_per_sample(encoding)
        pcm = self._pcm_bytes("_in", b"".join(c[0] for c in run), encoding, rate)
        tl.caller_run(pcm, [(len(audio) // width, now) for audio, _, _, now in run])

    def _commit(self, tl: _Timeline, now: float, *, final: bool = False) -> None:
        self._settle(tl)
        tl.commit(now, final=final)
        self._due_at = tl.due_at(round(self.commit_every_s * tl.rate))

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, RetentionConsentFrame):
            await self._consent(frame)
        elif isinstance(frame, PauseRecordingFrame):
            self.paused = True
            if self._timeline is not None:
                now = self.clock.now()
                since = now if frame.since is None else min(frame.since, now)
                if not self._timeline.pause(since):
                    logger.warning(
                        "call %s: a pause reached %.1f s back, past the %.0f s the recording "
                        "holds; the audio before was already written",
                        self.recorded_call_id,
                        now - since,
                        self.hold_s,
                    )
        elif isinstance(frame, ResumeRecordingFrame):
            self.paused = False
            if self._timeline is not None:
                self._timeline.resume(self.clock.now())
        await self.push_frame(frame, direction)

    async def on_start(self, frame: StartFrame) -> None:
        if self.sample_rate is None:
            self.sample_rate = frame.audio_out_sample_rate
        if not self.require_consent:
            self._begin()

    def _begin(self) -> None:
        if self._timeline is not None or self.deleted:
            return
        rate = self.sample_rate or 8000
        path = self.store.spool.part_path(self.recorded_call_id)
        self._writer = RecordingWriter(
            path, rate, ring=self.ring, aad=recording_aad(self.recorded_call_id)
        )
        tl = self._timeline = _Timeline(rate, self.clock.now(), self._writer, self.hold_s)
        self._caller_in, self._bot_in = [], []
        # Taps compare the clock with this, not the timeline's arithmetic, at every frame.
        self._due_at = tl.due_at(round(self.commit_every_s * rate))
        if self.paused:
            self._timeline.pause(self.clock.now())
        logger.info("recording call %s at %d Hz (%s)", self.recorded_call_id, rate, path)

    async def _consent(self, frame: RetentionConsentFrame) -> None:
        if frame.granted:
            if self.consent is None:
                self.consent = True
                self._begin()  # the recording starts at the grant: nothing before it
            return
        # Declined, or withdrawn after a grant (RetentionConsentFrame has no separate
        # withdrawal flag: a refusal after a grant is a withdrawal): nothing may be kept.
        self.consent = False
        await self._delete()

    async def _delete(self) -> None:
        had = self._timeline is not None
        self._timeline = None
        self._caller_in, self._bot_in = [], []
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.deleted = True
        try:
            await self.store.delete(self.recorded_call_id)
        except Exception as exc:  # the store is down: the spool copy is gone already
            logger.warning(
                "could not delete the stored recording of %s: %s", self.recorded_call_id, exc
            )
        if had:
            logger.info("recording of call %s deleted: consent refused", self.recorded_call_id)

    # ------------------------------------------------------------------ the end

    async def on_end(self, frame: EndFrame) -> None:
        pass  # the output transport still plays the last audio: finish in cleanup

    async def on_cancel(self, frame: CancelFrame) -> None:
        pass

    async def cleanup(self) -> None:
        await super().cleanup()
        await self.finish()

    async def finish(self) -> Path | None:
        """The call is over: write the rest, close the file, upload it (retried if it fails)."""
        tl, writer = self._timeline, self._writer
        if tl is None or writer is None:
            return None
        self._timeline = None
        self._writer = None
        self._commit(tl, self.clock.now(), final=True)
        writer.close()
        self.finished = self.store.spool.finish(self.recorded_call_id)
        self.store.start()  # the retry loop, for this and any earlier recording
        await self.store.upload(self.recorded_call_id)
        return self.finished


def recording_for_call(call: Call, *, require_consent: bool) -> CallRecording | None:
    """The call's recorder per settings (None with ``RECORDING=off``); attach it yourself."""
    settings = call.settings
    if settings.recording != "on":
        return None
    from voxpipe.records.storage import recording_store
    from voxpipe.state import make_transcript_cipher

    cipher = make_transcript_cipher(settings)
    return CallRecording(
        call.call_id,
        recording_store(settings),
        ring=cipher.ring if cipher is not None else None,
        require_consent=require_consent,
        sample_rate=call.audio_out.sample_rate,
    )
