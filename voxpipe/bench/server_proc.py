"""The server side of the call benches: a bot served in its own process, its CPU and memory.

Shared by `voxpipe bench calls`, `leak` and `soak` (and `calls --bot`): ``start_server`` runs
``python -m voxpipe.bench.server_proc --serve BOT`` (one worker on an ephemeral loopback port,
tuned as ``voxpipe serve`` tunes its workers), ``start_workers`` runs ``voxpipe serve --workers
N``; ``server_processes``, ``cpu_s`` and ``rss`` read what they use; ``caller_audio`` is the
voice every simulated caller speaks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_BOT",
    "ROOT",
    "SPEECH",
    "caller_audio",
    "cpu_s",
    "exit_with_parent",
    "rss",
    "serve",
    "server_processes",
    "start_server",
    "start_workers",
]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BOT = ROOT / "bots" / "echo.py"
SPEECH = ROOT / "tests" / "data" / "speech_16k.wav"


def caller_audio(speech: Path | None = None) -> tuple[bytes, str]:
    """The caller's voice as 8 kHz mu-law, and where it came from: "recording" or "synthetic"."""
    from voxpipe.testing.twilio_caller import read_caller_wav

    path = SPEECH if speech is None else speech
    if path.is_file():
        return read_caller_wav(path), "recording"
    # Installed without the test data: a synthetic "voice" (bursts of a warbling tone). The
    # VAD hears it differently from speech, so the report says it was used.
    import numpy as np

    from voxpipe.audio import pcm16_to_mulaw

    t = np.arange(8000 * 9) / 8000
    voiced = (np.sin(2 * np.pi * 3 * t) > -0.2).astype(float)
    wave = 8000 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 5 * t)) * t) * voiced
    return pcm16_to_mulaw(wave.astype("<i2").tobytes()), "synthetic"


def start_server(bot: str) -> tuple[subprocess.Popen[str], int]:
    """The bot served by one process on an ephemeral loopback port: (process, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxpipe.bench.server_proc", "--serve", bot],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints its port once it listens
    try:
        port = int(json.loads(line)["port"])
    except (ValueError, KeyError, TypeError):
        proc.kill()
        raise RuntimeError(f"the bench server did not start (said {line!r})") from None
    return proc, port


def start_workers(bot: str, workers: int) -> tuple[subprocess.Popen[str], int]:
    """`voxpipe serve BOT --workers N` on a free loopback port, once every worker answers."""
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {
        **os.environ,
        "ALLOW_UNSIGNED_WEBHOOKS": "1",  # the simulated callers dial unsigned, on loopback
        "MAX_CALLS": "0",  # no call cap: the bench finds out what the workers carry
        "MAX_CALLS_PER_WORKER": "0",
        "LOG_LEVEL": "ERROR",
        "HOST": "127.0.0.1",
    }
    cmd = [sys.executable, "-m", "voxpipe.cli", "serve", bot, "--workers", str(workers)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], cwd=str(ROOT), env=env, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voxpipe serve --workers {workers} exited with {proc.returncode}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
            if len(health["workers"]) == workers and all(w.get("pid") for w in health["workers"]):
                return proc, port
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)  # the workers' start is seen from outside only
    proc.kill()
    raise RuntimeError(f"voxpipe serve --workers {workers} did not start in 90 s")


def server_processes(pid: int, workers: int) -> list[Any]:
    """The processes that serve calls: the server, or the supervisor's worker processes."""
    import psutil

    proc = psutil.Process(pid)
    return [proc] if workers == 1 else list(proc.children())


def cpu_s(procs: list[Any]) -> float:
    """CPU seconds (user + system) the processes used so far."""
    return float(sum(t.user + t.system for t in (p.cpu_times() for p in procs)))


def rss(procs: list[Any]) -> int:
    """Resident memory of the processes, in bytes."""
    return sum(int(p.memory_info().rss) for p in procs)


def exit_with_parent() -> None:
    """End this server when the bench that started it is gone (killed, crashed)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def serve(bot: str) -> None:
    """The server side: the bot on 127.0.0.1, an ephemeral port printed as JSON on stdout."""
    import socket

    import uvicorn

    from voxpipe.config.settings import VoxpipeSettings
    from voxpipe.pipelines.logs import configure_logging
    from voxpipe.server.app import create_app
    from voxpipe.server.run import limit_native_threads, tune_gc, uvicorn_config

    configure_logging("ERROR")
    exit_with_parent()
    # Simulated callers dial unsigned, on loopback: the development switch (issue 18).
    # No per-worker call cap: the bench finds out how many calls a worker can carry.
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, allow_unsigned_webhooks=True, max_calls=0
    )
    app = create_app(bot, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(app, settings, host="127.0.0.1", port=sock.getsockname()[1])
    config.backlog = 1024
    tune_gc()
    limit_native_threads()
    # Listening before the port is announced: a caller that dials while the app still starts
    # waits in the backlog instead of being refused.
    sock.listen(config.backlog)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bench server side (internal)")
    parser.add_argument("--serve", required=True, help="bot file to serve")
    serve(parser.parse_args().serve)
