"""The synthetic audio the TTS fakes send: exact lengths and timings in every format."""

from __future__ import annotations

import pytest

from voxpipe.audio import mulaw_to_pcm16
from voxpipe.testing.fakes._synth import parse_output_format, render_chars

TEXT = "Hello, world 42!"


@pytest.mark.parametrize("name", ["ulaw_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100"])
@pytest.mark.parametrize("ms_per_char", [60.0, 45.0, 37.5])
def test_lengths_and_timings_agree(name: str, ms_per_char: float) -> None:
    fmt = parse_output_format(name)
    assert fmt is not None
    rendered = render_chars(TEXT, fmt, ms_per_char)
    samples = len(rendered.audio) // fmt.bytes_per_sample
    assert samples == round(len(TEXT) * ms_per_char * fmt.sample_rate / 1000)
    total_ms = rendered.start_ms[-1] + rendered.duration_ms[-1]
    assert abs(total_ms - samples * 1000 / fmt.sample_rate) <= 0.5
    assert rendered.chars == list(TEXT)
    # Slices (one per websocket message) put back together are the whole, exactly.
    parts = [rendered.slice(i, i + 3) for i in range(0, len(TEXT), 3)]
    assert b"".join(p.audio for p in parts) == rendered.audio
    for part in parts:
        assert part.start_ms[0] == 0
        part_samples = len(part.audio) // fmt.bytes_per_sample
        end_ms = part.start_ms[-1] + part.duration_ms[-1]
        assert abs(end_ms - part_samples * 1000 / fmt.sample_rate) <= 0.5


def test_deterministic_and_mulaw_decodes_to_a_signal() -> None:
    fmt = parse_output_format("ulaw_8000")
    assert fmt is not None
    a = render_chars("ab", fmt, 60)
    assert a.audio == render_chars("ab", fmt, 60).audio
    pcm = mulaw_to_pcm16(a.audio)
    assert (
        max(
            abs(int.from_bytes(pcm[i : i + 2], "little", signed=True))
            for i in range(0, len(pcm), 2)
        )
        > 5000
    )
    # Different characters, different pitch: the two halves differ.
    assert a.audio[:480] != a.audio[480:]


def test_unknown_formats() -> None:
    assert parse_output_format("mp3_44100_128") is None
    assert parse_output_format("pcm_16000") is not None
