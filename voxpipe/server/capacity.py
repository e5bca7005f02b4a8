"""One worker's load, readiness and drain (issue 15).

A worker is ready while it takes calls: not draining and below its capacity
(``MAX_CALLS_PER_WORKER`` / ``MAX_CALLS``). On SIGTERM it drains: the call limiter refuses new
calls (voice webhooks are sent elsewhere or answered busy, streams and offers get 503),
``/readyz`` answers 503 so a load balancer stops sending it traffic, live calls go on for up to
``DRAIN_TIMEOUT_S``, and those still up then are ended the way a hang-up ends them, so their
transcripts and recordings are written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxpipe.server.limits import CallLimiter
from voxpipe.server.sessions import SessionRegistry

__all__ = ["DRAIN_REASON", "Capacity", "WorkerIdentity", "effective_capacity"]

logger = logging.getLogger(__name__)

DRAIN_REASON = "server draining"
# Set by the `voxpipe serve --workers N` supervisor for each worker process it starts.
INDEX_ENV = "VOXPIPE_WORKER_INDEX"
COUNT_ENV = "VOXPIPE_WORKER_COUNT"
RUN_DIR_ENV = "VOXPIPE_WORKER_DIR"


def effective_capacity(max_calls: int, max_calls_per_worker: int) -> int:
    """A worker's call capacity: the smaller of the two settings that are set (0: no limit)."""
    given = [n for n in (max_calls, max_calls_per_worker) if n > 0]
    return min(given) if given else 0


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Which worker of its server this process is (index 0 of 1 outside a supervisor)."""

    index: int = 0
    count: int = 1
    pid: int = 0
    run_dir: Path | None = None  # where the workers' private sockets are

    @classmethod
    def from_env(cls) -> WorkerIdentity:
        """This process's identity from the variables the supervisor sets."""
        run_dir = os.environ.get(RUN_DIR_ENV)
        return cls(
            index=int(os.environ.get(INDEX_ENV, "0")),
            count=int(os.environ.get(COUNT_ENV, "1")),
            pid=os.getpid(),
            run_dir=Path(run_dir) if run_dir else None,
        )

    def socket_path(self, index: int) -> Path | None:
        """The private Unix socket of worker ``index`` (None outside a supervisor)."""
        if self.run_dir is None:
            return None
        return self.run_dir / f"worker-{index}.sock"


class Capacity:
    """This worker's load, readiness and drain."""

    def __init__(
        self,
        limiter: CallLimiter,
        registry: SessionRegistry,
        identity: WorkerIdentity,
        *,
        drain_timeout_s: float,
    ) -> None:
        self.limiter = limiter
        self.registry = registry
        self.identity = identity
        self.drain_timeout_s = drain_timeout_s
        self.drain_started: float | None = None  # wall time
        self.drained_by_force = 0  # calls ended at the drain timeout
        self.on_drain: Callable[[], Awaitable[object]] | None = None  # e.g. the registry publish

    @property
    def draining(self) -> bool:
        return self.limiter.draining

    def ready(self) -> tuple[bool, str]:
        """(ready, why not): unready while draining or full."""
        if self.limiter.draining:
            return False, "draining"
        if self.limiter.full:
            return False, "full"
        return True, "ready"

    def load(self) -> dict[str, Any]:
        """This worker's load as /healthz and the worker registry report it."""
        ready, why = self.ready()
        return {
            "worker": self.identity.index,
            "pid": self.identity.pid or os.getpid(),
            "active_calls": len(self.registry),
            "held_slots": self.limiter.total,  # calls plus WebRTC offers not yet connected
            "capacity": self.limiter.max_calls,
            "draining": self.limiter.draining,
            "ready": ready,
            "state": why,
        }

    async def drain(self) -> int:
        """Take no new call, wait up to DRAIN_TIMEOUT_S for live calls, end the rest.

        Returns how many calls were still up at the timeout (and so ended by the server).
        """
        self.limiter.draining = True
        self.drain_started = time.time()
        if self.on_drain is not None:
            await self.on_drain()  # other servers stop sending calls here now, not in a heartbeat
        live = len(self.registry)
        logger.warning(
            "draining: taking no new call; %d live call(s) get up to %.0f s to finish",
            live,
            self.drain_timeout_s,
        )
        emptied = await self.registry.wait_empty(self.drain_timeout_s)
        left = 0 if emptied else len(self.registry)
        if left:
            logger.warning("drain timeout: ending %d call(s) still up", left)
            self.drained_by_force = left
            await self.registry.close_all(DRAIN_REASON)
            # The calls end as on a hang-up (the bot's goodbye path, transcripts written).
            await self.registry.wait_empty(30.0)
        logger.warning("drained: no live call left")
        return left
