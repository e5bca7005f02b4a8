import numpy as np
import pytest

from voxpipe.audio import Chunker, frame_bytes


def test_frame_bytes():
    assert frame_bytes(8000) == 320
    assert frame_bytes(8000, sample_width=1) == 160  # 20 ms of mu-law
    assert frame_bytes(16000) == 640
    assert frame_bytes(48000, 10, channels=2) == 1920
    with pytest.raises(ValueError, match="whole number of samples"):
        frame_bytes(11025, 20)


def test_arbitrary_chunks_become_fixed_frames():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    c = Chunker(320)
    frames, i = [], 0
    while i < len(data):
        n = int(rng.integers(0, 1000))
        frames += c.push(data[i : i + n])
        assert c.pending < 320
        i += n
    assert all(len(f) == 320 for f in frames)
    assert len(frames) == len(data) // 320
    rest = c.flush()
    assert b"".join(frames) + rest == data
    assert c.pending == 0


def test_exact_frames_and_small_pieces():
    c = Chunker(4)
    assert c.push(b"abcd") == [b"abcd"]
    assert c.push(bytearray(b"ab")) == []
    assert c.push(memoryview(b"cdefghij")) == [b"abcd", b"efgh"]
    assert c.pending == 2
    assert c.flush(pad=b"\x00") == b"ij\x00\x00"
    assert c.flush() == b""
    c.push(b"xy")
    c.clear()
    assert c.pending == 0
    with pytest.raises(ValueError):
        Chunker(0)
