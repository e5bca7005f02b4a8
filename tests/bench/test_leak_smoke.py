"""`voxpipe bench leak` with ten calls back to back: every call ends normally on an idle server,
the RSS series and growth come out."""

from __future__ import annotations

import json

import pytest

from voxpipe import cli

pytestmark = pytest.mark.slow


def test_bench_leak_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)
    rc = cli.main(["bench", "leak", "--calls", "10", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["calls"] == 10 and result["lanes"] == 1
    assert result["failed_calls"] == 0 and result["calls_echoed"] >= 5, result
    assert len(result["rss_series_mb"]) == 12  # start, after each call, the end
    assert 50 < result["rss_end_mb"] < 2000
    assert result["growth_pct"] == pytest.approx(
        (result["rss_end_mb"] - result["rss_after_warmup_mb"])
        / result["rss_after_warmup_mb"]
        * 100,
        abs=0.2,
    )
    assert rc == (0 if result["ok"] else 1)
