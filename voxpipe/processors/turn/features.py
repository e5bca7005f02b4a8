"""Log-mel features of the last 8 s of a caller's speech, in the layout Smart Turn v3 reads.

Smart Turn's encoder is Whisper's, so it reads Whisper's features: 16 kHz audio normalised to
zero mean and unit variance, a 400-point STFT every 160 samples (periodic Hann window,
reflect-padded, centred), the power spectrum projected on 80 Slaney mel bands from 0 to
8 kHz, log10, floored 8 decades under the peak and scaled as ``(x + 4) / 4``: 80 x 800.

Written with numpy here (about 8 ms for 8 s on this machine's cores) rather than taken from `transformers` or
`librosa`, whose weight (and numba, torch) a phone worker does not otherwise need.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FEATURE_FRAMES", "N_MELS", "SAMPLE_RATE", "WINDOW_SAMPLES", "log_mel", "log_mel_batch"]

SAMPLE_RATE = 16000
WINDOW_SECONDS = 8
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS
N_FFT = 400
HOP = 160
N_MELS = 80
FEATURE_FRAMES = WINDOW_SAMPLES // HOP  # 800


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def _mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, each normalised to unit area (Slaney)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, N_FFT // 2 + 1)
    top = _hz_to_mel(np.array([SAMPLE_RATE / 2.0]))[0]
    edges = _mel_to_hz(np.linspace(0.0, top, N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    filters: np.ndarray = (tri * (2.0 / (upper - lower))).astype(np.float32)
    return filters


_FILTERS = _mel_filters()
# Periodic Hann window (the DFT's period, not the symmetric one).
_WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def _fit(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of ``audio`` (float32 in -1..1), zero-padded at the front when shorter."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) >= WINDOW_SAMPLES:
        return audio[-WINDOW_SAMPLES:]
    return np.concatenate([np.zeros(WINDOW_SAMPLES - len(audio), dtype=np.float32), audio])


def log_mel_batch(clips: list[np.ndarray]) -> np.ndarray:
    """Features for several clips at 16 kHz: float32 (len(clips), 80, 800)."""
    x = np.stack([_fit(c) for c in clips])
    x = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-7)
    padded = np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=1)[:, ::HOP]
    # 801 frames for 8 s: Whisper drops the last one.
    frames = frames[:, :FEATURE_FRAMES] * _WINDOW
    power = np.abs(np.fft.rfft(frames, axis=2)).astype(np.float32) ** 2  # (n, 800, 201)
    mel = np.maximum(np.matmul(power, _FILTERS.T).transpose(0, 2, 1), 1e-10)
    log = np.log10(mel)
    log = np.maximum(log, log.max(axis=(1, 2), keepdims=True) - 8.0)
    features: np.ndarray = ((log + 4.0) / 4.0).astype(np.float32)
    return features


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Features for one clip at 16 kHz: float32 (80, 800)."""
    one: np.ndarray = log_mel_batch([audio])[0]
    return one
