"""Where call recordings are kept: a durable local spool, and the object store behind it.

A recording is written to ``SPOOL_DIR/recordings/<call_id>.part`` as the call goes, renamed to
``<call_id>.rec`` when the call ends (an atomic rename, so a crash never leaves a half file
looking finished), then uploaded to ``RECORDINGS_URL``. A failed upload leaves the file in the
spool; ``RecordingUploader`` retries every ``SPOOL_RETRY_INTERVAL_S`` and removes the spooled
file only once the object store has it. Nothing is lost while the store is down.

Backends (one registry, ``BACKENDS``): ``file://`` (or a plain path) on the real filesystem and
``s3://bucket/prefix`` through boto3 (``voxpipe[records]``), with ``S3_ENDPOINT_URL``, the
standard AWS credentials, ``S3_SSE`` / ``S3_SSE_KMS_KEY_ID`` passed through as server-side
encryption headers and multipart uploads above ``S3_MULTIPART_THRESHOLD_MB``.

An object is ``<call_id>.wav``: the WAV bytes, sealed in an envelope (``VXE2`` magic, see
``voxpipe.records.envelope``) when a KEK is set. The sealed object carries its own wrapped data
key, so deleting the object deletes the recording's key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.records.envelope import KeyRing
    from voxpipe.records.salvage import SalvageReport

__all__ = [
    "BACKENDS",
    "FileBackend",
    "RecordingBackend",
    "RecordingSpool",
    "RecordingStore",
    "S3Backend",
    "backend_from_url",
    "recording_store",
]

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")


def object_key(call_id: str) -> str:
    """The object name of a call's recording; ValueError for an id unsafe as a file name."""
    if not _SAFE_ID.match(call_id) or ".." in call_id:
        raise ValueError(f"call id {call_id!r} cannot name a recording")
    return f"{call_id}.wav"


class RecordingBackend(Protocol):
    """An object store for finished recordings."""

    url: str
    encrypted_at_rest: bool  # the store itself encrypts (S3 SSE): informational

    async def put_file(self, key: str, path: Path) -> None: ...
    async def size(self, key: str) -> int | None: ...
    async def read_range(self, key: str, start: int, end: int) -> bytes: ...
    async def delete(self, key: str) -> bool: ...


class FileBackend:
    """Recordings as files under one directory of the real filesystem."""

    encrypted_at_rest = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def _put(self, key: str, path: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.tmp"
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self._path(key))

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, path)

    async def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def _read(self, key: str, start: int, end: int) -> bytes:
        with open(self._path(key), "rb") as f:
            f.seek(start)
            return f.read(end - start + 1)

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await asyncio.to_thread(self._read, key, start, end)

    async def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False


class S3Backend:
    """Recordings as objects in an S3 bucket (or any S3-compatible store), through boto3.

    boto3 is synchronous: each call runs in a worker thread so the event loop never waits.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        multipart_threshold: int = 8 * 1024 * 1024,
        client: Any = None,
    ) -> None:
        if client is None:
            try:
                import boto3
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError(
                    "RECORDINGS_URL=s3://... needs boto3: pip install 'voxpipe[records]'"
                ) from exc
            from botocore.config import Config

            # Bounded retries and timeouts: an upload that cannot succeed soon goes back to the
            # spool (retried later) instead of holding the end of a call for minutes.
            config = Config(
                connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
            )
            client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id
        self.encrypted_at_rest = bool(sse)
        self.multipart_threshold = multipart_threshold

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _extra(self) -> dict[str, str]:
        extra = {"ContentType": "application/octet-stream"}
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.sse_kms_key_id:
                extra["SSEKMSKeyId"] = self.sse_kms_key_id
        return extra

    def _put(self, key: str, path: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        # boto3's managed transfer switches to a multipart upload above the threshold (parts
        # of that size), so a long call is never one huge request.
        config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_threshold,
            use_threads=False,
        )
        self.client.upload_file(
            str(path), self.bucket, self._key(key), ExtraArgs=self._extra(), Config=config
        )

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, path)

    def _size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    async def size(self, key: str) -> int | None:
        return await asyncio.to_thread(self._size, key)

    def _read(self, key: str, start: int, end: int) -> bytes:
        got = self.client.get_object(
            Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end}"
        )
        data: bytes = got["Body"].read()
        return data

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        return await asyncio.to_thread(self._read, key, start, end)

    async def delete(self, key: str) -> bool:
        existed = await self.size(key) is not None
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))
        return existed


def _file_backend(url: str, settings: VoxpipeSettings | None) -> RecordingBackend:
    path = url[len("file://") :] if url.startswith("file://") else url
    return FileBackend(path)


def _s3_backend(url: str, settings: VoxpipeSettings | None) -> RecordingBackend:
    parsed = urlparse(url)
    if not parsed.netloc:
        raise ValueError(f"RECORDINGS_URL {url!r}: give s3://BUCKET/PREFIX")
    return S3Backend(
        parsed.netloc,
        parsed.path,
        endpoint_url=settings.s3_endpoint_url if settings else None,
        sse=settings.s3_sse if settings else None,
        sse_kms_key_id=settings.s3_sse_kms_key_id if settings else None,
        multipart_threshold=(settings.s3_multipart_threshold_mb if settings else 8) * 1024 * 1024,
    )


# Storage backends by URL scheme: adding one is a function and a line here.
BACKENDS = {"file": _file_backend, "": _file_backend, "s3": _s3_backend}


def backend_from_url(url: str, settings: VoxpipeSettings | None = None) -> RecordingBackend:
    """The backend for ``RECORDINGS_URL``; ValueError naming the schemes known."""
    scheme = urlparse(url).scheme if "://" in url else ""
    factory = BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in BACKENDS if s)
        raise ValueError(f"RECORDINGS_URL {url!r}: unknown scheme (known: {known})")
    return factory(url, settings)


class RecordingSpool:
    """The local directory recordings are written to, and wait in until uploaded."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def part_path(self, call_id: str) -> Path:
        object_key(call_id)
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{call_id}.part"

    def ready_path(self, call_id: str) -> Path:
        object_key(call_id)
        return self.root / f"{call_id}.rec"

    def finish(self, call_id: str) -> Path:
        """The call is over: its recording is complete and may be uploaded."""
        part, ready = self.part_path(call_id), self.ready_path(call_id)
        os.replace(part, ready)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return ready

    def discard(self, call_id: str) -> bool:
        """Delete whatever the spool holds of a call (consent withdrawn, erasure)."""
        found = False
        for path in (self.part_path(call_id), self.ready_path(call_id)):
            try:
                path.unlink()
                found = True
            except FileNotFoundError:
                pass
        return found

    def ready(self) -> list[str]:
        """Call ids of finished recordings not uploaded yet, oldest first."""
        if not self.root.is_dir():
            return []
        files = sorted(self.root.glob("*.rec"), key=lambda p: p.stat().st_mtime)
        return [p.name[: -len(".rec")] for p in files]


class RecordingStore:
    """The spool and the object store together: upload, retry, read, delete."""

    def __init__(
        self, backend: RecordingBackend, spool: RecordingSpool, *, retry_interval_s: float = 5.0
    ) -> None:
        self.backend = backend
        self.spool = spool
        self.retry_interval_s = retry_interval_s
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.uploads = 0
        # The KEK ring, to re-seal recordings a crashed worker left (None: stored in clear).
        self.ring: KeyRing | None = None
        self.salvaged = False

    async def upload(self, call_id: str) -> bool:
        """Upload one finished recording; True once the store has it (the spool copy goes)."""
        async with self._lock:  # the retry loop and a call's end never upload one file twice
            path = self.spool.ready_path(call_id)
            if not path.exists():
                return True
            try:
                await self.backend.put_file(object_key(call_id), path)
            except Exception as exc:
                logger.warning(
                    "recording of call %s not uploaded to %s (kept in %s, retried every %.0f s): %s",
                    call_id,
                    self.backend.url,
                    self.spool.root,
                    self.retry_interval_s,
                    exc,
                )
                return False
            path.unlink(missing_ok=True)
            self.uploads += 1
            return True

    async def flush(self) -> int:
        """Try every spooled recording once; how many are still waiting."""
        waiting = 0
        for call_id in self.spool.ready():
            if not await self.upload(call_id):
                waiting += 1
        return waiting

    def start(self) -> None:
        """Start the background retry of spooled uploads (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="voxpipe-recording-uploads"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def salvage(self) -> SalvageReport:
        """Finish the `.part` recordings whose writer died (a crash) and queue them."""
        from voxpipe.records.salvage import salvage_parts

        report = await asyncio.to_thread(salvage_parts, self.spool, self.ring)
        self.salvaged = True
        return report

    async def _loop(self) -> None:
        try:
            await self.salvage()  # once per process, before the first upload pass
        except Exception:
            logger.exception("recovering recordings left by a crashed worker failed")
        while True:
            try:
                await self.flush()
            except Exception:  # a spool directory problem is logged and retried
                logger.exception("recording upload retry failed")
            await asyncio.sleep(self.retry_interval_s)

    async def size(self, call_id: str) -> int | None:
        """Size of the stored object (None when there is none)."""
        return await self.backend.size(object_key(call_id))

    async def exists(self, call_id: str) -> bool:
        """Whether a recording of this call is stored or waiting in the spool."""
        if self.spool.ready_path(call_id).exists():
            return True
        return await self.size(call_id) is not None

    async def read_range(self, call_id: str, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (inclusive) of the stored object."""
        return await self.backend.read_range(object_key(call_id), start, end)

    async def delete(self, call_id: str) -> bool:
        """Delete the recording everywhere (spool and store); whether there was one."""
        spooled = self.spool.discard(call_id)
        stored = await self.backend.delete(object_key(call_id))
        return spooled or stored


_stores: dict[tuple[str, str], RecordingStore] = {}


def recording_store(settings: VoxpipeSettings) -> RecordingStore:
    """The worker's recording store for these settings (one per URL and spool directory)."""
    key = (settings.recordings_url, settings.spool_dir)
    store = _stores.get(key)
    if store is None:
        store = RecordingStore(
            backend_from_url(settings.recordings_url, settings),
            RecordingSpool(Path(settings.spool_dir) / "recordings"),
            retry_interval_s=settings.spool_retry_interval_s,
        )
        from voxpipe.state import make_transcript_cipher

        cipher = make_transcript_cipher(settings)
        store.ring = cipher.ring if cipher is not None else None
        _stores[key] = store
    return store
