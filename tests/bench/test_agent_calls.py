"""`voxpipe bench calls --bot`: full agent conversations on provider stand-ins, Pipecat beside."""

from __future__ import annotations

import json

import pytest

from voxpipe import cli
from voxpipe.bench.agent_calls import (
    REPORT_KEYS,
    AgentCall,
    pipecat_available,
    run_agent_calls_bench,
    summarize_agent_calls,
)
from voxpipe.bench.calls import bot_needs_providers

AGENT = "bots/support_agent.py"
# The LLM's and the TTS's own latencies (200 + 150 ms): a preemptive reply starts from the
# words heard when the silence begins, so the STT's latency and the turn wait can overlap
# them, but no answer can come sooner.
FLOOR_MS = 350.0


def test_summary_counts_failed_calls_and_divides_by_calls_up() -> None:
    calls = [
        AgentCall(connected=True, v2v_s=[0.8, 0.9], late_s=[0.0, 0.01], seconds=20.0),
        AgentCall(connected=True, v2v_s=[1.0], error="no answer to question 2"),
        AgentCall(connected=False, error="ConnectError: refused"),
    ]
    report = summarize_agent_calls(
        calls,
        server_cpu_pct=30.0,
        live_calls=2.0,
        rss_peak=300 * 2**20,
        rss_idle=200 * 2**20,
        fakes_cpu_pct=5.0,
        client_cpu_pct=7.0,
    )
    assert report["calls"] == 3 and report["failed_calls"] == 2
    assert report["cpu_pct_per_call"] == 15.0 and report["rss_mb_per_call"] == 50.0
    assert report["v2v_p50_ms"] == 800.0 and report["turns"] == 2  # failed calls' turns out
    assert report["p99_late_ms"] == 10.0
    assert set(REPORT_KEYS) <= set(report)


def test_which_bots_get_provider_stand_ins() -> None:
    assert bot_needs_providers(AGENT)
    assert not bot_needs_providers("bots/echo.py")


def _check(side: dict[str, object], calls: int) -> None:
    assert set(REPORT_KEYS) <= set(side)
    assert side["calls"] == calls and side["failed_calls"] == 0, side.get("errors")
    assert side["turns"] == 2 * calls  # two questions each, each answered
    v2v50, v2v95 = side["v2v_p50_ms"], side["v2v_p95_ms"]
    assert isinstance(v2v50, float) and isinstance(v2v95, float)
    assert FLOOR_MS <= v2v50 <= v2v95 < 6000.0
    assert isinstance(side["cpu_pct_per_call"], float) and side["cpu_pct_per_call"] > 0
    assert isinstance(side["server_cpu_pct"], float) and 0 < side["server_cpu_pct"] < 200
    assert isinstance(side["fakes_cpu_pct"], float) and side["fakes_cpu_pct"] > 0
    assert isinstance(side["rss_mb_per_call"], float)
    whole = side["cpu_pct_per_call_whole_run"]
    assert isinstance(whole, float) and 0 < whole < 100
    assert isinstance(side["p99_late_ms"], float) and side["p99_late_ms"] >= 0


@pytest.mark.slow
def test_bench_calls_bot_against_voxpipe(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)
    argv = ["bench", "calls", "--bot", AGENT, "--calls", "2", "--ramp", "0.3", "--no-pipecat"]
    rc = cli.main([*argv, "--provider-latency", "stt=150,llm=200,tts=150", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    _check(result, 2)
    assert result["providers"] == "fakes" and result["pipecat"] is None
    assert result["provider_latency_ms"] == {"stt": 150.0, "llm": 200.0, "tts": 150.0}


@pytest.mark.slow
@pytest.mark.skipif(not pipecat_available(), reason="Pipecat (the `bench` extra) is not installed")
def test_bench_calls_bot_side_by_side_with_pipecat() -> None:
    result = run_agent_calls_bench(bot=AGENT, calls=2, ramp_s=0.3, pipecat=True)
    _check(result, 2)
    pipecat = result["pipecat"]
    _check(pipecat, 2)
    ratios = result["pipecat_vs_voxpipe"]
    assert ratios["cpu_per_call"] == round(
        pipecat["cpu_pct_per_call"] / result["cpu_pct_per_call"], 2
    )
    assert isinstance(ratios["v2v_p50"], float) and ratios["v2v_p50"] > 0
