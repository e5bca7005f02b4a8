"""The end-of-turn decision at the VAD's stop: keep the utterance's audio, ask Smart Turn.

Owned by a call's input transport (``BaseInputTransport``): it is fed every caller frame the
VAD reads (the last 8 s are kept, the model's window), and asked ``complete(...)`` when the VAD
reports a silence. A model failure counts as complete — the VAD's decision, as without the
model — and is logged once per call, so a broken model never leaves a caller unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

import numpy as np

from voxpipe.audio.resample import resample_pcm16
from voxpipe.processors.turn.features import SAMPLE_RATE, WINDOW_SAMPLES, WINDOW_SECONDS
from voxpipe.processors.turn.model import BatchedSmartTurn, SmartTurnModel
from voxpipe.processors.turn.params import TurnParams

__all__ = ["TURN_SHED_METRIC", "TurnGate", "shared_smart_turn"]

# The MetricsFrame metric of a decision skipped under overload (counted in /metrics).
TURN_SHED_METRIC = "turn_decision_shed"

logger = logging.getLogger(__name__)

# Audio kept before the VAD's onset: it reports speech ``start_secs`` after it began.
_PRE_ROLL_S = 0.3

# One batcher per event loop (a worker's); gone with its loop.
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchedSmartTurn] = (
    weakref.WeakKeyDictionary()
)


def shared_smart_turn() -> BatchedSmartTurn:
    """The running event loop's batcher (one per worker loop, created on first use)."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(loop)
    if found is None:
        found = _batchers[loop] = BatchedSmartTurn()
    return found


class TurnGate:
    """One call's end-of-turn decisions (the audio it needs, the model it asks)."""

    def __init__(
        self, params: TurnParams, sample_rate: int, batcher: BatchedSmartTurn | None = None
    ) -> None:
        self.params = params
        self.sample_rate = sample_rate
        self._batcher = batcher
        # The last 8 s of caller audio at the input rate, as a ring written in place: a frame
        # costs one copy of itself; the resampling to 16 kHz happens once per decision.
        self._ring = np.zeros(WINDOW_SECONDS * sample_rate, dtype="<i2")
        self._pos = 0  # where the next sample goes
        self._filled = 0  # valid samples in the ring
        self._failed = False
        # For reports and tests: decisions asked, judged incomplete, their wall-clock cost.
        self.decisions = 0
        self.incomplete = 0
        self.shed = 0  # decisions skipped because the inference thread was too far behind
        self.last_probability: float | None = None
        self.decision_ms: list[float] = []
        if params.mode == "smart" and batcher is None:
            # The shared model loads while the caller first speaks, not at the first decision.
            SmartTurnModel.preload()

    def feed(self, pcm16: bytes) -> None:
        """One frame of the caller's PCM16 audio at the transport's input rate."""
        x = np.frombuffer(pcm16, dtype="<i2")
        size = len(self._ring)
        if len(x) >= size:
            x = x[-size:]
        n = len(x)
        first = min(n, size - self._pos)
        self._ring[self._pos : self._pos + first] = x[:first]
        self._ring[: n - first] = x[first:]
        self._pos = (self._pos + n) % size
        self._filled = min(size, self._filled + n)

    def utterance(self, speech_secs: float) -> np.ndarray:
        """The last ``speech_secs`` (plus a little before the onset) of audio, at most 8 s,
        as float32 at 16 kHz."""
        n = min(self._filled, round((speech_secs + _PRE_ROLL_S) * self.sample_rate))
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        start = self._pos - n  # negative: the part before the ring's end comes first
        if start >= 0:
            pcm = self._ring[start : self._pos].tobytes()
        else:
            pcm = self._ring[start:].tobytes() + self._ring[: self._pos].tobytes()
        if self.sample_rate != SAMPLE_RATE:
            pcm = resample_pcm16(pcm, self.sample_rate, SAMPLE_RATE)
        out: np.ndarray = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        return out[-WINDOW_SAMPLES:]

    async def complete(self, speech_secs: float, *, inline: bool = False) -> bool | None:
        """Whether the turn is over, judged on the audio since the caller began speaking.

        ``inline``: run the model on the loop, as a virtual clock needs (time does not pass
        while it waits for a thread, so the decision takes no call time and stays
        deterministic); otherwise in the worker's inference thread, batched.
        None: the model was skipped, its thread too far behind (``params.shed_after_secs``):
        the caller's silence decides, as without the model.
        """
        if self.params.mode != "smart" or self._failed:
            return True
        batcher = self._batcher if self._batcher is not None else shared_smart_turn()
        shed_after = self.params.shed_after_secs
        if shed_after > 0 and batcher.backlog_s() > shed_after:
            # An overloaded worker: waiting in the queue would cost the caller more than the
            # VAD-only silence does, and every skipped decision shortens the queue.
            self.shed += 1
            return None
        clip = self.utterance(speech_secs)
        started = time.perf_counter()
        try:
            if inline:
                p = batcher.complete_now(clip)
            else:
                p = await batcher.complete_probability(clip)
        except Exception as exc:
            self._failed = True
            logger.error("Smart Turn failed; the VAD alone ends turns on this call: %r", exc)
            return True
        self.decision_ms.append((time.perf_counter() - started) * 1000.0)
        self.decisions += 1
        self.last_probability = p
        done = p >= self.params.complete_threshold
        if not done:
            self.incomplete += 1
        return done
