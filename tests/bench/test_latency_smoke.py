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

    # The served defaults (no .env): Smart Turn after 0.2 s of VAD silence, preemptive replies.
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
    assert (result["stt_latency_ms"], result["llm_first_token_ms"]) == (150.0, 200.0)
    assert result["tts_first_audio_ms"] == 150.0 and result["vad_stop_ms"] == 200.0
    assert result["turn_detection"] == "smart" and result["preemptive_replies"] is True
    # Every reply was prepared before its turn was decided (the warm-up turn's too); the
    # others were discarded at pauses inside the sentences, and each cost a request.
    assert result["preemptive_used"] == 3 and result["preemptive_turns"] == 2
    started, discarded = result["preemptive_started"], result["preemptive_discarded"]
    assert discarded == started - 3 and result["llm_requests"] == started
    # The turn is decided after the VAD's 0.2 s and the model's verdict (or its 2 s limit).
    assert 190 <= result["turn_wait_p50_ms"] <= 2100
    # Nothing is heard before the turn is decided (the VAD's 0.2 s at the least) and the TTS
    # has spoken (a reply can be ready sooner than STT + LLM + TTS after the end of speech: a
    # pause just before the end may have brought the final already).
    assert result["configured_latency_ms"] == 500.0
    assert min(result["v2v_ms"]) >= 200 + 150 - 10
    assert result["v2v_p50_ms"] <= result["v2v_p95_ms"]
    assert result["v2v_p50_ms"] >= result["turn_wait_p50_ms"] + 150 - 10
    assert result["engine_p50_ms"] <= result["engine_p95_ms"] < 300
    stages = result["stage_ms_p50"]
    assert list(stages) == list(STAGES)
    assert math.isnan(stages["llm_request"])  # no reply was asked for after the decision
    held = [s for s in STAGES if s != "llm_request"]
    assert all(math.isfinite(stages[s]) and stages[s] > 0 for s in held)
    # The path of a held reply: the final asked for at the silence (or one a pause just before
    # the end brought already), the request made from it before the turn was decided, then
    # the decision, the reply released and spoken.
    # (p50s of stages every turn has keep their order; the STT's answer can be missing from
    # a turn whose final came before the end of speech.)
    assert stages["silence_start"] <= stages["finalize_received"]
    assert stages["preempt_request"] < stages["vad_stop"]
    after = ["vad_stop", "released", "first_token", "tts_text_received", "tts_audio_sent"]
    after += ["tts_audio", "wire"]
    assert [stages[s] for s in after] == sorted(stages[s] for s in after)
    assert stages["silence_start"] < 100 < 190 <= stages["vad_stop"]
    assert stages["wire"] == pytest.approx(result["v2v_p50_ms"])
    assert stages["first_token_sent"] - stages["llm_received"] >= 200
    assert stages["tts_audio_sent"] - stages["tts_text_received"] >= 150
    fakes = result["fake_latency_ms"]
    assert set(fakes) == {"stt_final", "llm_first_token", "tts_first_audio"}
    for measured in fakes.values():
        assert measured["configured"] <= measured["p50"] <= measured["p95"] <= measured["max"]
    late = result["caller_chunk_late_ms"]
    assert 0 <= late["p50"] <= late["p95"] <= late["max"]
    assert result["loop"] == "asyncio" and result["gc"] == "python default"


@pytest.mark.slow
async def test_latency_bench_without_preemptive_replies():
    from voxpipe.config.settings import VoxpipeSettings

    settings = VoxpipeSettings(_env_file=None, preemptive_replies=False)  # type: ignore[call-arg]
    result = await run_latency_bench(turns=2, settings=settings)
    assert result["turns"] == 2 and result["failed_turns"] == 0
    assert result["preemptive_started"] == result["preemptive_discarded"] == 0
    assert result["llm_requests"] == 3  # the warm-up turn and the two measured ones
    # The reply is asked for once the turn is decided and the final is in (Finalize went at
    # the silence): decision + LLM + TTS at the least.
    assert min(result["v2v_ms"]) >= 200 + 200 + 150 - 10
    stages = result["stage_ms_p50"]
    assert math.isnan(stages["preempt_request"]) and math.isnan(stages["released"])
    assert (
        stages["vad_stop"] <= stages["llm_request"]
        and stages["transcript"] <= stages["llm_request"]
    )
    reply = ["llm_request", "llm_received", "first_token_sent", "first_token", "wire"]
    assert [stages[s] for s in reply] == sorted(stages[s] for s in reply)
    assert stages["first_token"] - stages["llm_received"] >= 200


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
    assert result["fake_latency_ms"]["llm_first_token"]["p50"] >= 200


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
