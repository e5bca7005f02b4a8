"""Recording storage: the real filesystem, and S3 against a `moto` server the tests start on a free
loopback port (multipart, server-side encryption headers, the store down during a call)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402

from voxpipe.records.storage import (  # noqa: E402
    FileBackend,
    RecordingSpool,
    RecordingStore,
    S3Backend,
    backend_from_url,
)

MOTO = Path(sys.executable).with_name("moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Moto:
    """A moto S3 server subprocess on one port (startable after the test began: "comes back")."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not MOTO.exists():
            pytest.skip("moto_server is not installed (pip install 'moto[server]')")
        self.proc = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until it accepts connections
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto_server exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def moto() -> Iterator[Moto]:
    server = Moto(_free_port())
    yield server
    server.stop()


def _client(url: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def _spooled(tmp_path: Path, call_id: str, data: bytes) -> RecordingSpool:
    spool = RecordingSpool(tmp_path / "spool")
    spool.part_path(call_id).write_bytes(data)
    spool.finish(call_id)
    return spool


async def test_store_down_during_the_call_loses_nothing(tmp_path: Path, moto: Moto) -> None:
    data = os.urandom(300_000)
    spool = _spooled(tmp_path, "CA-down", data)
    store = RecordingStore(
        S3Backend("calls", "rec", client=_client(moto.url)), spool, retry_interval_s=0.05
    )
    # The store is down (nothing listens on its port): the upload fails, the spool keeps it.
    assert await store.upload("CA-down") is False
    assert spool.ready() == ["CA-down"]
    assert await store.exists("CA-down")  # still counts as this call's recording

    moto.start()  # it comes back
    client = _client(moto.url)
    client.create_bucket(Bucket="calls")  # type: ignore[attr-defined]
    store.start()  # the background retry picks it up
    try:
        for _ in range(400):
            if not spool.ready():
                break
            await asyncio.sleep(0.05)  # polling a real server's state, not standing in for it
    finally:
        await store.close()
    assert spool.ready() == []
    got = client.get_object(Bucket="calls", Key="rec/CA-down.wav")  # type: ignore[attr-defined]
    assert got["Body"].read() == data
    assert await store.read_range("CA-down", 1000, 1999) == data[1000:2000]
    assert await store.size("CA-down") == len(data)
    assert await store.delete("CA-down") is True
    assert await store.size("CA-down") is None


async def test_multipart_upload_with_server_side_encryption(tmp_path: Path, moto: Moto) -> None:
    moto.start()
    client = _client(moto.url)
    client.create_bucket(Bucket="calls")  # type: ignore[attr-defined]
    data = os.urandom(11 * 1024 * 1024)  # above the 5 MiB threshold: three parts
    spool = _spooled(tmp_path, "CA-long", data)
    backend = S3Backend(
        "calls", "", client=client, sse="AES256", multipart_threshold=5 * 1024 * 1024
    )
    store = RecordingStore(backend, spool)
    assert await store.upload("CA-long")
    head = client.head_object(Bucket="calls", Key="CA-long.wav")  # type: ignore[attr-defined]
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"]  # a multipart ETag: "<md5>-<parts>"
    assert head["ETag"].strip('"').endswith("-3")
    got = client.get_object(Bucket="calls", Key="CA-long.wav")  # type: ignore[attr-defined]
    assert got["Body"].read() == data


async def test_file_backend_on_the_real_filesystem(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    spool = _spooled(tmp_path, "CA-file", data)
    backend = backend_from_url(f"file://{tmp_path / 'recordings'}")
    assert isinstance(backend, FileBackend)
    store = RecordingStore(backend, spool)
    assert await store.upload("CA-file")
    assert (tmp_path / "recordings" / "CA-file.wav").read_bytes() == data
    assert list((tmp_path / "recordings").iterdir()) == [tmp_path / "recordings" / "CA-file.wav"]
    assert await store.read_range("CA-file", 10, 19) == data[10:20]
    assert await store.delete("CA-file") and not await store.exists("CA-file")
    assert isinstance(backend_from_url(str(tmp_path / "plain")), FileBackend)
    with pytest.raises(ValueError, match="unknown scheme"):
        backend_from_url("ftp://x/y")
    with pytest.raises(ValueError, match="cannot name a recording"):
        spool.part_path("../etc/passwd")


async def test_a_call_recorded_while_s3_is_down_is_uploaded_when_it_returns(
    tmp_path: Path, moto: Moto
) -> None:
    """A whole call (pipeline on the virtual clock in a worker thread) with S3 down: the sealed
    recording waits in the spool, and opens intact once uploaded after the store is back."""
    from voxpipe.frames import EndFrame
    from voxpipe.pipelines import Pipeline, PipelineTask, VirtualClock
    from voxpipe.records.envelope import KeyRing, open_sealed
    from voxpipe.records.recording import CallRecording, recording_aad
    from voxpipe.transports.memory import MemoryTransport
    from voxpipe.transports.params import TransportParams
    from voxpipe.transports.wire import AudioFormat

    phone = AudioFormat("mulaw", 8000)
    ring = KeyRing(os.urandom(32))
    store = RecordingStore(
        S3Backend("calls", "rec", client=_client(moto.url)),
        RecordingSpool(tmp_path / "spool"),
        retry_interval_s=0.05,
    )
    rec = CallRecording("CA-s3down", store, ring=ring)

    async def call() -> None:
        t = MemoryTransport(TransportParams(audio_in=phone, audio_out=phone, vad_enabled=False))
        rec.attach(t.input(), t.output())
        task = PipelineTask(Pipeline([t.input(), rec, t.output()]), params=t.task_params())
        runner = asyncio.get_running_loop().create_task(task.run())
        await task.wait_started()
        await t.play_wire(bytes([0x55]) * 8000 * 2)  # 2 s of caller audio
        await task.queue_frame(EndFrame(reason="test"))
        await runner

    await asyncio.to_thread(VirtualClock().run, call())
    assert store.spool.ready() == ["CA-s3down"]  # kept: the store was down at the call's end
    spooled = store.spool.ready_path("CA-s3down").read_bytes()

    moto.start()
    client = _client(moto.url)
    client.create_bucket(Bucket="calls")  # type: ignore[attr-defined]
    assert await store.flush() == 0
    assert store.spool.ready() == []
    body = client.get_object(Bucket="calls", Key="rec/CA-s3down.wav")["Body"].read()  # type: ignore[attr-defined]
    assert body == spooled
    wav = open_sealed(ring, body, recording_aad("CA-s3down"))
    assert len(wav) == 44 + 2 * 8000 * 4
