"""`voxpipe serve --workers 2` from the outside (issue 15): calls land on both worker processes,
/metrics and /healthz show the whole server, and SIGTERM drains: no new call, live calls go on
(/readyz 503), and those still up at DRAIN_TIMEOUT_S are ended cleanly, their recording closed
by the call's end, before the server exits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import ECHO_BOT, ROOT
from voxpipe.testing.twilio_caller import TwilioCaller

pytestmark = pytest.mark.slow

_CLEAN = (
    "ALLOW_UNSIGNED_WEBHOOKS",
    "TWILIO_AUTH_TOKEN",
    "STREAM_TOKEN_SECRET",
    "VOXPIPE_CONFIG",
    "HOST",
    "PORT",
    "WORKERS",
    "REDIS_URL",
    "MAX_CALLS",
    "MAX_CALLS_PER_WORKER",
    "DRAIN_TIMEOUT_S",
    "METRICS_TOKEN",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A `voxpipe serve` subprocess: its URL, process and stderr lines so far."""

    def __init__(self, url: str, proc: asyncio.subprocess.Process, lines: list[str]) -> None:
        self.url = url
        self.proc = proc
        self.lines = lines


@contextlib.asynccontextmanager
async def serve_workers(
    tmp_path: Path, flags: list[str], env: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    port = _free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    full_env.update(env or {}, PYTHONPATH=str(ROOT), ALLOW_UNSIGNED_WEBHOOKS="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxpipe.cli",
        "serve",
        str(ECHO_BOT),
        "--port",
        str(port),
        *flags,
        cwd=tmp_path,
        env=full_env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode().rstrip("\n"))

    reader = asyncio.create_task(read())
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(90):
            while True:  # readiness is only visible from outside: poll until every worker is up
                if proc.returncode is not None:
                    raise AssertionError("voxpipe serve exited:\n" + "\n".join(lines))
                with contextlib.suppress(httpx.TransportError, ValueError, KeyError):
                    health = (await client.get("/healthz")).json()
                    if all(w.get("pid") for w in health["workers"]):
                        break
                await asyncio.sleep(0.1)
        yield Served(url, proc, lines)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)  # the second one: stop now, do not drain
            async with asyncio.timeout(60):
                await proc.wait()
        await reader


async def test_calls_land_on_both_workers_and_metrics_add_up(
    tmp_path: Path, speech_mulaw: bytes
) -> None:
    n = 16
    env = {"METRICS_TOKEN": "scrape-me"}
    async with serve_workers(tmp_path, ["--workers", "2"], env) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            health = (await http.get("/healthz")).json()
            pids = {str(w["pid"]) for w in health["workers"]}
            assert len(pids) == 2 and str(srv.proc.pid) not in pids, health
            callers = [
                await TwilioCaller.dial(srv.url, audio=speech_mulaw[:8000], http=http)
                for _ in range(n)
            ]
            # Every call is up at once (the echo plays nothing back before the caller pauses).
            logs = await asyncio.gather(*(c.run(hangup_after=1.5, timeout=30) for c in callers))
            seen = {log.worker for log in logs}
            assert seen == pids, f"calls served by {seen}, workers {pids}"
            assert all(log.close_code in (1000, None) for log in logs)
            async with asyncio.timeout(30):
                while (await http.get("/healthz")).json()["active_calls"]:
                    await asyncio.sleep(0.05)  # call ends are seen from outside only
            assert (await http.get("/metrics")).status_code == 401
            scrape = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert scrape.status_code == 200
            text = scrape.text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    started = {s.labels["carrier"]: s.value for s in families["voxpipe_calls_started"].samples}
    assert started == {"twilio": n}, started  # the sum over both workers
    webhooks = {
        (s.labels["route"], s.labels["outcome"]): s.value
        for s in families["voxpipe_webhooks"].samples
    }
    assert webhooks[("twilio", "ok")] == n
    (active,) = families["voxpipe_active_calls"].samples
    assert active.value == 0


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_drains_then_ends_calls_cleanly_at_the_timeout(
    tmp_path: Path, speech_mulaw: bytes, workers: str
) -> None:
    record = tmp_path / "rec"
    flags = ["--workers", workers, "--record", str(record)]
    async with serve_workers(tmp_path, flags, {"DRAIN_TIMEOUT_S": "3"}) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            caller = await TwilioCaller.dial(
                srv.url, audio=speech_mulaw[:8000], http=http, call_sid="CAdrain1"
            )
            call = asyncio.create_task(caller.run(timeout=60))
            async with asyncio.timeout(20):
                while not (await http.get("/healthz")).json()["active_calls"]:
                    await asyncio.sleep(0.05)
            assert (await http.get("/readyz")).status_code == 200
            srv.proc.send_signal(signal.SIGTERM)
            # Draining: unready, new calls answered busy, the live call goes on.
            async with asyncio.timeout(10):
                while (await http.get("/readyz")).status_code != 503:
                    await asyncio.sleep(0.05)
            busy = await http.post(
                "/twilio/voice", data={"CallSid": "CAlate", "From": "+15550100001"}
            )
            assert busy.status_code == 200 and "<Say" in busy.text and "<Stream" not in busy.text
            health = (await http.get("/healthz")).json()
            assert health["active_calls"] == 1 and health["draining"] is True
            log = await call
        async with asyncio.timeout(30):
            assert await srv.proc.wait() == 0  # drained, then a clean exit
    # Ended by the server at DRAIN_TIMEOUT_S (1001 going away), not cut by the shutdown.
    assert (log.close_code, log.close_reason) == (1001, "server draining"), log
    ended = [ln for ln in srv.lines if "call ended: twilio call CAdrain1" in ln]
    assert len(ended) == 1 and "drained after " in ended[0], srv.lines
    (recording,) = record.glob("CAdrain1*.jsonl")
    kinds = [json.loads(line).get("type", "") for line in recording.read_text().splitlines()]
    assert kinds and "EndFrame" in kinds and "CancelFrame" not in kinds, kinds[-5:]


async def test_a_worker_that_dies_is_replaced(tmp_path: Path, speech_mulaw: bytes) -> None:
    async with serve_workers(tmp_path, ["--workers", "2"]) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            before = {w["worker"]: w["pid"] for w in (await http.get("/healthz")).json()["workers"]}
            os.kill(before[1], signal.SIGKILL)  # a worker this test's server started
            async with asyncio.timeout(60):
                while True:
                    with contextlib.suppress(httpx.TransportError, ValueError, KeyError):
                        workers = (await http.get("/healthz")).json()["workers"]
                        after = {w["worker"]: w.get("pid") for w in workers}
                        if after.get(1) and after[1] != before[1]:
                            break
                    await asyncio.sleep(0.1)
            assert after[0] == before[0]  # the other worker was left alone
            # The new worker serves calls like the first.
            logs = []
            for _ in range(12):
                caller = await TwilioCaller.dial(srv.url, audio=speech_mulaw[:4000], http=http)
                logs.append(await caller.run(hangup_after=0.3, timeout=20))
            assert {log.worker for log in logs} == {str(after[0]), str(after[1])}
    assert any("worker 1" in ln and "restarting it" in ln for ln in srv.lines), srv.lines
