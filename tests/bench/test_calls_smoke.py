"""`voxpipe bench calls` with two callers: the server starts, calls are echoed, numbers come out."""

from __future__ import annotations

import json

import pytest

from voxpipe import cli

pytestmark = pytest.mark.slow


def test_bench_calls_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)
    rc = cli.main(["bench", "calls", "--calls", "2", "--seconds", "4", "--ramp", "0.2", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("calls", "p99_late_ms", "rss_mb_per_call", "cpu_pct_per_call"):
        assert key in result
    assert result["calls"] == 2 and result["failed_calls"] == 0 and result["ok"] is True
    assert result["voice"] == "recording" and result["never_connected"] == 0
    assert result["calls_measured"] > 0
    assert result["chunks"] > 50  # the echo of the caller's first utterance came back
    assert result["echo_s_per_call"] > 1.0
    assert 0 < result["server_cpu_pct"] < 200
    assert result["p99_late_ms"] >= 0 and isinstance(result["rss_mb_per_call"], float)


def test_bench_calls_on_two_workers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)
    # 6 s calls: room for the served turn-taking's longest wait (Smart Turn holds a turn it
    # judges incomplete up to 2 s) before the caller hangs up and listens for its echo.
    argv = ["bench", "calls", "--calls", "8", "--seconds", "6", "--ramp", "0.5"]
    rc = cli.main([*argv, "--workers", "2", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["workers"] == 2 and result["failed_calls"] == 0
    assert sum(result["calls_per_worker"]) == 8  # every call says which worker took it
    assert 0 < result["server_cpu_pct"] < 200  # both workers' CPU, not the supervisor's
