"""A durable local spool in front of the transcript database, so no transcript is ever lost.

A transcript the database cannot take at call end is written to one file per call in the spool
directory (temporary file, fsync, atomic rename, fsync of the directory) and retried in the
background until the database takes it; the file is removed only after that. Files are named by
call id, so spooling or retrying a call twice leaves one copy, and the database write is
idempotent on call id, so a retry that races a success stores nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxpipe.state.background import BackgroundTask
from voxpipe.state.errors import TranscriptKeyError
from voxpipe.state.transcripts import ReadRecord, Transcript, TranscriptStore

if TYPE_CHECKING:
    from voxpipe.state.crypto import TranscriptCipher

logger = logging.getLogger(__name__)

_FORMAT = "voxpipe-transcript-spool"
_SUFFIX = ".json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolingTranscriptStore:
    """Wraps a transcript store: writes it cannot take go to a local spool and are retried.

    The spool holds the transcript sealed with the same AES-256-GCM key as the database when a
    cipher is given, so the spool is no weaker at rest than the database.
    """

    def __init__(
        self,
        inner: TranscriptStore,
        spool_dir: str | Path,
        *,
        cipher: TranscriptCipher | None = None,
        retry_interval_s: float = 5.0,
    ) -> None:
        self.inner = inner
        self.spool_dir = Path(spool_dir)
        self.bad_dir = self.spool_dir / "bad"
        self.retry_interval_s = retry_interval_s
        self._cipher = cipher
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task = BackgroundTask(self._retry_loop, "voxpipe-transcript-spool")

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Prepare the spool, connect (a database that is down is retried), start retrying."""
        await asyncio.to_thread(self._prepare_dir)
        if self.pending() == 0:
            self._drained.set()
        try:
            await self.inner.start()
        except Exception as exc:
            logger.warning(
                "transcript database not reachable at start (%s); transcripts will be spooled "
                "in %s and written when it is back",
                exc,
                self.spool_dir,
            )
        self._task.start()
        # Anything left by a previous run goes first.
        self._wake.set()

    async def close(self) -> None:
        """Stop retrying after one last attempt, then close the database."""
        await self._task.stop()
        await self.flush_spool()
        left = self.pending()
        if left:
            logger.warning(
                "%d transcript(s) still spooled in %s; they will be written on next start",
                left,
                self.spool_dir,
            )
        await self.inner.close()

    def _prepare_dir(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A temporary file is a write that never completed its rename: its transcript was
        # never acknowledged as spooled, so it is not a loss to drop it.
        for tmp in self.spool_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    # --- the store interface ------------------------------------------------------------------
    async def write(self, transcript: Transcript) -> bool:
        """Write through; if the database fails, spool durably. True when stored or spooled."""
        try:
            return await self.inner.write(transcript)
        except Exception as exc:
            try:
                await asyncio.to_thread(self._spool, transcript)
            except Exception as spool_exc:
                logger.critical(
                    "transcript %s NOT STORED: database write failed (%s) and spooling to %s "
                    "failed (%s); check the database and the spool directory",
                    transcript.call_id,
                    exc,
                    self.spool_dir,
                    spool_exc,
                    extra={"call_id": transcript.call_id},
                )
                raise
            logger.warning(
                "transcript %s spooled to %s, database write failed: %s",
                transcript.call_id,
                self.spool_dir,
                exc,
                extra={"call_id": transcript.call_id},
            )
            self._drained.clear()
            return True

    async def read(
        self, call_id: str, *, reader: str, purpose: str | None = None
    ) -> Transcript | None:
        return await self.inner.read(call_id, reader=reader, purpose=purpose)

    async def reads(self, call_id: str) -> list[ReadRecord]:
        return await self.inner.reads(call_id)

    async def call_ids(self, limit: int = 100) -> list[str]:
        return await self.inner.call_ids(limit)

    # --- spool files --------------------------------------------------------------------------
    def path_for(self, call_id: str) -> Path:
        """The spool file of a call: readable prefix + hash, so any call id is a safe name."""
        digest = hashlib.sha256(call_id.encode()).hexdigest()[:16]
        return self.spool_dir / f"{_UNSAFE.sub('_', call_id)[:64]}-{digest}{_SUFFIX}"

    def pending(self) -> int:
        """Transcripts waiting in the spool."""
        if not self.spool_dir.is_dir():
            return 0
        return sum(1 for _ in self.spool_dir.glob(f"*{_SUFFIX}"))

    def _encode(self, transcript: Transcript) -> bytes:
        plain = json.dumps(transcript.to_dict(), separators=(",", ":")).encode()
        if self._cipher is not None:
            payload = self._cipher.seal(plain, transcript.call_id)
            key_id: str | None = self._cipher.key_id
        else:
            payload, key_id = plain, None
        envelope = {
            "format": _FORMAT,
            "version": 1,
            "call_id": transcript.call_id,
            "turn_count": len(transcript.turns),
            "encrypted": self._cipher is not None,
            "key_id": key_id,
            "payload": base64.b64encode(payload).decode(),
        }
        return json.dumps(envelope).encode()

    def _decode(self, data: bytes) -> Transcript:
        envelope: dict[str, Any] = json.loads(data)
        if envelope.get("format") != _FORMAT:
            raise ValueError("not a voxpipe transcript spool file")
        payload = base64.b64decode(envelope["payload"])
        if envelope["encrypted"]:
            if self._cipher is None:
                raise TranscriptKeyError(
                    f"spooled transcript {envelope['call_id']} is encrypted (key id "
                    f"{envelope['key_id']}): set TRANSCRIPT_KEY to write it."
                )
            payload = self._cipher.open(payload, envelope["call_id"])
        return Transcript.from_dict(json.loads(payload))

    def _spool(self, transcript: Transcript) -> None:
        self._prepare_dir_once()
        target = self.path_for(transcript.call_id)
        if target.exists():
            # The same call spooled before (e.g. by the sweeper): keep the fuller copy.
            try:
                existing = json.loads(target.read_bytes())
                if int(existing.get("turn_count", 0)) > len(transcript.turns):
                    return
            except (OSError, ValueError):
                pass
        data = self._encode(transcript)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory entry is on disk.
        _fsync_dir(self.spool_dir)

    def _prepare_dir_once(self) -> None:
        if not self.spool_dir.is_dir():
            self._prepare_dir()

    def _quarantine(self, path: Path, reason: BaseException) -> None:
        self.bad_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(path, self.bad_dir / path.name)
        logger.error(
            "spooled transcript %s cannot be decoded (%s); moved to %s for an operator",
            path.name,
            reason,
            self.bad_dir,
        )

    # --- retrying -----------------------------------------------------------------------------
    async def flush_spool(self) -> int:
        """Try to write every spooled transcript now; returns how many were written.

        Stops at the first database failure (the rest would fail the same way) and leaves the
        remaining files for the next attempt.
        """
        written = 0
        async with self._flush_lock:
            files = await asyncio.to_thread(self._spooled_files)
            for path in files:
                try:
                    data = await asyncio.to_thread(path.read_bytes)
                except FileNotFoundError:
                    continue
                try:
                    transcript = self._decode(data)
                except (ValueError, KeyError, TypeError) as exc:
                    await asyncio.to_thread(self._quarantine, path, exc)
                    continue
                try:
                    await self.inner.write(transcript)
                except Exception as exc:
                    logger.info(
                        "transcript database still unavailable, %d transcript(s) stay spooled: %s",
                        len(files) - written,
                        exc,
                    )
                    return written
                await asyncio.to_thread(path.unlink, True)
                written += 1
            if written:
                await asyncio.to_thread(_fsync_dir, self.spool_dir)
                logger.warning("wrote %d spooled transcript(s) to the database", written)
            if self.pending() == 0:
                self._drained.set()
        return written

    def _spooled_files(self) -> list[Path]:
        if not self.spool_dir.is_dir():
            return []

        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except FileNotFoundError:  # written and removed by a concurrent flush
                return 0.0

        # Oldest first: the order calls ended in.
        return sorted(self.spool_dir.glob(f"*{_SUFFIX}"), key=mtime)

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until a flush has emptied the spool; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _retry_loop(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # arrives as the wake-up completes, and stop() would then wait forever.
                async with asyncio.timeout(self.retry_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self.pending():
                try:
                    await self.flush_spool()
                except Exception:
                    # A bug here must not end retrying for the life of the process.
                    logger.exception("transcript spool flush failed; retrying later")
