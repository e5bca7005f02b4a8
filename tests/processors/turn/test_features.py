"""Smart Turn's features: the fast path (frames touching audio only) equals the reference."""

from __future__ import annotations

import numpy as np
import pytest

from voxpipe.audio import resample_pcm16
from voxpipe.processors.turn.features import (
    FEATURE_FRAMES,
    N_MELS,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
    log_mel,
    log_mel_batch,
    log_mel_reference,
)
from voxpipe.processors.turn.gate import _PRE_ROLL_S, TurnGate
from voxpipe.processors.turn.params import TurnParams


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    clips: list[np.ndarray] = []
    # Around the edges: frame 0 reads sample 200 (reflection), a frame every 160 samples, the
    # last frames, exactly 8 s and longer.
    for n in (0, 1, 199, 200, 201, 360, 361, 561, 5000, 127_799, 127_800, 128_000, 150_000):
        clips.append(rng.normal(0.0, 0.1, n).astype(np.float32))
    for _ in range(24):
        n = int(rng.uniform(0.1, 9.0) * 16000)
        t = np.arange(n) / 16000
        kind = len(clips) % 5
        if kind == 0:  # quiet noise
            a = rng.normal(0.0, 10 ** rng.uniform(-4, -1), n)
        elif kind == 1:  # digital silence
            a = np.zeros(n)
        elif kind == 2:  # loud, clipped
            a = np.clip(rng.normal(0.0, 1.0, n), -1.0, 1.0)
        elif kind == 3:  # a tone
            a = 0.5 * np.sin(2 * np.pi * rng.uniform(50, 7000) * t)
        else:  # int16 speech-like levels with leading zeros in the audio itself
            a = np.round(rng.normal(0.0, 3000.0, n)) / 32768.0
            a[: n // 3] = 0.0
        clips.append(a.astype(np.float32))
    clips.append(rng.normal(0.0, 0.1, 20000))  # float64 in
    return clips


@pytest.mark.parametrize("clip", _clips(), ids=lambda c: f"{len(c)}")
def test_fast_features_equal_the_reference_bit_for_bit(clip: np.ndarray) -> None:
    fast = log_mel(clip)
    assert fast.shape == (N_MELS, FEATURE_FRAMES) and fast.dtype == np.float32
    # Bit for bit: the model quantizes its input, so even an ulp could move a value's bucket.
    np.testing.assert_array_equal(fast, log_mel_reference([clip])[0])


def test_a_batch_equals_the_reference() -> None:
    clips = _clips()[5:9]
    np.testing.assert_array_equal(log_mel_batch(clips), log_mel_reference(clips))
    assert log_mel_batch([]).shape == (0, N_MELS, FEATURE_FRAMES)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_utterance_reads_the_ring_in_order(rate: int) -> None:
    gate = TurnGate(TurnParams(mode="smart"), rate)
    rng = np.random.default_rng(3)
    fed: list[np.ndarray] = []
    for step in range(700):
        frame = rng.integers(-20000, 20000, rate // 50).astype("<i2")
        gate.feed(frame.tobytes())
        fed.append(frame)
        if step % 37 == 0:
            heard = np.concatenate(fed)
            for secs in (0.05, 1.0, 3.3, 7.9, 20.0):
                clip = gate.utterance(secs)
                n = min(len(heard), WINDOW_SECONDS * rate, round((secs + _PRE_ROLL_S) * rate))
                pcm = heard[len(heard) - n :].tobytes()
                if rate != 16000:
                    pcm = resample_pcm16(pcm, rate, 16000)
                want = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
                np.testing.assert_array_equal(clip, want[-WINDOW_SAMPLES:])
