"""Turns a stream of PCM16 audio into user started/stopped speaking events (Silero VAD)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from voxpipe.audio.resample import StreamingResampler
from voxpipe.audio.volume import dbfs_to_volume
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.processors.vad.model import (
    SUPPORTED_SAMPLE_RATES,
    SileroVADModel,
    SileroVADStream,
)

__all__ = ["VADAnalyzer", "VADEvent", "VADParams", "VADState"]


@dataclass(slots=True)
class VADParams:
    """When a run of audio windows counts as the user speaking.

    A window is speech when the model's probability is at least ``confidence`` and its
    volume (0..1, see ``voxpipe.audio.volume``; 0.6 is -46 dBFS) is at least
    ``min_volume``. Speech must last ``start_secs`` before "started" (so a click or a cough
    does not count) and silence ``stop_secs`` before "stopped" (so pauses between words and
    sentences do not end the turn). The defaults suit phone calls and browsers alike.

    ``hysteresis``: once a run of speech has begun, a window stays speech down to
    ``confidence - hysteresis`` (Silero's own iterator uses 0.15). Real speech often dips a
    window or two just under the threshold (0.6-0.69 on a phone line); without it, one such
    window restarts the ``start_secs`` count, and a short barge-in can end before "started".

    ``start_gap_secs``: while speech is starting, a pause shorter than this (the gap between
    two syllables, one or two windows) does not restart the ``start_secs`` count; only the
    speech windows count towards it. Silero's own segmenter merges speech across pauses
    under 0.1 s. Without it, a caller whose first words come in short syllables can talk
    for a second over the bot before "started".
    """

    confidence: float = 0.7
    start_secs: float = 0.2
    stop_secs: float = 0.8
    min_volume: float = 0.6
    hysteresis: float = 0.15
    start_gap_secs: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"VADParams.confidence must be within 0..1, got {self.confidence}")
        if not 0.0 <= self.min_volume <= 1.0:
            raise ValueError(f"VADParams.min_volume must be within 0..1, got {self.min_volume}")
        if not 0.0 <= self.hysteresis <= self.confidence:
            raise ValueError(
                f"VADParams.hysteresis must be within 0..confidence ({self.confidence}), "
                f"got {self.hysteresis}"
            )
        if self.start_secs < 0 or self.stop_secs < 0 or self.start_gap_secs < 0:
            raise ValueError(
                "VADParams.start_secs, stop_secs and start_gap_secs must be >= 0, got "
                f"{self.start_secs}, {self.stop_secs}, {self.start_gap_secs}"
            )


class VADState(enum.Enum):
    """Where the analyzer is between quiet and speaking."""

    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(slots=True, frozen=True)
class VADEvent:
    """The user started or stopped speaking.

    ``time`` is the stream time (seconds of audio fed so far) at the end of the window that
    decided it; ``speech_time`` is when the speech itself began (start of the first speech
    window of the run) or ended (end of the last speech window).
    """

    kind: Literal["started", "stopped"]
    time: float
    speech_time: float


class VADAnalyzer:
    """Feeds PCM16 audio of any chunk size through Silero VAD and reports speaking transitions.

    ``analyze(pcm)`` runs the model inline (one stream); ``await analyze_async(pcm)`` goes
    through a ``BatchedVAD`` when one is given, so many calls share inferences. Both return
    the events the chunk completed, usually none. Audio at rates other than 8 or 16 kHz is
    resampled to 16 kHz first. One analyzer per audio stream.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        params: VADParams | None = None,
        *,
        model: SileroVADModel | None = None,
        batched: BatchedVAD | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.params = params if params is not None else VADParams()
        self.batched = batched
        if model is None:
            model = batched.model if batched is not None else SileroVADModel.shared()
        vad_rate = sample_rate if sample_rate in SUPPORTED_SAMPLE_RATES else 16000
        self._resampler = (
            StreamingResampler(sample_rate, vad_rate) if vad_rate != sample_rate else None
        )
        self.stream = SileroVADStream(vad_rate, model)
        self.window_secs = self.stream.window / vad_rate
        self._window_bytes = 2 * self.stream.window
        self._buf = bytearray()
        self._reset_state()

    def _reset_state(self) -> None:
        self.state = VADState.QUIET
        self.windows = 0  # windows analysed since the start (or the last reset)
        self.last_probability = 0.0
        self.last_volume = 0.0
        self._run = 0.0  # seconds of speech (STARTING) or silence (STOPPING) so far
        self._gap = 0.0  # seconds of the current pause while STARTING
        self._run_start = 0.0  # stream time the current speech run began
        self._last_speech_end = 0.0

    @property
    def speaking(self) -> bool:
        """True from "started" until "stopped"."""
        return self.state in (VADState.SPEAKING, VADState.STOPPING)

    @property
    def stream_time(self) -> float:
        """Seconds of audio analysed so far (whole windows)."""
        return self.windows * self.window_secs

    def set_params(self, params: VADParams) -> None:
        """Change thresholds mid-stream; the current state is kept."""
        self.params = params

    def reset(self) -> None:
        """Forget everything: model state, buffered audio, speaking state and stream time."""
        self.stream.reset()
        self._buf.clear()
        if self._resampler is not None:
            self._resampler.reset()
        self._reset_state()

    def _windows(self, pcm: bytes | bytearray | memoryview) -> list[bytes]:
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        buf = self._buf
        buf += pcm
        size = self._window_bytes
        n = len(buf) // size
        if not n:
            return []
        out = [bytes(buf[i * size : (i + 1) * size]) for i in range(n)]
        del buf[: n * size]
        return out

    def analyze(self, pcm: bytes | bytearray | memoryview) -> list[VADEvent]:
        """Add audio and return the events it completed (runs the model inline)."""
        events: list[VADEvent] = []
        for window in self._windows(pcm):
            event = self._step(self.stream.probability(window))
            if event is not None:
                events.append(event)
        return events

    async def analyze_async(self, pcm: bytes | bytearray | memoryview) -> list[VADEvent]:
        """Add audio and return the events it completed, batching with other calls if possible."""
        if self.batched is None:
            return self.analyze(pcm)
        events: list[VADEvent] = []
        for window in self._windows(pcm):
            prob = await self.batched.probability(self.stream, window)
            event = self._step(prob)
            if event is not None:
                events.append(event)
        return events

    def _step(self, prob: float) -> VADEvent | None:
        """Advance the state machine by one window with the model's probability for it."""
        params = self.params
        start = self.windows * self.window_secs
        self.windows += 1
        end = start + self.window_secs
        self.last_probability = prob
        state = self.state
        # Starting a run, or ending a pause, takes the full threshold; inside a run (STARTING
        # or SPEAKING) a window just under it still counts as speech (hysteresis).
        inside = state is VADState.STARTING or state is VADState.SPEAKING
        threshold = params.confidence - params.hysteresis if inside else params.confidence
        speech = False
        if prob >= threshold:
            # Volume only matters for windows the model calls speech, so silence skips it.
            self.last_volume = _volume(self.stream.last_rms())
            speech = self.last_volume >= params.min_volume
        if speech:
            if state is VADState.QUIET:
                self.state = VADState.STARTING
                self._run_start = start
                self._run = 0.0
                state = VADState.STARTING
            elif state is VADState.STOPPING:
                self.state = VADState.SPEAKING
            self._last_speech_end = end
            if state is VADState.STARTING:
                self._gap = 0.0
                self._run += self.window_secs
                if self._run >= params.start_secs - 1e-9:
                    self.state = VADState.SPEAKING
                    return VADEvent("started", end, self._run_start)
            return None
        if state is VADState.STARTING:
            # A pause between syllables keeps the run; a longer one ends it (a click, a cough).
            self._gap += self.window_secs
            if self._gap >= params.start_gap_secs - 1e-9:
                self.state = VADState.QUIET
        elif state is VADState.SPEAKING:
            self.state = VADState.STOPPING
            self._run = self.window_secs
        elif state is VADState.STOPPING:
            self._run += self.window_secs
        if self.state is VADState.STOPPING and self._run >= params.stop_secs - 1e-9:
            self.state = VADState.QUIET
            return VADEvent("stopped", end, self._last_speech_end)
        return None


def _volume(rms: float) -> float:
    if rms <= 0.0:
        return 0.0
    return dbfs_to_volume(20.0 * math.log10(rms / 32768.0))
