"""`voxpipe serve` logging, from the outside: LOG_LEVEL and --log-level (the flag wins), one line
per call start and end at INFO (the default), LOG_FORMAT=json lines that parse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import ECHO_BOT, ROOT
from voxpipe.logs import JsonFormatter
from voxpipe.pipelines.logs import CallIdFilter
from voxpipe.testing.twilio_caller import TwilioCaller

pytestmark = pytest.mark.slow

# Settings the test's environment might carry that would change what the server does.
_CLEAN = (
    "ALLOW_UNSIGNED_WEBHOOKS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TWILIO_AUTH_TOKEN",
    "VOXPIPE_CONFIG",
    "HOST",
    "PORT",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def voxpipe_serve(
    tmp_path: Path, env: dict[str, str], flags: list[str]
) -> AsyncIterator[tuple[str, list[str]]]:
    """`voxpipe [flags] serve bots/echo.py` in a subprocess; yields (url, stderr lines so far)."""
    port = _free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    # The simulated caller dials unsigned, on loopback: the development switch.
    full_env.update(env, PYTHONPATH=str(ROOT), ALLOW_UNSIGNED_WEBHOOKS="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxpipe.cli",
        *flags,
        "serve",
        str(ECHO_BOT),
        "--port",
        str(port),
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
        async with httpx.AsyncClient(base_url=url) as client:
            async with asyncio.timeout(60):
                while True:  # the server's readiness is only visible from outside: poll
                    if proc.returncode is not None:
                        raise AssertionError("voxpipe serve exited:\n" + "\n".join(lines))
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
        yield url, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                await proc.wait()
        await reader


async def _one_call(url: str, speech: bytes) -> None:
    caller = await TwilioCaller.dial(url, audio=speech[: 3 * 8000], call_sid="CAlogs1")
    await caller.run(hangup_after=1.0, timeout=20)
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(20):
        while (await client.get("/healthz")).json()["active_calls"]:
            await asyncio.sleep(0.05)  # the end of the call is seen from outside only


async def test_default_info_shows_one_line_per_call_start_and_end(
    tmp_path: Path, speech_mulaw: bytes
) -> None:
    async with voxpipe_serve(tmp_path, {}, []) as (url, lines):
        await _one_call(url, speech_mulaw)
    started = [ln for ln in lines if "call started: twilio call CAlogs1" in ln]
    ended = [ln for ln in lines if "call ended: twilio call CAlogs1" in ln]
    assert len(started) == 1 and len(ended) == 1, "\n".join(lines)
    assert " INFO [CAlogs1] voxpipe.calls: " in started[0]
    assert "caller-hung-up after " in ended[0]


async def test_the_flag_wins_over_log_level_and_json_lines_parse(
    tmp_path: Path, speech_mulaw: bytes
) -> None:
    env = {"LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
    async with voxpipe_serve(tmp_path, env, ["--log-level", "info"]) as (url, lines):
        await _one_call(url, speech_mulaw)
    records = [json.loads(ln) for ln in lines if ln.strip()]  # every line is one JSON object
    assert records, lines
    for r in records:
        assert {"time", "level", "logger", "message", "call_id"} <= r.keys(), r
    (end,) = [r for r in records if r.get("event") == "call_end"]
    assert end["logger"] == "voxpipe.calls" and end["level"] == "INFO"
    assert end["call_id"] == "CAlogs1" and end["carrier"] == "twilio"
    assert end["outcome"] == "caller-hung-up" and 0.5 < end["duration_s"] < 30
    (start,) = [r for r in records if r.get("event") == "call_start"]
    assert start["client"] == "127.0.0.1"


async def test_log_level_warning_from_the_flag_hides_call_lines(
    tmp_path: Path, speech_mulaw: bytes
) -> None:
    env = {"LOG_LEVEL": "INFO"}
    async with voxpipe_serve(tmp_path, env, ["--log-level", "WARNING"]) as (url, lines):
        await _one_call(url, speech_mulaw)
    assert not [ln for ln in lines if "call started" in ln or "call ended" in ln], lines


def test_json_formatter_keeps_extra_fields_and_never_loses_a_line() -> None:
    record = logging.LogRecord("voxpipe.security", logging.WARNING, "f", 1, "x %s", ("y",), None)
    record.client = "10.0.0.9"
    record.event = "webrtc_token_refused"
    record.path = Path("/tmp/x")  # not JSON: shown as text
    CallIdFilter().filter(record)
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "x y" and out["level"] == "WARNING" and out["call_id"] == "-"
    assert out["client"] == "10.0.0.9" and out["event"] == "webrtc_token_refused"
    assert out["path"] == "/tmp/x" and out["time"].endswith("Z")
