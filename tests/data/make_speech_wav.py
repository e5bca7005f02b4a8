"""Regenerate speech_16k.wav and speech_16k.json: synthetic speech with known silences.

Run from the repo root: ``.venv/bin/python tests/data/make_speech_wav.py``. Needs the
``espeakng-loader`` package (ships libespeak-ng and its voices) and soxr. The WAV is
committed, so tests do not need espeak; this script documents how it was made.

Layout: LEAD_SILENCE, then each utterance followed by its gap. The truth in the JSON is the
onset/offset of each utterance measured by energy (10 ms frames above -50 dBFS) on the clean
signal, in seconds from the start of the file, for the 16 kHz file and for its 8 kHz
resampling (which loses the fricative energy above 4 kHz).
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from voxpipe.audio import resample_pcm16, write_wav  # noqa: E402

OUT_RATE = 16000
LEAD_SILENCE = 0.6
UTTERANCES = [
    ("Hello, I need some help with my order.", 1.3),
    ("The number is four five six.", 1.2),
    ("Thank you, goodbye.", 0.7),
]
ENERGY_FRAME = 0.010
ENERGY_THRESHOLD_DBFS = -50.0

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def synthesize(texts: list[str]) -> tuple[list[np.ndarray], int]:
    """Speak each text with espeak-ng (en-us) and return int16 arrays at its native rate."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    data_dir = str(Path(espeakng_loader.get_data_path()).parent).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir, 0)
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed")
    if lib.espeak_SetVoiceByName(b"en-us") != 0:
        raise RuntimeError("espeak-ng has no en-us voice")
    chunks: list[np.ndarray] = []

    def on_audio(wav, n, _events):  # type: ignore[no-untyped-def]
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = _CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(callback)
    out = []
    for text in texts:
        chunks.clear()
        raw = text.encode() + b"\0"
        rc = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if rc != 0:
            raise RuntimeError(f"espeak_Synth failed with {rc}")
        out.append(np.concatenate(chunks).astype(np.int16))
    lib.espeak_Terminate()
    return out, rate


def trim(x: np.ndarray, rate: int) -> np.ndarray:
    """Cut espeak's own leading/trailing silence so the layout alone sets the gaps."""
    n = int(rate * ENERGY_FRAME)
    frames = x[: len(x) // n * n].astype(np.float64).reshape(-1, n)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) / 32768 + 1e-12)
    loud = np.nonzero(level > ENERGY_THRESHOLD_DBFS)[0]
    return x[loud[0] * n : (loud[-1] + 1) * n]


def speech_segments(x: np.ndarray, rate: int, min_gap: float = 0.4) -> list[list[float]]:
    """Onset/offset (s) of runs of loud 10 ms frames, bridging gaps shorter than min_gap."""
    n = int(rate * ENERGY_FRAME)
    frames = x[: len(x) // n * n].astype(np.float64).reshape(-1, n)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) / 32768 + 1e-12)
    loud = np.nonzero(level > ENERGY_THRESHOLD_DBFS)[0]
    segments: list[list[float]] = []
    for i in loud:
        start, end = i * ENERGY_FRAME, (i + 1) * ENERGY_FRAME
        if segments and start - segments[-1][1] < min_gap:
            segments[-1][1] = end
        else:
            segments.append([start, end])
    return [[round(a, 3), round(b, 3)] for a, b in segments]


def main() -> None:
    voices, rate = synthesize([t for t, _ in UTTERANCES])
    parts = [np.zeros(int(LEAD_SILENCE * OUT_RATE), np.int16)]
    for audio, (_, gap) in zip(voices, UTTERANCES, strict=True):
        clip = trim(audio, rate)
        clip16 = np.frombuffer(resample_pcm16(clip.tobytes(), rate, OUT_RATE), np.int16)
        parts += [clip16, np.zeros(int(gap * OUT_RATE), np.int16)]
    signal = np.concatenate(parts)
    here = Path(__file__).resolve().parent
    write_wav(here / "speech_16k.wav", signal.tobytes(), OUT_RATE)
    # At 8 kHz the fricatives above 4 kHz are gone, so that rate gets its own truth.
    signal_8k = np.frombuffer(resample_pcm16(signal.tobytes(), OUT_RATE, 8000), np.int16)
    truth = {
        "sample_rate": OUT_RATE,
        "duration": round(len(signal) / OUT_RATE, 3),
        "texts": [t for t, _ in UTTERANCES],
        "segments": {
            "16000": speech_segments(signal, OUT_RATE),
            "8000": speech_segments(signal_8k, 8000),
        },
    }
    (here / "speech_16k.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(json.dumps(truth))


if __name__ == "__main__":
    main()
