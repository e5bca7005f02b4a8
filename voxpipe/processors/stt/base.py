"""STTService: what every speech-to-text processor shares.

A provider subclass implements ``process_audio`` (caller audio in) and reports what it
recognises with ``push_transcript``. This class turns that into ``InterimTranscriptionFrame``
and ``TranscriptionFrame``, drops final transcripts under the confidence threshold (default
0.65), pauses transcription between ``PauseRecordingFrame`` and ``ResumeRecordingFrame``
(no caller audio reaches the provider meanwhile, e.g. while card numbers are spoken) and
measures time to first byte: from the caller's end of speech (``UserStoppedSpeakingFrame``)
to the final transcript. Word times are seconds of the audio transcribed since the call
started (audio not sent while paused does not count); ``push_transcript`` adds each word's
``call_start`` / ``call_end``: the same instants on the call's clock, mapped through the
arrival of the caller's audio (``StreamTimeline``), so a word can be compared with the bot's
speech (e.g. by the silence-artifact filter) whatever the STT's and the network's latency.
A service that talks to a provider over the network tracks its outages with ``self.outage``
(``processors/outage.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from voxpipe.frames import (
    Frame,
    FrameDirection,
    InputAudioFrame,
    InterimTranscriptionFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    StartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    Word,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.outage import DEFAULT_OUTAGE_GRACE_S, OutageTracker
from voxpipe.processors.stt.timeline import StreamTimeline
from voxpipe.processors.turn.frames import UserSilenceStartedFrame

T = TypeVar("T")

__all__ = ["DEFAULT_CONFIDENCE_THRESHOLD", "STTService"]

DEFAULT_CONFIDENCE_THRESHOLD = 0.65


class STTService(FrameProcessor):
    """Base of the speech-to-text processors: caller audio in, transcription frames out.

    Caller audio (``InputAudioFrame``) is consumed here unless ``audio_passthrough`` is set;
    every other frame passes on. Final transcripts under ``confidence_threshold`` are dropped.
    """

    model_name: str | None = None
    provider_name = "stt"  # the vendor, as outage reports and metrics name it

    def __init__(
        self,
        *,
        confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
        language: str | None = None,
        audio_passthrough: bool = False,
        outage_grace_s: float = DEFAULT_OUTAGE_GRACE_S,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in 0..1, got {confidence_threshold}")
        self.confidence_threshold = confidence_threshold
        self.language = language
        self.audio_passthrough = audio_passthrough
        self.user_id = ""
        self.audio_in_sample_rate = 16000
        self.audio_in_encoding = "pcm16"
        self.paused = False
        self.dropped_low_confidence = 0  # final transcripts dropped by the threshold
        # A provider reached over the network reports its outages downstream, where an outage
        # policy (apology, goodbye) sits, and gives up after the grace (PROVIDER_OUTAGE_GRACE_S).
        self.outage = OutageTracker(
            self,
            service="stt",
            provider=self.provider_name,
            grace_s=outage_grace_s,
            direction=FrameDirection.DOWNSTREAM,
        )
        self.timeline = StreamTimeline()  # stream seconds -> call clock

    # ------------------------------------------------------------------ for subclasses

    async def process_audio(self, frame: InputAudioFrame) -> None:
        """Take one chunk of caller audio (never called while transcription is paused)."""
        raise NotImplementedError

    async def on_user_started_speaking(self) -> None:
        """The VAD heard the caller start speaking."""

    async def on_user_stopped_speaking(self) -> None:
        """The VAD heard the caller stop speaking (a recogniser may finalize now)."""

    async def on_user_silence_started(self) -> None:
        """The VAD heard the caller go quiet, the turn not yet decided (a recogniser may
        finalize now: a reply can be prepared from the final before the turn is confirmed)."""

    async def on_pause(self) -> None:
        """Transcription paused: no caller audio will come until ``on_resume``."""

    async def on_resume(self) -> None:
        """Transcription resumed."""

    async def push_transcript(
        self,
        text: str,
        *,
        final: bool,
        confidence: float = 1.0,
        words: Sequence[Word] = (),
        language: str | None = None,
    ) -> bool:
        """Push a recognised transcript; returns False when it was empty or dropped."""
        text = text.strip()
        if not text:
            return False
        lang = language or self.language
        words = [
            dataclasses.replace(
                w,
                call_start=self.timeline.call_time(w.start),
                call_end=self.timeline.call_time(w.end),
            )
            if w.call_start is None
            else w
            for w in words
        ]
        if not final:
            await self.push_frame(
                InterimTranscriptionFrame(
                    text,
                    user_id=self.user_id,
                    confidence=confidence,
                    language=lang,
                    words=list(words),
                )
            )
            return True
        if confidence < self.confidence_threshold:
            self.dropped_low_confidence += 1
            self.logger.info(
                "dropped a final transcript under the confidence threshold (%.2f < %.2f): %r",
                confidence,
                self.confidence_threshold,
                text,
            )
            return False
        ttfb = self.take_ttfb()
        await self.push_frame(
            TranscriptionFrame(
                text, user_id=self.user_id, confidence=confidence, language=lang, words=list(words)
            )
        )
        await self.push_ttfb_metrics(ttfb, self.model_name)  # after the transcript: off its path
        return True

    # ------------------------------------------------------------------ frame flow

    async def on_start(self, frame: StartFrame) -> None:
        meta = frame.metadata or {}
        self.user_id = str(meta.get("caller") or meta.get("user_id") or "")
        self.audio_in_sample_rate = frame.audio_in_sample_rate
        self.audio_in_encoding = str(meta.get("audio_in_encoding") or "pcm16")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioFrame):
            if not self.paused:
                self.timeline.add(frame, self.clock.now())
                await self.process_audio(frame)
            if self.audio_passthrough:
                await self.push_frame(frame, direction)
            return
        if isinstance(frame, UserStartedSpeakingFrame):
            # A measurement still open belongs to an earlier turn that got no transcript.
            self._ttfb_start = None
            await self.on_user_started_speaking()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self.start_ttfb_metrics()
            await self.on_user_stopped_speaking()
        elif isinstance(frame, UserSilenceStartedFrame):
            await self.on_user_silence_started()
        elif isinstance(frame, PauseRecordingFrame):
            if not self.paused:
                self.paused = True
                self.timeline.gap()  # the provider's time stands still; the call's does not
                await self.on_pause()
        elif isinstance(frame, ResumeRecordingFrame):
            if self.paused:
                self.paused = False
                await self.on_resume()
        await self.push_frame(frame, direction)
