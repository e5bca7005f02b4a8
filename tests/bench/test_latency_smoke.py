"""`voxpipe bench latency` runs a short call on the fakes and reports sane voice-to-voice numbers."""

import asyncio
import gc
import math
import sys

import pytest

from voxpipe import cli
from voxpipe.bench.latency import STAGES, loop_factory, run_latency, run_latency_bench


@pytest.mark.slow
async def test_latency_bench_two_turns():
    from voxpipe.config.settings import VoxpipeSettings

    # The served defaults (no .env): Smart Turn after 0.2 s of VAD silence.
    result = await run_latency_bench(turns=2, settings=VoxpipeSettings(_env_file=None))
    for key in (
        "turn_wait_p50_ms",
        "preemptive_discarded",
        "v2v_p50_ms",
        "v2v_p95_ms",
        "engine_p50_ms",
        "engine_p95_ms",
        "turns",
        "stt_latency_ms",
        "llm_first_token_ms",
        "tts_first_audio_ms",
        "vad_stop_ms",
        "stage_ms_p50",
    ):
        assert key in result, key
    assert result["turns"] == 2 and result["failed_turns"] == 0
    assert result["barge_ins"] == 0
    assert result["llm_requests"] == 3  # the warm-up turn and the two measured ones
    assert (result["stt_latency_ms"], result["llm_first_token_ms"]) == (150.0, 200.0)
    assert result["tts_first_audio_ms"] == 150.0 and result["vad_stop_ms"] == 200.0
    assert result["turn_detection"] == "smart" and result["preemptive_discarded"] == 0
    # The turn is decided after the VAD's 0.2 s and the model's verdict (or its 2 s limit).
    assert 190 <= result["turn_wait_p50_ms"] <= 2100
    floor = result["configured_latency_ms"] + 200.0
    assert floor == 700.0
    # Nothing answers faster than the fakes and the VAD were told to take (a few ms of slack:
    # the chunk that ended the speech may itself have been pushed late by a busy loop).
    assert min(result["v2v_ms"]) >= floor - 10
    assert floor <= result["v2v_p50_ms"] <= result["v2v_p95_ms"]
    assert 0 < result["engine_p50_ms"] <= result["engine_p95_ms"]
    # A sanity bound, not the target: a turn stuck behind a timeout would be 1 s late.
    assert result["engine_p95_ms"] < 300
    stages = result["stage_ms_p50"]
    assert list(stages) == list(STAGES)
    values = [stages[s] for s in STAGES]
    assert all(math.isfinite(v) and v > 0 for v in values)
    # Every stage stamped, in the order of the path from the LLM request on. (A turn Smart
    # Turn held may have its STT final before the turn is decided, so the first stages' order
    # depends on the model's verdict; the reply never starts before the turn is decided.)
    reply = values[STAGES.index("llm_request") :]
    assert reply == sorted(reply)
    assert stages["vad_stop"] <= stages["llm_request"]
    assert stages["transcript"] <= stages["llm_request"]
    assert stages["wire"] == pytest.approx(result["v2v_p50_ms"])
    # The turn ends at least the VAD's stop after the end of speech (paced wire chunks).
    assert 190 <= stages["vad_stop"] <= 2100
    # (The STT fake's own latency is checked below, per turn: p50s of stages of turns ended
    # by the model's verdict and by its wait do not subtract.)
    assert stages["first_token"] - stages["llm_received"] >= 200
    assert stages["tts_audio_sent"] - stages["tts_text_received"] >= 150
    assert stages["first_token_sent"] - stages["llm_received"] >= 200
    # The fakes' own measured latencies: never under their settings (precise timers).
    fakes = result["fake_latency_ms"]
    assert set(fakes) == {"stt_final", "llm_first_token", "tts_first_audio"}
    for measured in fakes.values():
        assert measured["configured"] <= measured["p50"] <= measured["p95"] <= measured["max"]
    late = result["caller_chunk_late_ms"]
    assert 0 <= late["p50"] <= late["p95"] <= late["max"]
    assert result["loop"] == "asyncio" and result["gc"] == "python default"


def test_loop_choice() -> None:
    assert loop_factory("asyncio") is asyncio.new_event_loop
    with pytest.raises(ValueError, match="loop must be one of"):
        loop_factory("trio")


def test_uvloop_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loop_factory("uvloop")
    assert loop_factory("auto") is asyncio.new_event_loop
    assert cli.main(["bench", "latency", "--loop", "uvloop", "--turns", "1"]) == 2
    assert "uvloop is not installed" in capsys.readouterr().err


@pytest.mark.slow
def test_latency_bench_on_uvloop_with_the_server_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("auto") is uvloop.new_event_loop
    # tune_gc freezes the heap and raises the thresholds: kept from the tests after this one.
    tuned: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: tuned.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *args: tuned.append("threshold"))
    result = run_latency(turns=1, loop="auto", tune_gc=True)
    assert tuned == ["freeze", "threshold"]
    assert result["loop"] == "uvloop" and result["gc"] == "tuned as voxpipe serve"
    assert result["turns"] == 1 and result["failed_turns"] == 0
    assert result["fake_latency_ms"]["stt_final"]["p50"] >= 150


def test_provider_latency_option_parses_and_refuses_bad_items(capsys) -> None:
    from voxpipe.cli import CommandError, _provider_latency

    assert _provider_latency("stt=150, llm=200,tts=120") == {
        "stt_latency": 0.15,
        "llm_first_token": 0.2,
        "tts_first_audio": 0.12,
    }
    for bad in ("stt=fast", "asr=100", "llm", "tts=-5"):
        with pytest.raises(CommandError, match="provider-latency"):
            _provider_latency(bad)
    assert cli.main(["bench", "latency", "--provider-latency", "stt=x"]) == 2
    assert "provider-latency" in capsys.readouterr().err
