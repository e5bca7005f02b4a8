"""`voxpipe serve --workers N`: N worker processes on one port, each with its own event loop.

Each worker opens its own listening socket on the shared port with ``SO_REUSEPORT``: the kernel
spreads new connections over the workers by a hash of the connection, so calls land evenly and
no process accepts for the others. Workers are started fresh (``spawn``, nothing inherited but
the environment): each loads the bot, its batched VAD and its stores on its own. Each also
listens on a private Unix socket in a run directory only this user can read, where its
siblings ask for its /metrics, /healthz and /readyz (``voxpipe.server.siblings``).

The supervisor forwards SIGTERM/SIGINT to every worker (they drain, see
``voxpipe.server.capacity``), waits for them, and restarts a worker that died on its own, unless
workers keep dying right after they start (then it stops all and fails).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["Supervisor", "default_worker_count", "reuseport_socket", "unix_socket"]

logger = logging.getLogger(__name__)

# A worker that dies this soon after it started, this many times in a row, is not restarted.
EARLY_DEATH_S = 10.0
EARLY_DEATHS_MAX = 3


def default_worker_count(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """One worker per core this process may use: its CPU quota (a container's CPU limit, cgroup
    v2) when it has one, else the cores it may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU limit here
    return max(1, cores)


def reuseport_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (every worker binds its own)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("--workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def unix_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` (a stale one from a dead worker is replaced)."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


class Supervisor:
    """Starts, watches and stops the worker processes of one server."""

    def __init__(
        self,
        count: int,
        target: Callable[..., None],
        args: tuple[Any, ...],
        *,
        stop_timeout_s: float,
    ) -> None:
        self.count = count
        self.target = target  # target(*args, index, run_dir): one worker's main
        self.args = args
        self.stop_timeout_s = stop_timeout_s
        self.run_dir = Path(tempfile.mkdtemp(prefix="voxpipe-workers-"))  # mode 0700
        self._ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, Any] = {}
        self._started_at: dict[int, float] = {}
        self._early_deaths = 0
        self.stopping = False
        self._signals = 0

    def _start(self, index: int) -> None:
        proc = self._ctx.Process(
            target=self.target,
            args=(*self.args, index, str(self.run_dir)),
            name=f"voxpipe-worker-{index}",
            daemon=False,
        )
        proc.start()
        self.procs[index] = proc
        self._started_at[index] = time.monotonic()
        logger.info("worker %d started (pid %d)", index, proc.pid)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._signals += 1
        # First signal: the workers drain. Second: they stop at once (uvicorn's second signal).
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM if sig == signal.SIGTERM else signal.SIGINT)

    def run(self) -> int:
        """Run the workers until a signal stops them; the exit status."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.count):
                self._start(index)
            status = self._watch()
            self._stop_all()
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for path in self.run_dir.glob("*"):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # a worker that could not be killed
                self.run_dir.rmdir()

    def _watch(self) -> int:
        while not self.stopping:
            sentinels = {p.sentinel: i for i, p in self.procs.items()}
            for ready in wait(list(sentinels), timeout=1.0):
                if self.stopping:
                    break
                index = sentinels[ready]
                proc = self.procs[index]
                proc.join()
                lived = time.monotonic() - self._started_at[index]
                logger.error(
                    "worker %d (pid %s) exited with %s after %.1f s: restarting it",
                    index,
                    proc.pid,
                    proc.exitcode,
                    lived,
                )
                self._early_deaths = self._early_deaths + 1 if lived < EARLY_DEATH_S else 0
                if self._early_deaths >= EARLY_DEATHS_MAX:
                    logger.error("workers keep dying at start: stopping the server")
                    self.stopping = True
                    self._on_signal(signal.SIGTERM, None)
                    return 1
                self._start(index)
        return 0

    def _stop_all(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        for index, proc in self.procs.items():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                logger.error(
                    "worker %d did not stop in %.0f s: killing it", index, self.stop_timeout_s
                )
                proc.kill()
                proc.join(5)
