"""`voxpipe bench calls` accounting: failed calls, cost per call that ran, the caller's voice."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from voxpipe.bench.calls import CallOutcome, _bench, summarize_calls
from voxpipe.bench.report import print_result
from voxpipe.bench.server_proc import caller_audio
from voxpipe.testing.twilio_caller import CallerLog


def _heard(seconds: float) -> CallerLog:
    log = CallerLog()
    chunks = int(seconds * 50)
    log.media_times = [i * 0.02 for i in range(chunks)]
    log.media_sizes = [160] * chunks
    return log


def _summary(outcomes: list[CallOutcome], live: float, voice: str = "recording") -> dict:
    return summarize_calls(
        outcomes,
        seconds=4.0,
        server_cpu_pct=30.0,
        client_cpu_pct=5.0,
        live_calls=live,
        rss_peak=200 * 2**20,
        rss_idle=100 * 2**20,
        voice=voice,
        wall_s=9.0,
    )


def test_calls_that_never_connected_fail_and_cost_is_per_call_that_ran() -> None:
    outcomes = [
        CallOutcome(connected=True, log=_heard(2.0)),
        CallOutcome(connected=True, log=_heard(2.0)),
        CallOutcome(connected=True, log=CallerLog()),  # up, but the bot never answered
        CallOutcome(connected=False, error="ConnectError: refused"),
    ]
    result = _summary(outcomes, live=3.0)
    assert result["ok"] is False
    assert result["calls"] == 4
    assert result["failed_calls"] == 2 and result["never_connected"] == 1
    assert result["errors"] == ["ConnectError: refused"]
    # 30 % CPU and 100 MB over the 3 calls that were up, not the 4 dialled.
    assert result["cpu_pct_per_call"] == 10.0
    assert result["rss_mb_per_call"] == pytest.approx(33.333, abs=1e-3)
    assert result["echo_s_per_call"] == 2.0  # over the calls that heard the bot
    assert result["chunks"] == 200


def test_no_call_ran_gives_no_cost_per_call() -> None:
    result = _summary([CallOutcome(error="x"), CallOutcome(error="x")], live=0.0)
    assert result["failed_calls"] == result["never_connected"] == 2
    assert result["cpu_pct_per_call"] is None and result["rss_mb_per_call"] is None


def test_the_synthetic_voice_fallback_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio, voice = caller_audio(tmp_path / "missing.wav")
    assert voice == "synthetic" and len(audio) == 8000 * 9
    _, voice = caller_audio()
    assert voice == "recording"  # the checkout's test recording
    result = _summary([CallOutcome(connected=True, log=_heard(1.0))], live=1.0, voice="synthetic")
    assert result["voice"] == "synthetic"
    print_result("calls", result, as_json=False)
    assert any(
        line.split() == ["voice", "synthetic"] for line in capsys.readouterr().out.splitlines()
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_never_answers_fails_every_call_without_waiting() -> None:
    # Nothing listens: every dial is refused. The bench must not wait for calls that will
    # never come up, and must not report a cost per call.
    result = asyncio.run(
        asyncio.wait_for(
            _bench(_closed_port(), os.getpid(), calls=3, seconds=1.0, ramp_s=0.1, progress=None),
            timeout=30,
        )
    )
    assert result["ok"] is False
    assert result["failed_calls"] == result["never_connected"] == 3
    assert result["cpu_pct_per_call"] is None
    assert result["errors"] and "Connect" in result["errors"][0]
    assert result["wall_s"] < 20
