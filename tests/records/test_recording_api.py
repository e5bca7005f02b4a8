"""``GET /api/calls/{id}/recording`` over a real server socket: the sealed recording streams as a
2-channel WAV, byte ranges (206, Content-Range) return the right bytes across envelope chunks,
downloads are audited, a tampered object is refused, and erasure deletes the recording."""

from __future__ import annotations

import io
import json
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from records_helpers import make_settings, new_key

from voxpipe.records.recording import RECORDING_CHUNK, RecordingWriter, recording_aad
from voxpipe.records.runtime import backend_of
from voxpipe.records.storage import recording_store
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.state.session import Turn
from voxpipe.state.shared import close_shared_stores, shared_stores
from voxpipe.state.transcripts import Transcript

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = ROOT / "bots" / "echo.py"
RATE = 8000


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _record(settings: Any, call_id: str, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """A sealed recording of random audio, written and uploaded as a call's end does."""
    from voxpipe.state import make_transcript_cipher

    cipher = make_transcript_cipher(settings)
    store = recording_store(settings)
    writer = RecordingWriter(
        store.spool.part_path(call_id),
        RATE,
        ring=cipher.ring if cipher else None,
        aad=recording_aad(call_id),
    )
    rng = np.random.default_rng(7)
    n = round(seconds * RATE)
    left = rng.integers(-20000, 20000, n, dtype=np.int16)
    right = rng.integers(-20000, 20000, n, dtype=np.int16)
    for i in range(0, n, 1600):
        writer.write(left[i : i + 1600], right[i : i + 1600])
    writer.close()
    store.spool.finish(call_id)
    assert await store.upload(call_id)
    return left, right


@pytest.mark.parametrize("sealed", [True, False])
async def test_recording_download_with_ranges(tmp_path: Path, sealed: bool) -> None:
    kek = new_key()
    s = make_settings(tmp_path, records_kek=kek if sealed else None)
    stores = await shared_stores(s)
    now = time.time()
    assert await stores.transcripts.write(
        Transcript("CA-rec", now - 60, now, turns=[Turn("user", "hi", now - 50, now - 49)])
    )
    assert await stores.transcripts.write(Transcript("CA-none", now - 60, now, turns=[]))
    backend = backend_of(stores.transcripts)
    assert backend is not None
    admin = await backend.tokens.create("admin-1", "admin")
    agent = await backend.tokens.create("agent-1", "agent")
    left, right = await _record(s, "CA-rec", 9.0)
    stored = (tmp_path / "recordings" / "CA-rec.wav").read_bytes()
    assert (b"RIFF" in stored[:64]) is (not sealed)
    app = create_app(ECHO_BOT, s, batched_vad=None)
    try:
        async with running_server(app, s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/api/calls/CA-rec", headers=_auth(admin))
            assert r.json()["has_recording"] is True
            r = await http.get("/api/calls/CA-none", headers=_auth(admin))
            assert r.json()["has_recording"] is False
            listed = await http.get("/api/calls", headers=_auth(admin))
            flags = {c["call_id"]: c["has_recording"] for c in listed.json()["calls"]}
            assert flags == {"CA-rec": True, "CA-none": False}
            r = await http.get("/api/calls/CA-none/recording", headers=_auth(admin))
            assert r.status_code == 404 and r.json()["detail"] == "no recording"
            r = await http.get("/api/calls/CA-rec/recording", headers=_auth(agent))
            assert r.status_code == 403

            full = await http.get("/api/calls/CA-rec/recording", headers=_auth(admin))
            assert full.status_code == 200
            assert full.headers["content-type"] == "audio/wav"
            assert full.headers["accept-ranges"] == "bytes"
            wav = full.content
            assert len(wav) == 44 + len(left) * 4 == int(full.headers["content-length"])
            with wave.open(io.BytesIO(wav)) as w:
                assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, RATE, 2)
                frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
            assert np.array_equal(frames[:, 0], left) and np.array_equal(frames[:, 1], right)

            total = len(wav)
            edge = RECORDING_CHUNK  # the first envelope chunk boundary
            for spec, (a, b) in {
                "bytes=0-99": (0, 99),
                "bytes=30-60": (30, 60),  # inside the WAV header
                f"bytes={edge - 10}-{edge + 9}": (edge - 10, edge + 9),  # across chunks
                f"bytes={2 * edge + 5}-{4 * edge}": (2 * edge + 5, 4 * edge),
                "bytes=-500": (total - 500, total - 1),  # the last 500 bytes
                f"bytes={total - 10}-": (total - 10, total - 1),
                f"bytes=1000-{total + 5000}": (1000, total - 1),  # clamped to the end
            }.items():
                r = await http.get(
                    "/api/calls/CA-rec/recording", headers={**_auth(admin), "range": spec}
                )
                assert r.status_code == 206, spec
                assert r.headers["content-range"] == f"bytes {a}-{b}/{total}", spec
                assert r.content == wav[a : b + 1], spec
            r = await http.get(
                "/api/calls/CA-rec/recording", headers={**_auth(admin), "range": f"bytes={total}-"}
            )
            assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{total}"

            audit = await backend.audit.entries(call_id="CA-rec")
            reads = [e for e in audit if e.action == "recording.read"]
            assert [e.outcome for e in reads].count("ok") == 8
            assert {e.outcome for e in reads} >= {"ok", "denied_role", "bad_range"}

            if sealed:  # one flipped bit in the stored object: refused, and audited
                path = tmp_path / "recordings" / "CA-rec.wav"
                blob = bytearray(path.read_bytes())
                blob[200] ^= 1
                path.write_bytes(bytes(blob))
                r = await http.get("/api/calls/CA-rec/recording", headers=_auth(admin))
                assert r.status_code == 500 and "does not decrypt" in r.json()["detail"]
                last = (await backend.audit.entries(call_id="CA-rec"))[-1]
                assert last.outcome == "decrypt_failed"

            # Erasure deletes the recording (and, in it, its wrapped data key).
            r = await http.delete("/api/calls/CA-rec", headers=_auth(admin))
            assert r.status_code == 200
            assert not (tmp_path / "recordings" / "CA-rec.wav").exists()
            r = await http.get("/api/calls/CA-rec/recording", headers=_auth(admin))
            assert r.status_code == 404
    finally:
        await close_shared_stores()


async def test_purge_deletes_recordings_past_retention(tmp_path: Path) -> None:
    from voxpipe.records.runtime import PURGE_ACTOR

    s = make_settings(tmp_path, records_kek=new_key())
    stores = await shared_stores(s)
    try:
        old = time.time() - 10 * 86400
        for cid in ("CA-old", "CA-held"):
            t = Transcript(cid, old - 60, old, turns=[], retain_until=old + 1)
            assert await stores.transcripts.write(t)
            await _record(s, cid, 1.0)
        backend = backend_of(stores.transcripts)
        assert backend is not None
        await backend.calls.set_hold("CA-held", True, PURGE_ACTOR)
        assert await backend.calls.purge(PURGE_ACTOR) == ["CA-old"]
        assert not (tmp_path / "recordings" / "CA-old.wav").exists()
        assert (tmp_path / "recordings" / "CA-held.wav").exists()
        row = [e for e in await backend.audit.entries(call_id="CA-old")][-1]
        assert row.action == "retention.purge"
        assert json.loads(row.detail) == {"recording_deleted": True}
    finally:
        await close_shared_stores()
