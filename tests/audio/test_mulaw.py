import warnings

import numpy as np
import pytest

from voxpipe.audio import MULAW_SILENCE, mulaw_to_pcm16, pcm16_to_mulaw
from voxpipe.audio.mulaw import mulaw_decode_array, mulaw_encode_array

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def test_known_codes():
    assert pcm16_to_mulaw(np.zeros(4, np.int16).tobytes()) == bytes([MULAW_SILENCE]) * 4
    decoded = np.frombuffer(mulaw_to_pcm16(bytes([0x00, 0x80, 0x7F, 0xFF, 0x70, 0xF0])), "<i2")
    # 0x00/0x80 are the loudest codes, 0x7F/0xFF the two zeros, 0x70/0xF0 segment 0 mid-level.
    assert decoded.tolist() == [-32124, 32124, 0, 0, -120, 120]


def test_round_trip_within_codec_error():
    codes = np.frombuffer(pcm16_to_mulaw(ALL_PCM.tobytes()), np.uint8)
    back = np.frombuffer(mulaw_to_pcm16(codes.tobytes()), "<i2").astype(np.int32)
    err = np.abs(back - ALL_PCM.astype(np.int32))
    # G.711 quantises segment s with a step of 8 << s (16-bit units); decoding returns the
    # middle of the step, so the error is at most half a step, plus the 2 low bits G.711 drops.
    segment = (((~codes) >> 4) & 0x07).astype(np.int32)
    bound = (4 << segment) + 4
    inside = np.abs(ALL_PCM.astype(np.int32)) <= 32124
    assert np.all(err[inside] <= bound[inside])
    # Beyond the top code the codec clips.
    assert np.all(np.abs(back[~inside]) == 32124)
    # Relative error of speech-level samples stays within G.711's ~3.5 % (half a step of 1/16).
    loud = inside & (np.abs(ALL_PCM.astype(np.int32)) > 1000)
    assert np.max(err[loud] / np.abs(ALL_PCM[loud].astype(np.float64))) < 0.036


def test_every_code_survives_decode_encode():
    again = mulaw_encode_array(mulaw_decode_array(ALL_CODES))
    expected = ALL_CODES.copy()
    expected[0x7F] = 0xFF  # "negative zero" decodes to 0, which encodes as the positive zero
    assert np.array_equal(again, expected)


def test_matches_reference_coder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # CPython's G.711 coder, gone in 3.13
    pcm = ALL_PCM.tobytes()
    assert pcm16_to_mulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    assert mulaw_to_pcm16(bytes(range(256))) == audioop.ulaw2lin(bytes(range(256)), 2)


def test_sizes_and_types():
    assert len(pcm16_to_mulaw(bytes(320))) == 160
    assert len(mulaw_to_pcm16(bytearray(160))) == 320
    assert mulaw_to_pcm16(memoryview(b"\xff\xff")) == bytes(4)
    assert pcm16_to_mulaw(b"") == b""
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_mulaw(b"\x00\x01\x02")
