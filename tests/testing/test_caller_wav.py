"""caller_wav: the caller's side of a call from text, with the offline TTS; the Transport contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxpipe.audio import read_wav
from voxpipe.call import Transport
from voxpipe.testing import caller_wav
from voxpipe.transports.memory import MemoryTransport
from voxpipe.transports.wav import WavFileTransport


def speech_spans(path: Path) -> list[tuple[float, float]]:
    """(start, end) seconds of the non-silent stretches (silence is digital zero here)."""
    wav = read_wav(path)
    loud = np.abs(np.frombuffer(wav.pcm, dtype="<i2")) > 0
    spans: list[tuple[float, float]] = []
    start = None
    quiet = 0
    for i, on in enumerate(loud):
        if on:
            start = i if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet > wav.sample_rate // 2:  # half a second of zeros ends a line
                spans.append((start / wav.sample_rate, (i - quiet + 1) / wav.sample_rate))
                start, quiet = None, 0
    if start is not None:
        spans.append((start / wav.sample_rate, len(loud) / wav.sample_rate))
    return spans


def test_lines_with_their_own_pauses(tmp_path: Path) -> None:
    path = caller_wav(
        [("hello there", 2.0), "goodbye"], tmp_path / "c.wav", lead_s=1.0, pause_s=3.0
    )
    wav = read_wav(path)
    assert wav.sample_rate == 16000 and wav.num_channels == 1
    (s1, e1), (s2, e2) = speech_spans(path)
    assert 1.0 <= s1 < 1.2  # after the lead silence
    assert 2.0 <= s2 - e1 < 2.3  # the line's own pause
    assert 3.0 <= wav.duration - e2 < 3.2  # the default pause after the last line


def test_one_line_as_text_and_a_temporary_file(tmp_path: Path) -> None:
    path = caller_wav("hello", sample_rate=8000, lead_s=0.5)
    try:
        wav = read_wav(path)
        assert wav.sample_rate == 8000 and len(speech_spans(path)) == 1
    finally:
        path.unlink()


def test_bad_lines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one line"):
        caller_wav([], tmp_path / "x.wav")
    with pytest.raises(ValueError, match="empty line"):
        caller_wav(["hi", " "], tmp_path / "x.wav")
    with pytest.raises(ValueError, match="negative pause"):
        caller_wav([("hi", -1.0)], tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


def test_the_shipped_transports_fit_the_transport_protocol(tmp_path: Path) -> None:
    wav = caller_wav("hi", tmp_path / "c.wav", lead_s=0.1)
    for transport in (MemoryTransport(), WavFileTransport(wav)):
        assert isinstance(transport, Transport)
        assert transport.input() is transport.input() and transport.output().name
    assert not isinstance(object(), Transport)
