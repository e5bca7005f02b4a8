"""A recording a crashed worker left half-written is recovered up to its last whole chunk."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from records_helpers import make_settings, new_key

from voxpipe.records.envelope import EnvelopeError, EnvelopeReader, KeyRing, header_length
from voxpipe.records.recording import WAV_HEADER_LEN, recording_aad
from voxpipe.records.salvage import salvage_parts
from voxpipe.records.storage import RecordingSpool, recording_store

RATE = 8000

# A worker that records 10 s of a known signal, says so, then hangs until it is killed.
CHILD = r"""
import base64, sys
from pathlib import Path
import numpy as np
from voxpipe.records.envelope import KeyRing
from voxpipe.records.recording import RecordingWriter, recording_aad
key = sys.argv[3]
ring = KeyRing(base64.b64decode(key)) if key != "-" else None
w = RecordingWriter(Path(sys.argv[1]), 8000, ring=ring, aad=recording_aad(sys.argv[2]))
n = np.arange(80000, dtype=np.int64)
w.write((n % 30000).astype(np.int16), (-(n % 30000)).astype(np.int16))
w._file.flush()
print("written", flush=True)
sys.stdin.read()
"""


def _expected(frames: int) -> np.ndarray:
    n = np.arange(frames, dtype=np.int64)
    out = np.empty((frames, 2), dtype="<i2")
    out[:, 0] = n % 30000
    out[:, 1] = -(n % 30000)
    return out


def _crash_mid_recording(spool: RecordingSpool, call_id: str, key: str | None) -> None:
    part = spool.part_path(call_id)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(part), call_id, key or "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"written\n"
        # The writer is alive: its recording is not touched.
        report = salvage_parts(spool, KeyRing(base64.b64decode(key)) if key else None)
        assert report.live == [call_id] and part.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def _frames(wav_body: bytes) -> np.ndarray:
    return np.frombuffer(wav_body, dtype="<i2").reshape(-1, 2)


def test_a_sealed_recording_of_a_killed_worker_is_resealed(tmp_path: Path) -> None:
    key = new_key()
    ring = KeyRing(base64.b64decode(key))
    spool = RecordingSpool(tmp_path / "spool")
    _crash_mid_recording(spool, "CA-crash", key)
    torn = spool.part_path("CA-crash").read_bytes()
    # As left, the object is refused (no final chunk): a reader must not take it as complete.
    reader = EnvelopeReader(ring, recording_aad("CA-crash"))
    reader.feed(torn)
    with pytest.raises(EnvelopeError):
        reader.close()

    report = salvage_parts(spool, ring)
    assert report.sealed == ["CA-crash"] and not report.damaged
    rec = spool.ready_path("CA-crash").read_bytes()
    reader = EnvelopeReader(ring, recording_aad("CA-crash"))
    plain = reader.feed(rec)
    reader.close()  # complete now
    frames = _frames(plain[WAV_HEADER_LEN:])
    # Every whole chunk the worker wrote is kept, exactly; the unwritten tail is not invented.
    assert len(frames) >= 30000
    assert np.array_equal(frames, _expected(len(frames)))
    assert rec[: header_length(rec)] != torn[: header_length(torn)]  # a fresh data key


def test_a_clear_recording_gets_its_real_length(tmp_path: Path) -> None:
    spool = RecordingSpool(tmp_path / "spool")
    _crash_mid_recording(spool, "CA-clear", None)
    part = spool.part_path("CA-clear")
    with open(part, "ab") as f:
        f.write(b"\x01\x02")  # a torn last frame
    assert salvage_parts(spool, None).sealed == ["CA-clear"]
    rec = spool.ready_path("CA-clear").read_bytes()
    assert rec[:4] == b"RIFF"
    data_len = int.from_bytes(rec[40:44], "little")
    assert data_len == len(rec) - WAV_HEADER_LEN == 80000 * 4
    assert np.array_equal(_frames(rec[WAV_HEADER_LEN:]), _expected(80000))


def test_an_altered_chunk_stops_the_salvage_there(tmp_path: Path) -> None:
    key = new_key()
    ring = KeyRing(base64.b64decode(key))
    spool = RecordingSpool(tmp_path / "spool")
    _crash_mid_recording(spool, "CA-alt", key)
    part = spool.part_path("CA-alt")
    blob = bytearray(part.read_bytes())
    cut = header_length(bytes(blob)) + 2 * (4 + 64 * 1024 + 16) + 100  # inside chunk 2
    blob[cut] ^= 0xFF
    part.write_bytes(bytes(blob))
    assert salvage_parts(spool, ring).sealed == ["CA-alt"]
    reader = EnvelopeReader(ring, recording_aad("CA-alt"))
    plain = reader.feed(spool.ready_path("CA-alt").read_bytes())
    reader.close()
    assert len(plain) == 2 * 64 * 1024  # chunks 0 and 1, nothing after the altered one
    assert np.array_equal(_frames(plain[WAV_HEADER_LEN:]), _expected((len(plain) - 44) // 4))


def test_a_recording_that_does_not_open_is_kept_aside_and_reported(tmp_path: Path) -> None:
    spool = RecordingSpool(tmp_path / "spool")
    _crash_mid_recording(spool, "CA-other", new_key())
    report = salvage_parts(spool, KeyRing(os.urandom(32)))  # not the key it was sealed with
    assert report.damaged == ["CA-other"] and not report.sealed
    assert (spool.root / "CA-other.damaged").exists()
    assert not spool.ready_path("CA-other").exists()


async def test_the_store_recovers_and_uploads_at_start(tmp_path: Path) -> None:
    key = new_key()
    settings = make_settings(tmp_path, records_kek=key)
    store = recording_store(settings)
    _crash_mid_recording(store.spool, "CA-up", key)
    report = await store.salvage()
    assert report.sealed == ["CA-up"]
    assert await store.flush() == 0
    assert (tmp_path / "recordings" / "CA-up.wav").exists()
    assert not store.spool.ready_path("CA-up").exists()
