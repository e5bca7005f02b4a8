from voxpipe.bench.vad import run_vad_bench


def test_vad_bench_reports_its_keys():
    # Small run: checks the wiring and that the numbers are consistent, not the targets.
    result = run_vad_bench(batch=8, windows=64, repeats=1)
    assert result["vad_batch"] == 8
    for key in ("vad_window_us_b1", "vad_window_us_batched", "vad_window_us_async_batched"):
        assert 0 < result[key] < 100_000
    expected_calls = int(0.032 / (result["vad_window_us_batched"] * 1e-6))
    assert abs(result["vad_calls_per_core"] - expected_calls) <= max(2, expected_calls // 50)
