import io
import wave

import numpy as np
import pytest

from voxpipe.audio import read_wav, wav_bytes, write_wav


def test_round_trip_file(tmp_path):
    pcm = np.arange(-1000, 1000, dtype="<i2").tobytes()
    write_wav(tmp_path / "a.wav", pcm, 8000)
    audio = read_wav(tmp_path / "a.wav")
    assert (audio.pcm, audio.sample_rate, audio.num_channels) == (pcm, 8000, 1)
    assert audio.duration == pytest.approx(2000 / 8000)
    audio = read_wav(str(tmp_path / "a.wav"))
    assert audio.pcm == pcm


def test_round_trip_in_memory_stereo():
    pcm = np.arange(0, 4000, dtype="<i2").tobytes()
    audio = read_wav(io.BytesIO(wav_bytes(pcm, 48000, num_channels=2)))
    assert (audio.pcm, audio.sample_rate, audio.num_channels) == (pcm, 48000, 2)
    assert audio.duration == pytest.approx(2000 / 48000)


def _raw_wav(width: int, frames: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(16000)
        w.writeframes(frames)
    buf.seek(0)
    return buf


@pytest.mark.parametrize(
    ("width", "frames"),
    [
        (1, bytes([0, 128, 255])),  # unsigned 8-bit
        (3, b"\xff\x00\x80" + b"\x00\x00\x00" + b"\x00\xff\x7f"),  # 24-bit little-endian
        (4, np.array([-(2**31), 0, 2**31 - 65536], "<i4").tobytes()),
    ],
)
def test_other_widths_become_pcm16(width, frames):
    audio = read_wav(_raw_wav(width, frames))
    samples = np.frombuffer(audio.pcm, "<i2").tolist()
    assert samples[0] == -32768
    assert samples[1] == 0
    assert samples[2] >= 32512


def test_errors():
    with pytest.raises(ValueError, match="WAV"):
        read_wav(io.BytesIO(b"not a wav file at all"))
    with pytest.raises(ValueError, match="multiple of 4"):
        write_wav(io.BytesIO(), b"\x00" * 6, 8000, num_channels=2)
