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

import numpy as np

from voxpipe.audio.resample import StreamingResampler
from voxpipe.processors.turn.features import SAMPLE_RATE, WINDOW_SAMPLES
from voxpipe.processors.turn.model import BatchedSmartTurn
from voxpipe.processors.turn.params import TurnParams

__all__ = ["TurnGate", "shared_smart_turn"]

logger = logging.getLogger(__name__)

# Audio kept before the VAD's onset: it reports speech ``start_secs`` after it began.
_PRE_ROLL_S = 0.3

_batchers: dict[int, BatchedSmartTurn] = {}


def shared_smart_turn() -> BatchedSmartTurn:
    """The running event loop's batcher (one per worker loop, created on first use)."""
    loop = asyncio.get_running_loop()
    key = id(loop)
    found = _batchers.get(key)
    if found is None or found.loop is not loop:
        found = _batchers[key] = BatchedSmartTurn()
        found.loop = loop
    return found


class TurnGate:
    """One call's end-of-turn decisions (the audio it needs, the model it asks)."""

    def __init__(
        self, params: TurnParams, sample_rate: int, batcher: BatchedSmartTurn | None = None
    ) -> None:
        self.params = params
        self.sample_rate = sample_rate
        self._batcher = batcher
        self._resampler = (
            StreamingResampler(sample_rate, SAMPLE_RATE) if sample_rate != SAMPLE_RATE else None
        )
        self._ring = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        self._filled = 0  # valid samples at the end of the ring
        self._failed = False
        # For reports and tests: decisions asked, judged incomplete, their wall-clock cost.
        self.decisions = 0
        self.incomplete = 0
        self.last_probability: float | None = None
        self.decision_ms: list[float] = []

    def feed(self, pcm16: bytes) -> None:
        """One frame of the caller's PCM16 audio at the transport's input rate."""
        if self._resampler is not None:
            pcm16 = self._resampler.process(pcm16)
        x = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        n = len(x)
        if n == 0:
            return
        if n >= WINDOW_SAMPLES:
            self._ring[:] = x[-WINDOW_SAMPLES:]
        else:
            self._ring[:-n] = self._ring[n:]
            self._ring[-n:] = x
        self._filled = min(WINDOW_SAMPLES, self._filled + n)

    def utterance(self, speech_secs: float) -> np.ndarray:
        """The last ``speech_secs`` (plus a little before the onset) of audio, at most 8 s."""
        n = min(self._filled, round((speech_secs + _PRE_ROLL_S) * SAMPLE_RATE), WINDOW_SAMPLES)
        return self._ring[WINDOW_SAMPLES - n :].copy()

    async def complete(self, speech_secs: float, *, inline: bool = False) -> bool:
        """Whether the turn is over, judged on the audio since the caller began speaking.

        ``inline``: run the model on the loop, as a virtual clock needs (time does not pass
        while it waits for a thread, so the decision takes no call time and stays
        deterministic); otherwise in the worker's inference thread, batched.
        """
        if self.params.mode != "smart" or self._failed:
            return True
        clip = self.utterance(speech_secs)
        batcher = self._batcher if self._batcher is not None else shared_smart_turn()
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
