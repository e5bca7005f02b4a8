"""Format conversion helpers: encodings and stateful rate conversion."""

import numpy as np
import pytest

from voxpipe.audio.convert import AudioConverter, convert, from_pcm16, to_pcm16
from voxpipe.audio.mulaw import mulaw_to_pcm16, pcm16_to_mulaw


def _tone(rate: int, secs: float, freq: float = 440.0) -> bytes:
    t = np.arange(round(rate * secs)) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def test_to_and_from_pcm16():
    pcm = _tone(8000, 0.1)
    mu = from_pcm16(pcm, "mulaw")
    assert mu == pcm16_to_mulaw(pcm) and len(mu) == len(pcm) // 2
    assert to_pcm16(mu, "mulaw") == mulaw_to_pcm16(mu)
    assert to_pcm16(pcm, "pcm16") == pcm and from_pcm16(pcm, "pcm16") == pcm
    with pytest.raises(ValueError, match="unsupported audio encoding 'opus'"):
        to_pcm16(b"", "opus")


def test_passthrough_is_untouched():
    conv = AudioConverter("mulaw", 8000, "mulaw", 8000)
    assert conv.passthrough and conv.process(b"\x01\x02") == b"\x01\x02" and conv.flush() == b""


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (("pcm16", 24000), ("mulaw", 8000)),
        (("mulaw", 8000), ("pcm16", 16000)),
        (("pcm16", 16000), ("pcm16", 8000)),
    ],
)
def test_chunked_conversion_equals_one_shot(src, dst):
    pcm = _tone(src[1], 1.0)
    audio = from_pcm16(pcm, src[0])
    whole = convert(audio, *src, *dst)
    conv = AudioConverter(*src, *dst)
    rng = np.random.default_rng(2)
    pieces, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 700))  # odd sizes: PCM16 samples split across chunks
        pieces.append(conv.process(audio[i : i + n]))
        i += n
    chunked = b"".join(pieces) + conv.flush()
    assert len(chunked) == len(whole)
    a = np.frombuffer(to_pcm16(chunked, dst[0]), dtype="<i2").astype(int)
    b = np.frombuffer(to_pcm16(whole, dst[0]), dtype="<i2").astype(int)
    assert np.max(np.abs(a - b)) <= (300 if dst[0] == "mulaw" else 2)
    # Duration is kept.
    width = 1 if dst[0] == "mulaw" else 2
    assert len(whole) / width / dst[1] == pytest.approx(1.0, abs=0.002)


def test_reset_drops_buffered_audio():
    conv = AudioConverter("pcm16", 16000, "pcm16", 8000)
    conv.process(_tone(16000, 0.05))
    conv.reset()
    assert conv.flush() == b""
