import numpy as np
import pytest

from voxpipe.audio import dbfs, dbfs_to_volume, rms, volume
from voxpipe.audio.volume import SILENCE_DBFS


def test_levels():
    assert rms(b"") == 0.0
    assert dbfs(bytes(640)) == SILENCE_DBFS
    assert volume(bytes(640)) == 0.0
    square = np.array([32767, -32768] * 160, dtype="<i2")
    assert dbfs(square.tobytes()) == pytest.approx(0.0, abs=0.01)
    sine = (32767 * np.sin(2 * np.pi * np.arange(1600) / 160)).astype(np.int16)
    assert dbfs(sine) == pytest.approx(-3.01, abs=0.02)
    assert rms(sine) == pytest.approx(32767 / np.sqrt(2), rel=1e-3)
    quiet = (sine / 100).astype(np.int16)  # 40 dB down
    assert dbfs(quiet) == pytest.approx(-43.0, abs=0.1)


def test_volume_scale():
    assert dbfs_to_volume(-120) == 0.0
    assert dbfs_to_volume(-70) == 0.0
    assert dbfs_to_volume(-46) == pytest.approx(0.6)
    assert dbfs_to_volume(-30) == 1.0
    assert dbfs_to_volume(0) == 1.0
    loud_speechlike = (np.random.default_rng(0).normal(0, 2000, 512)).astype(np.int16)
    assert volume(loud_speechlike) == 1.0  # about -24 dBFS
