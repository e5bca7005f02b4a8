"""`voxpipe bench soak`: calls replaced as they end for a (short) while, windows sampled, RSS
growth and lateness spread computed from them."""

from __future__ import annotations

import json

import pytest

from voxpipe import cli
from voxpipe.bench.soak import gc_sweeps, soak_verdict
from voxpipe.server.metrics import ServerMetrics


def test_verdict_measures_growth_after_warmup() -> None:
    rows = [
        {"rss_mb": 100.0, "p99_late_ms": 9.0},  # warm-up: not counted
        {"rss_mb": 200.0, "p99_late_ms": 1.0},
        {"rss_mb": 204.0, "p99_late_ms": 3.0},
        {"rss_mb": 212.0, "p99_late_ms": 2.0},
    ]
    verdict = soak_verdict(rows, warmup=1)
    assert verdict["rss_growth_pct"] == 6.0 and verdict["rss_flat"] is False
    assert (verdict["p99_late_ms_min"], verdict["p99_late_ms_max"]) == (1.0, 3.0)
    assert soak_verdict(rows[:3], warmup=1)["rss_flat"] is True


def test_gc_sweeps_read_from_the_servers_metrics() -> None:
    metrics = ServerMetrics(active_calls=lambda: 0)
    assert gc_sweeps(metrics.render().decode())["gc_sweeps"] == 0
    for seconds in (0.003, 0.004, 0.015):
        metrics.gc_sweep(seconds, 100)
    got = gc_sweeps(metrics.render().decode())
    assert got == {
        "gc_sweeps": 3,
        "gc_freed_objects": 300,
        "gc_sweep_ms_mean": 7.33,
        "gc_sweep_ms_max_under": 20.0,
    }
    metrics.gc_sweep(0.9, 100)  # beyond the last bucket: no bound to give, and valid JSON
    assert gc_sweeps(metrics.render().decode())["gc_sweep_ms_max_under"] is None


@pytest.mark.slow
def test_bench_soak_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)
    # The server (a subprocess, this environment) sweeps every 3 s, not the served 60 s.
    monkeypatch.setenv("GC_SWEEP_INTERVAL_S", "3")
    rc = cli.main(
        ["bench", "soak", "--calls", "3", "--minutes", "0.25", "--seconds", "4", "--window", "5",
         "--json"]
    )  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["failed_calls"] == 0, result
    # 3 lanes of 4 s calls for 15 s: every lane ran several calls one after another.
    assert result["calls_done"] >= 6
    assert len(result["windows"]) == 3
    assert all(w["rss_mb"] > 50 and w["chunks"] > 0 for w in result["windows"])
    # Calls ended every 4 s: the server's collection after ended calls ran.
    assert result["gc_sweeps"] >= 1
    assert rc == (0 if result["ok"] else 1)
