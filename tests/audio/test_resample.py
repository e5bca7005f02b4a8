import numpy as np
import pytest

from voxpipe.audio import StreamingResampler, resample_pcm16


def _signal(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = 6000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1234 * t)
    x += rng.normal(0, 800, t.size)
    return x.clip(-32768, 32767).astype(np.int16)


def _chunked(r: StreamingResampler, data: bytes, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, 700))  # includes odd sizes that split a sample
        out.append(r.process(data[i : i + n]))
        i += n
    out.append(r.flush())
    return b"".join(out)


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (16000, 8000), (24000, 8000), (48000, 16000)]
)
def test_chunked_equals_one_shot(src: int, dst: int):
    data = _signal(src, 6.0).tobytes()
    whole = np.frombuffer(resample_pcm16(data, src, dst), "<i2").astype(np.int32)
    streamed = np.frombuffer(_chunked(StreamingResampler(src, dst), data, seed=src + dst), "<i2")
    assert streamed.size == whole.size == int(len(data) / 2 * dst / src)
    # Identical filters; float rounding may tip an int16 sample by one step, no more.
    assert np.max(np.abs(streamed.astype(np.int32) - whole)) <= 1


def test_no_clicks_at_chunk_edges():
    # A sine cut into 20 ms chunks must come out as the same sine at the new rate: a click or
    # a lost/duplicated sample at any chunk edge would show up as a large sample error.
    src, dst, f = 8000, 16000, 300.0
    t_in = np.arange(src * 2) / src
    data = (10000 * np.sin(2 * np.pi * f * t_in)).astype(np.int16).tobytes()
    r = StreamingResampler(src, dst)
    out = b"".join(r.process(data[i : i + 320]) for i in range(0, len(data), 320)) + r.flush()
    y = np.frombuffer(out, "<i2").astype(np.float64)
    ideal = 10000 * np.sin(2 * np.pi * f * np.arange(y.size) / dst)
    interior = slice(dst // 50, y.size - dst // 50)  # the filter's edges are not the point
    assert np.max(np.abs(y[interior] - ideal[interior])) < 30


def test_passthrough_and_reset():
    r = StreamingResampler(16000, 16000)
    assert r.passthrough
    assert r.process(b"\x01\x02\x03") == b"\x01\x02"
    assert r.process(b"\x04") == b"\x03\x04"
    assert r.flush() == b""

    r = StreamingResampler(8000, 16000)
    first = r.process(_signal(8000, 0.5).tobytes()) + r.flush()
    r.reset()
    second = r.process(_signal(8000, 0.5).tobytes()) + r.flush()
    assert first == second  # flush starts the stream afresh, and output is deterministic


def test_bad_rates():
    with pytest.raises(ValueError, match="positive"):
        StreamingResampler(0, 8000)
