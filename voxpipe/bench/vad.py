"""`voxpipe bench vad`: Silero VAD cost per window at batch 1 and batched, and calls per core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from voxpipe.processors.vad import BatchedVAD, SileroVADModel, SileroVADStream, window_samples


def _windows(n: int, sample_rate: int, seed: int = 7) -> list[bytes]:
    """Deterministic speech-band noise around -30 dBFS, one PCM16 window per item."""
    rng = np.random.default_rng(seed)
    win = window_samples(sample_rate)
    audio = rng.normal(0.0, 1000.0, n * win).clip(-32768, 32767).astype("<i2")
    return [audio[i * win : (i + 1) * win].tobytes() for i in range(n)]


def _best_seconds(fn: Callable[[], None], repeats: int) -> float:
    # Best of several runs: the cost of the work itself, with the least interference from
    # other processes on a shared machine (as timeit recommends).
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_vad_bench(
    batch: int = 64,
    windows: int = 1500,
    repeats: int = 5,
    sample_rate: int = 8000,
    model: SileroVADModel | None = None,
) -> dict[str, Any]:
    """Measure VAD cost per window at batch 1 and at ``batch`` on one core, and calls per core.

    ``vad_calls_per_core`` is how many concurrent calls one core keeps up with in real time
    when their windows run batched: one window's audio duration over the batched cost.
    """
    model = model if model is not None else SileroVADModel.shared()
    win = window_samples(sample_rate)
    window_secs = win / sample_rate
    audio = _windows(windows, sample_rate)

    # Batch 1: one stream through its own probability() call, as an unbatched call would.
    solo = SileroVADStream(sample_rate, model)
    for w in audio[:50]:
        solo.probability(w)

    def run_solo() -> None:
        for w in audio:
            solo.probability(w)

    b1 = _best_seconds(run_solo, repeats) / len(audio)

    # Batched: `batch` streams, one window each per inference, through run_batch.
    batched = BatchedVAD(model, max_batch=batch)
    streams = [SileroVADStream(sample_rate, model) for _ in range(batch)]
    rounds = max(1, len(audio) // batch)
    per_round = [audio[r * batch : (r + 1) * batch] for r in range(rounds)]
    batched.run_batch(streams, per_round[0])

    def run_batched() -> None:
        for ws in per_round:
            batched.run_batch(streams, ws)

    bb = _best_seconds(run_batched, repeats) / (rounds * batch)

    # The same through the async API, as calls on one event loop would use it.
    async def one_call(stream: SileroVADStream, mine: list[bytes]) -> None:
        for w in mine:
            await batched.probability(stream, w)

    async def run_async() -> None:
        await asyncio.gather(
            *(one_call(s, [per_round[r][i] for r in range(rounds)]) for i, s in enumerate(streams))
        )

    ba = _best_seconds(lambda: asyncio.run(run_async()), repeats) / (rounds * batch)

    return {
        "vad_sample_rate": sample_rate,
        "vad_batch": batch,
        "vad_window_us_b1": round(b1 * 1e6, 1),
        "vad_window_us_batched": round(bb * 1e6, 1),
        "vad_window_us_async_batched": round(ba * 1e6, 1),
        "vad_batch_speedup": round(b1 / bb, 2),
        "vad_calls_per_core_b1": int(window_secs / b1),
        "vad_calls_per_core": int(window_secs / bb),
        "vad_calls_per_core_async": int(window_secs / ba),
    }


if __name__ == "__main__":  # pragma: no cover - manual run
    from voxpipe.bench.report import print_result

    print_result("vad", run_vad_bench(), as_json=False)
