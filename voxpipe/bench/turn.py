"""`voxpipe bench turn`: Smart Turn cost per decision, one at a time and batched, per core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from voxpipe.processors.turn.features import WINDOW_SAMPLES, log_mel_batch, log_mel_reference
from voxpipe.processors.turn.model import BatchedSmartTurn, SmartTurnModel


def _clips(n: int, seed: int = 7) -> list[np.ndarray]:
    """Deterministic noise around -30 dBFS, 8 s each (the model always reads 8 s)."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.03, WINDOW_SAMPLES).astype(np.float32) for _ in range(n)]


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    # Best of several runs: the work's own cost, least disturbed by other processes.
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_turn_bench(
    batch: int = 16, decisions: int = 32, repeats: int = 3, model: SmartTurnModel | None = None
) -> dict[str, Any]:
    """Cost of one end-of-turn decision (features + inference) alone and in batches of ``batch``.

    Keys: ``single_ms`` and ``batched_ms`` (per decision), ``batched_speedup`` (their ratio;
    target >= 3), ``features_ms`` (log-mel per decision, batched), ``decisions_per_core_s``
    (batched), ``features_2s_ms`` (one 2 s utterance, padded to 8 s: the typical decision) and
    ``features_reference_ms`` (the same by the all-frames reference), ``async_batches`` (inferences the worker's batcher ran for ``batch``
    decisions asked in one tick: 1 when batching works).
    """
    if batch < 1 or decisions < 1 or repeats < 1:
        raise ValueError("batch, decisions and repeats must be at least 1")
    model = model if model is not None else SmartTurnModel.shared()
    clips = _clips(max(batch, decisions))
    model.complete_probability(clips[:1])  # warm the session up
    model.complete_probability(clips[:batch])

    def single() -> None:
        for clip in clips[:decisions]:
            model.complete_probability([clip])

    def batched() -> None:
        for start in range(0, decisions, batch):
            model.complete_probability(clips[start : start + batch] or clips[:batch])

    rounds = -(-decisions // batch)
    single_s = _best_seconds(single, repeats) / decisions
    batched_s = _best_seconds(batched, repeats) / (rounds * batch)
    features_s = _best_seconds(lambda: log_mel_batch(clips[:batch]), repeats) / batch
    short = [clips[0][-2 * 16000 :]]
    features_2s = _best_seconds(lambda: log_mel_batch(short), repeats)
    reference_2s = _best_seconds(lambda: log_mel_reference(short), repeats)

    async def one_tick() -> int:
        batcher = BatchedSmartTurn(model, max_batch=batch)
        await asyncio.gather(*(batcher.complete_probability(c) for c in clips[:batch]))
        return batcher.batches

    return {
        "batch": batch,
        "single_ms": round(1000 * single_s, 3),
        "batched_ms": round(1000 * batched_s, 3),
        "batched_speedup": round(single_s / batched_s, 2),
        "batched_speedup_target": 3.0,
        "features_ms": round(1000 * features_s, 3),
        "features_2s_ms": round(1000 * features_2s, 3),
        "features_reference_ms": round(1000 * reference_2s, 3),
        "decisions_per_core_s": round(1.0 / batched_s, 1),
        "decisions_per_core_s_single": round(1.0 / single_s, 1),
        "async_batches": asyncio.run(one_tick()),
    }
