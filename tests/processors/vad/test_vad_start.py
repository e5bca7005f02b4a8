"""How the VAD decides that speech started: hysteresis and pauses between syllables.

The model's probabilities are scripted (a stand-in stream replaces Silero), so each test
states exactly which windows are speech. 16 kHz windows are 512 samples (32 ms).
"""

from __future__ import annotations

import pytest

from voxpipe.processors.vad import VADAnalyzer, VADEvent, VADParams

WINDOW_S = 0.032


class _ScriptedStream:
    """Stands in for ``SileroVADStream``: returns the next scripted probability per window."""

    window = 512

    def __init__(self, probabilities: list[float]) -> None:
        self._probs = list(probabilities)

    def probability(self, window: bytes) -> float:
        return self._probs.pop(0)

    def last_rms(self) -> float:
        return 3000.0  # about -21 dBFS: loud enough for the volume gate

    def reset(self) -> None:
        pass


def _events(probabilities: list[float], params: VADParams | None = None) -> list[VADEvent]:
    analyzer = VADAnalyzer(16000, params)
    analyzer.stream = _ScriptedStream(probabilities)  # type: ignore[assignment]
    return analyzer.analyze(bytes(2 * 512 * len(probabilities)))


def test_a_pause_between_syllables_does_not_restart_the_start() -> None:
    # 3 speech windows, a one-window pause, 4 more: 7 speech windows (0.224 s) >= 0.2 s.
    events = _events([0.9] * 3 + [0.1] + [0.9] * 4)
    assert [e.kind for e in events] == ["started"]
    assert events[0].speech_time == 0.0  # the run began with the first syllable
    assert events[0].time == pytest.approx(8 * WINDOW_S)


def test_a_window_just_under_the_threshold_continues_the_run() -> None:
    # 0.65 is under confidence 0.7 but within the 0.15 hysteresis once speech has begun.
    events = _events([0.9] * 3 + [0.65] + [0.9] * 3)
    assert [e.kind for e in events] == ["started"]
    assert events[0].speech_time == 0.0
    assert events[0].time == pytest.approx(7 * WINDOW_S)


def test_a_pause_of_start_gap_secs_restarts_the_count() -> None:
    # 4 quiet windows (0.128 s) >= start_gap_secs 0.1: the next run starts afresh.
    events = _events([0.9] * 3 + [0.1] * 4 + [0.9] * 7)
    assert [e.kind for e in events] == ["started"]
    assert events[0].speech_time == pytest.approx(7 * WINDOW_S)


def test_clicks_with_pauses_do_not_start_speech() -> None:
    # A click every 0.16 s: each run ends before it reaches 0.2 s of speech.
    assert _events(([0.95] + [0.05] * 4) * 6) == []


def test_a_run_cannot_begin_under_the_threshold() -> None:
    # Hysteresis only keeps a run going: 0.65 alone never starts one.
    assert _events([0.65] * 20) == []


def test_speaking_holds_through_windows_in_the_hysteresis_band() -> None:
    events = _events([0.9] * 7 + [0.6] * 30 + [0.1] * 26)
    assert [e.kind for e in events] == ["started", "stopped"]
    # The speech ended with the last band window, not where the probability first dipped.
    assert events[1].speech_time == pytest.approx(37 * WINDOW_S)


def test_without_hysteresis_and_gaps_the_old_strict_start_returns() -> None:
    strict = VADParams(hysteresis=0.0, start_gap_secs=0.0)
    events = _events([0.9] * 3 + [0.65] + [0.9] * 7, strict)
    assert events[0].speech_time == pytest.approx(4 * WINDOW_S)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        VADParams(confidence=0.5, hysteresis=0.6)
    with pytest.raises(ValueError, match="start_gap_secs"):
        VADParams(start_gap_secs=-0.1)
