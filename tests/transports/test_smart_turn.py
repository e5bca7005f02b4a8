"""Smart end of turn at the VAD's short stop: complete ends the turn, incomplete waits."""

from __future__ import annotations

import numpy as np
import pytest

from voxpipe.audio import resample_pcm16
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import MetricsFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
from voxpipe.processors.turn.gate import TURN_SHED_METRIC, TurnGate
from voxpipe.processors.turn.model import BatchedSmartTurn, SmartTurnModel
from voxpipe.processors.turn.params import TurnParams, transport_turn_kwargs, turn_taking
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.params import TransportParams

SMART = TurnParams(mode="smart", max_wait_secs=2.0)


def _say(text: str, rate: int = 8000) -> bytes:
    from voxpipe.testing.fresh_speech import speak_fresh

    [(pcm, sample_rate)] = speak_fresh([text], "en-us", 160)
    return resample_pcm16(pcm, sample_rate, rate)


class _Scripted:
    """A stand-in batcher: the probabilities given, one per decision (the state machine's test)."""

    def __init__(self, probs: list[float], backlog_s: float = 0.0) -> None:
        self.probs = list(probs)
        self.clips: list[np.ndarray] = []
        self.backlog = backlog_s  # how far behind its inference thread claims to be

    def backlog_s(self) -> float:
        return self.backlog

    def complete_now(self, clip: np.ndarray) -> float:
        self.clips.append(clip)
        return self.probs.pop(0)


def _transport(settings: VoxpipeSettings | None = None, batcher: object = None) -> MemoryTransport:
    if settings is not None:
        params = TransportParams(**transport_turn_kwargs(settings))
    else:
        from voxpipe.processors.vad.analyzer import VADParams

        params = TransportParams(vad_params=VADParams(stop_secs=0.2), turn=SMART)
    t = MemoryTransport(params)
    if batcher is not None:
        gate = t.input().turn_gate
        assert gate is not None
        t.input().turn_gate = TurnGate(gate.params, gate.sample_rate, batcher)  # type: ignore[arg-type]
    return t


def _first_turn_log(
    call, pcm: bytes, probs: list[float], backlog_s: float = 0.0
) -> tuple[object, _Scripted]:
    batcher = _Scripted(probs, backlog_s)
    t = _transport(batcher=batcher)

    async def script(task):
        await t.play_caller(pcm, 8000)
        await t.play_silence(3.0)

    return call(t, [], script), batcher


def _first_turn(call, pcm: bytes, probs: list[float]) -> tuple[list[float], list[float], _Scripted]:
    log, batcher = _first_turn_log(call, pcm, probs)
    return log.times(UserStartedSpeakingFrame), log.times(UserStoppedSpeakingFrame), batcher


# The recording's first sentence: speech from 0.60 to 2.83 s, then silence (tests/data).
FIRST = (0.6, 2.83)


def test_a_complete_turn_ends_at_the_short_stop(call, speech_8k_pcm) -> None:
    starts, stops, batcher = _first_turn(call, speech_8k_pcm[: 8000 * 2 * 3], [0.9])
    assert len(starts) == len(stops) == 1
    assert len(batcher.clips) == 1
    # The model read the utterance at 16 kHz (its onset included, at most 8 s)...
    assert FIRST[1] - FIRST[0] <= len(batcher.clips[0]) / 16000 <= 8.0
    # ...and the turn ended at the 0.2 s stop, not the 0.8 s of the VAD alone.
    assert stops[0] - FIRST[1] <= 0.2 + 0.15


def test_an_incomplete_turn_waits_for_the_longest_silence(call, speech_8k_pcm) -> None:
    _, [complete], _ = _first_turn(call, speech_8k_pcm[: 8000 * 2 * 3], [0.9])
    _, [incomplete], _ = _first_turn(call, speech_8k_pcm[: 8000 * 2 * 3], [0.1])
    # 2 s from the last speech in all: the 0.2 s stop, then 1.8 s more.
    assert incomplete - complete == pytest.approx(1.8, abs=0.021)


def test_a_caller_who_goes_on_within_the_wait_keeps_one_turn(call, speech_8k_pcm) -> None:
    # Two sentences 1.3 s apart, the first judged incomplete: one turn, ended after the second.
    starts, stops, batcher = _first_turn(call, speech_8k_pcm[: 8000 * 2 * 6], [0.1, 0.95])
    assert len(starts) == 1 and len(stops) == 1
    assert 5.73 < stops[0] <= 5.73 + 0.2 + 0.15
    assert len(batcher.clips) == 2
    assert len(batcher.clips[1]) / 16000 > 5.0  # the second decision read the whole turn


def test_each_decision_is_reported_as_a_metric(call, speech_8k_pcm) -> None:
    # Two decisions (incomplete, then complete): two turn_decision measurements go downstream,
    # where the server's metrics observer puts them in voxpipe_stage_latency_seconds.
    log, batcher = _first_turn_log(call, speech_8k_pcm[: 8000 * 2 * 6], [0.1, 0.95])
    reported = [f for f in log.frames(MetricsFrame) if f.metric == "turn_decision"]
    assert len(reported) == len(batcher.clips) == 2
    assert all(f.value >= 0 and f.processor for f in reported)


def test_an_overloaded_model_is_skipped_and_the_silence_decides(call, speech_8k_pcm) -> None:
    # The inference thread 1 s behind (over the 0.5 s default): no decision is asked; the turn
    # ends after the VAD-only silence (0.8 s from the last speech), not the short stop and
    # not the 2 s an incomplete turn waits; the skip is reported for /metrics.
    log, batcher = _first_turn_log(call, speech_8k_pcm[: 8000 * 2 * 3], [0.9], backlog_s=1.0)
    [stop] = log.times(UserStoppedSpeakingFrame)
    assert batcher.clips == []
    assert 0.8 <= stop - FIRST[1] <= 0.8 + 0.15
    shed = [f for f in log.frames(MetricsFrame) if f.metric == TURN_SHED_METRIC]
    assert len(shed) == 1
    # Just under the bound: the model is asked as usual.
    log, batcher = _first_turn_log(call, speech_8k_pcm[: 8000 * 2 * 3], [0.9], backlog_s=0.4)
    assert len(batcher.clips) == 1
    assert not [f for f in log.frames(MetricsFrame) if f.metric == TURN_SHED_METRIC]


def test_the_batcher_knows_its_backlog() -> None:
    import asyncio
    import threading

    release = threading.Event()

    class _Slow:
        def complete_probability(self, clips: list[np.ndarray]) -> list[float]:
            release.wait(5)
            return [0.9] * len(clips)

    batcher = BatchedSmartTurn(_Slow())  # type: ignore[arg-type]

    async def main() -> tuple[float, float, list[float]]:
        asks = [asyncio.ensure_future(batcher.complete_probability(np.zeros(160, np.float32)))]
        asks += [asyncio.ensure_future(batcher.complete_probability(np.zeros(160, np.float32)))]
        await asyncio.sleep(0)
        behind = batcher.backlog_s()
        release.set()
        probs = list(await asyncio.gather(*asks))
        return behind, batcher.backlog_s(), probs

    behind, after, probs = asyncio.run(main())
    assert behind == pytest.approx(2 * 0.035)  # two waiting, at the starting cost estimate
    assert after == 0.0 and probs == [0.9, 0.9]


def test_settings_build_the_served_turn_taking() -> None:
    vad, turn = turn_taking(VoxpipeSettings(_env_file=None))  # type: ignore[call-arg]
    assert (turn.mode, vad.stop_secs, turn.max_wait_secs) == ("smart", 0.2, 2.0)
    s = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None,
        turn_detection="vad",
        vad_start_s=0.1,
        vad_confidence=0.6,
        vad_min_volume=0.5,
    )
    vad, turn = turn_taking(s)
    assert (turn.mode, vad.stop_secs, vad.start_secs, vad.confidence, vad.min_volume) == (
        "vad",
        0.8,
        0.1,
        0.6,
        0.5,
    )
    s = VoxpipeSettings(_env_file=None, vad_stop_s=0.3, turn_max_wait_s=1.5)  # type: ignore[call-arg]
    assert turn_taking(s)[0].stop_secs == 0.3 and turn_taking(s)[1].max_wait_secs == 1.5
    t = MemoryTransport(TransportParams(**transport_turn_kwargs(s)))
    assert t.input().turn_gate is not None and t.input().vad is not None
    assert t.input().vad.params.stop_secs == 0.3
    assert turn_taking(s)[1].shed_after_secs == 0.5  # the default
    s = VoxpipeSettings(_env_file=None, turn_shed_after_s=0)  # type: ignore[call-arg]
    assert turn_taking(s)[1].shed_after_secs == 0.0


def test_skipped_decisions_are_counted_in_metrics_not_timed() -> None:
    from voxpipe.server.metrics import ServerMetrics

    metrics = ServerMetrics(active_calls=lambda: 0)
    metrics.observe(MetricsFrame("TwilioInputTransport#3", TURN_SHED_METRIC, 1.0))
    metrics.observe(MetricsFrame("TwilioInputTransport#3", "turn_decision", 0.04))
    text = metrics.render().decode()
    assert "voxpipe_turn_decisions_shed_total 1.0" in text
    assert 'metric="turn_decision_shed"' not in text
    assert 'voxpipe_stage_latency_seconds_count{metric="turn_decision"' in text


@pytest.mark.slow
def test_the_model_tells_a_question_from_a_cut_sentence(call) -> None:
    """The shipped Smart Turn model on offline speech, through the VAD at the served defaults."""
    question = _say("What are your opening hours?")
    cut = _say("I would like to check my order, the number is")

    def run(pcm: bytes) -> tuple[list[float], TurnGate]:
        t = _transport(settings=VoxpipeSettings(_env_file=None))  # type: ignore[call-arg]

        async def script(task):
            await t.play_silence(0.5)
            await t.play_caller(pcm, 8000)
            await t.play_silence(3.0)

        log = call(t, [], script)
        gate = t.input().turn_gate
        assert gate is not None
        return log.times(UserStoppedSpeakingFrame), gate

    end_q = 0.5 + len(question) / 16000
    [stop], gate = run(question)
    assert gate.decisions == 1 and gate.incomplete == 0
    assert stop - end_q < 0.45  # the short stop plus the VAD's windows
    end_c = 0.5 + len(cut) / 16000
    [stop], gate = run(cut)
    assert gate.incomplete == 1
    assert stop - end_c > 1.8  # waited for more


def test_the_batcher_runs_decisions_in_its_thread() -> None:
    import asyncio

    model = SmartTurnModel()
    batcher = BatchedSmartTurn(model, max_batch=2)
    clips = [np.zeros(16000, dtype=np.float32), np.zeros(8000, dtype=np.float32)] * 2

    async def main() -> list[float]:
        return list(await asyncio.gather(*(batcher.complete_probability(c) for c in clips)))

    probs = asyncio.run(main())
    assert len(probs) == 4 and all(0.0 <= p <= 1.0 for p in probs)
    assert (batcher.batches, batcher.decisions) == (2, 4)


def test_bench_turn_reports_cost_per_decision() -> None:
    from voxpipe.bench.turn import run_turn_bench

    r = run_turn_bench(batch=2, decisions=2, repeats=1)
    assert r["single_ms"] > 0 and r["batched_ms"] > 0 and r["features_ms"] > 0
    assert r["batched_speedup_target"] == 3.0 and r["async_batches"] >= 1


def test_provider_latency_option() -> None:
    from voxpipe.cli import CommandError, _provider_latency

    assert _provider_latency("stt=150,llm=200,tts=150") == {
        "stt_latency": 0.15,
        "llm_first_token": 0.2,
        "tts_first_audio": 0.15,
    }
    with pytest.raises(CommandError, match="provider-latency"):
        _provider_latency("stt=fast")


def test_the_gate_keeps_the_last_8_s_in_order_across_the_ring() -> None:
    rate = 16000  # no resampling: the samples come back exactly
    gate = TurnGate(SMART, rate)
    signal = (np.arange(10 * rate) % 30000).astype("<i2")
    for i in range(0, len(signal), 320):  # 20 ms frames, wrapping the 8 s ring
        gate.feed(signal[i : i + 320].tobytes())
    clip = gate.utterance(2.0)  # plus the 0.3 s before the onset
    want = signal[-round(2.3 * rate) :].astype(np.float32) / 32768.0
    assert np.array_equal(clip, want)
    assert len(gate.utterance(30.0)) == 8 * rate  # never more than the model's window
