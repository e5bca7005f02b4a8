import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from voxpipe.audio import read_wav, resample_pcm16

DATA = Path(__file__).resolve().parents[2] / "data"


@dataclass
class Speech:
    """The synthetic test recording at one sample rate, with its speech segments (truth)."""

    pcm: bytes
    sample_rate: int
    segments: list[list[float]]


@pytest.fixture(scope="session")
def speech_16k() -> Speech:
    audio = read_wav(DATA / "speech_16k.wav")
    truth = json.loads((DATA / "speech_16k.json").read_text())
    assert audio.sample_rate == truth["sample_rate"] == 16000
    return Speech(audio.pcm, 16000, truth["segments"]["16000"])


@pytest.fixture(scope="session")
def speech_8k(speech_16k: Speech) -> Speech:
    truth = json.loads((DATA / "speech_16k.json").read_text())
    return Speech(resample_pcm16(speech_16k.pcm, 16000, 8000), 8000, truth["segments"]["8000"])


@pytest.fixture(params=[8000, 16000], ids=["8k", "16k"])
def speech(request: pytest.FixtureRequest, speech_8k: Speech, speech_16k: Speech) -> Speech:
    return speech_8k if request.param == 8000 else speech_16k
