"""`voxpipe bench engine`: voxpipe and Pipecat run the same workload (frames, warm-up, processors)."""

from __future__ import annotations

import asyncio

import pytest

from voxpipe.bench.engine import WARMUP_FRAMES, hop_bench, run_engine_bench


def test_hop_bench_reports_the_workload_it_ran() -> None:
    result = asyncio.run(hop_bench(n_frames=300, n_procs=4, warmup=50))
    assert result["frames"] == 300  # counted at the last processor, not assumed
    assert result["procs"] == 4 and result["warmup_frames"] == 50
    assert result["hop_us"] > 0 and result["frames_per_s"] > 0


def test_pipecat_runs_the_same_workload() -> None:
    pytest.importorskip("pipecat", reason="the bench extra (pipecat-ai) is not installed")
    # More than the 5,000 frames Pipecat used to be capped at.
    result = asyncio.run(run_engine_bench(n_frames=6000, n_procs=10, n_sessions=2))
    assert result["same_workload"] is True
    assert result["frames"] == result["pipecat_frames"] == 6000
    assert result["warmup_frames"] == result["pipecat_warmup_frames"] == WARMUP_FRAMES
    assert result["procs"] == result["pipecat_procs"] == 10
    assert result["ratio"] == pytest.approx(result["pipecat_hop_us"] / result["hop_us"])
