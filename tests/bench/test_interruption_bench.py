"""`voxpipe bench interruption` runs, measures every barge-in and finds no stale chunk."""

import math

from voxpipe.bench.interruption import run_interruption_bench


def test_interruption_bench_small_run():
    result = run_interruption_bench(n=6, seed=5)
    for key in ("interrupt_p50_ms", "interrupt_p99_ms", "stale_chunks", "n"):
        assert key in result
    assert result["n"] == 6
    assert result["stale_chunks"] == 0
    assert 0 < result["interrupt_p50_ms"] <= result["interrupt_p99_ms"]
    assert math.isfinite(result["interrupt_p99_ms"])
    # Each flush dropped audio the bot had queued (the TTS runs ahead of real time).
    assert result["chunks_dropped"] > 6 * 10
    # Onset to interruption on the call clock: the VAD's start plus the guard's 0.4 s.
    assert 400 <= result["detect_p50_ms_call_time"] <= 800


def test_interruption_bench_with_batched_vad():
    result = run_interruption_bench(n=3, seed=9, batched=True)
    assert result["n"] == 3 and result["stale_chunks"] == 0
