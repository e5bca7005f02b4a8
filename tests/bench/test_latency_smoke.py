"""`voxpipe bench latency` runs a short call on the fakes and reports sane voice-to-voice numbers."""

import math

import pytest

from voxpipe.bench.latency import STAGES, run_latency_bench


@pytest.mark.slow
async def test_latency_bench_two_turns():
    result = await run_latency_bench(turns=2)
    for key in (
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
    assert result["tts_first_audio_ms"] == 150.0 and result["vad_stop_ms"] == 320.0
    floor = result["configured_latency_ms"] + result["vad_stop_ms"]
    assert floor == 820.0
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
    assert values == sorted(values)  # every stage stamped, in the order of the path
    assert stages["wire"] == pytest.approx(result["v2v_p50_ms"])
    # The VAD ends the turn its stop time after the end of speech (paced wire chunks).
    assert 310 <= stages["vad_stop"] < 380
    assert stages["final_sent"] - stages["finalize_received"] >= 150
    assert stages["first_token"] - stages["llm_received"] >= 200
    assert stages["tts_audio_sent"] - stages["tts_text_received"] >= 150
