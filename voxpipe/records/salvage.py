"""Recordings a crashed worker left half-written: sealed up to their last whole chunk, uploaded.

A live recording's ``.part`` file is held under an exclusive ``flock`` by the worker writing it
(``RecordingWriter``). The lock dies with the process, so a ``.part`` whose lock can be taken
belongs to nobody: its call ended with the crash. Salvage keeps every frame that was written
completely and authentically and finishes the file as a normal recording (``.rec``), which the
upload loop then sends to the object store:

* a clear WAV gets its real lengths and loses a torn last frame;
* a sealed one is opened chunk by chunk (a torn last chunk is dropped, an altered one stops the
  read there) and sealed again under a fresh data key with a proper final chunk, because a
  missing final chunk is exactly what a reader must refuse as truncation.

A ``.part`` that cannot be opened at all (another key, a broken header) is renamed
``.damaged`` and reported; it is never deleted, so nothing is lost that a person could recover.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from voxpipe.records.envelope import EnvelopeError, EnvelopeReader, EnvelopeWriter, is_envelope
from voxpipe.records.recording import RECORDING_CHUNK, WAV_HEADER_LEN, recording_aad, wav_header

if TYPE_CHECKING:
    from voxpipe.records.envelope import KeyRing
    from voxpipe.records.storage import RecordingSpool

__all__ = ["SalvageReport", "salvage_parts"]

logger = logging.getLogger(__name__)

_BLOCK = 256 * 1024
_FRAME = 4  # stereo PCM16


@dataclass(slots=True)
class SalvageReport:
    """What one pass over the spool did, call ids per outcome."""

    sealed: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _salvage_clear(path: Path, out: Path) -> int:
    """Copy the WAV with its real lengths; frames kept."""
    size = path.stat().st_size
    frames = max(size - WAV_HEADER_LEN, 0) // _FRAME
    with open(path, "rb") as src, open(out, "wb") as dst:
        header = src.read(WAV_HEADER_LEN)
        if len(header) < WAV_HEADER_LEN or header[:4] != b"RIFF":
            raise EnvelopeError("not a WAV file")
        sample_rate = int.from_bytes(header[24:28], "little")
        dst.write(wav_header(sample_rate, frames * _FRAME))
        left = frames * _FRAME
        while left:
            block = src.read(min(_BLOCK, left))
            if not block:
                break
            dst.write(block)
            left -= len(block)
        dst.flush()
        os.fsync(dst.fileno())
    return frames


def _salvage_sealed(path: Path, out: Path, ring: KeyRing, call_id: str) -> int:
    """Re-seal what opens of ``path`` into ``out``; plaintext bytes kept."""
    aad = recording_aad(call_id)
    reader = EnvelopeReader(ring, aad)
    writer = EnvelopeWriter(ring, aad, chunk_size=RECORDING_CHUNK)
    kept = 0
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(writer.header)
        # Reads no longer than a sealed chunk complete at most one chunk each, so the chunks
        # before a bad one are all kept (a feed that raises returns nothing).
        while block := src.read(RECORDING_CHUNK):
            try:
                plain = reader.feed(block)
            except EnvelopeError as exc:
                if not reader.started:
                    raise  # the header itself does not open: nothing to keep
                # An altered or torn chunk: everything before it is authentic, keep that.
                logger.warning("recording %s: salvage stops at a bad chunk: %s", call_id, exc)
                break
            kept += len(plain)
            dst.write(writer.write(plain))
        if kept == 0:
            raise EnvelopeError("no complete chunk to keep")
        dst.write(writer.close())
        dst.flush()
        os.fsync(dst.fileno())
    return kept


def salvage_parts(
    spool: RecordingSpool, ring: KeyRing | None, *, skip: set[str] | None = None
) -> SalvageReport:
    """Finish every abandoned ``.part`` in ``spool`` (blocking: run it in a thread)."""
    report = SalvageReport()
    if not spool.root.is_dir():
        return report
    for path in sorted(spool.root.glob("*.part")):
        call_id = path.name[: -len(".part")]
        if skip and call_id in skip:
            report.live.append(call_id)
            continue
        fd = _try_lock(path)
        if fd is None:
            report.live.append(call_id)  # its writer holds it: a live call
            continue
        try:
            _salvage_one(spool, path, call_id, ring, report)
        finally:
            os.close(fd)
    return report


def _salvage_one(
    spool: RecordingSpool, path: Path, call_id: str, ring: KeyRing | None, report: SalvageReport
) -> None:
    tmp = path.with_suffix(".salvage")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if is_envelope(head):
            if ring is None:
                raise EnvelopeError("sealed, and no RECORDS_KEK / TRANSCRIPT_KEY is set")
            kept = _salvage_sealed(path, tmp, ring, call_id)
            what = f"{kept // _FRAME} frames"
        else:
            what = f"{_salvage_clear(path, tmp)} frames"
    except (EnvelopeError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        damaged = path.with_suffix(".damaged")
        os.replace(path, damaged)
        logger.error(
            "recording of call %s left by a crashed worker cannot be recovered (%s); kept as %s",
            call_id,
            exc,
            damaged,
        )
        report.damaged.append(call_id)
        return
    os.replace(tmp, path)
    spool.finish(call_id)
    logger.warning(
        "recording of call %s left by a crashed worker recovered (%s) and queued for upload",
        call_id,
        what,
    )
    report.sealed.append(call_id)
