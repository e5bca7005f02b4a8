"""Provider outages as a provider service sees them: jittered backoff and one outage's life.

A service that loses its provider (a refused connection, a dropped socket, failed requests)
keeps the call going: it retries after ``Backoff`` delays (exponential, jittered so that the
calls of a worker do not retry in step, capped so that a recovery is noticed soon), and an
``OutageTracker`` reports the outage in ``ProviderOutageFrame``s (``down``, then ``up`` or,
after ``grace_s``, ``gave_up``). On giving up the tracker asks the task to end the call
gracefully (``EndTaskFrame``): whatever was queued to be said (an outage policy's goodbye)
is said first, and the end goes through the call's ordinary end path (transcript, hang-up).

Delays are waited on the call's clock, so a virtual clock runs an outage in no wall time.
The backoff is a few lines of arithmetic rather than ``tenacity``/``backoff``: both measure
time with ``time.monotonic`` and sleep on their own, where this must use the call's clock.
"""

from __future__ import annotations

import random
import weakref

from voxpipe.frames import EndTaskFrame, FrameDirection, ProviderOutageFrame
from voxpipe.processors.base import FrameProcessor

__all__ = ["DEFAULT_OUTAGE_GRACE_S", "Backoff", "OutageTracker"]

DEFAULT_OUTAGE_GRACE_S = 30.0


class Backoff:
    """Exponential backoff with jitter: attempt n waits ``min(cap, base * 2**n)`` scaled by a
    random factor in ``[1 - jitter, 1]`` ("equal jitter": never a burst of instant retries)."""

    def __init__(
        self,
        *,
        base_s: float = 0.25,
        cap_s: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if base_s < 0 or cap_s < 0 or not 0.0 <= jitter <= 1.0:
            raise ValueError(
                f"backoff needs base_s >= 0, cap_s >= 0 and jitter in 0..1; "
                f"got {base_s}, {cap_s}, {jitter}"
            )
        self.base_s = base_s
        self.cap_s = cap_s
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap_s, self.base_s * (2.0 ** min(max(attempt, 0), 30)))
        return ceiling * (1.0 - self.jitter * self._rng.random())


class OutageTracker:
    """One provider's outage, for one service in one call: reports it and keeps its grace.

    ``lost()`` marks when the provider stopped working (a dropped socket that may come back at
    once); ``failed(reason)`` confirms an outage (reported ``down`` once); ``recovered()``
    reports ``up`` with its duration; ``expired`` says the grace has run out and
    ``give_up(reason)`` reports ``gave_up`` and asks for the call's end.
    """

    def __init__(
        self,
        processor: FrameProcessor,
        *,
        service: str,
        provider: str,
        grace_s: float = DEFAULT_OUTAGE_GRACE_S,
        direction: FrameDirection = FrameDirection.UPSTREAM,
    ) -> None:
        if grace_s <= 0:
            raise ValueError(f"the outage grace must be > 0 seconds, got {grace_s}")
        # Weak: the processor holds this tracker, and a cycle would outlive the call.
        self._proc: FrameProcessor = weakref.proxy(processor)
        self.service = service
        self.provider = provider
        self.grace_s = grace_s
        self.direction = direction
        self.since: float | None = None  # when the provider stopped working
        self.reported = False  # ``down`` went out for this outage
        self.gave_up = False
        self.outages = 0  # outages reported in this call

    @property
    def down(self) -> bool:
        return self.since is not None

    @property
    def elapsed(self) -> float:
        """Seconds since the provider stopped working (0 when it works)."""
        return 0.0 if self.since is None else self._proc.clock.now() - self.since

    @property
    def expired(self) -> bool:
        return self.since is not None and self.elapsed >= self.grace_s

    def lost(self) -> None:
        """The provider stopped working just now (not yet an outage: a retry may fix it)."""
        if self.since is None:
            self.since = self._proc.clock.now()

    async def failed(self, reason: str) -> None:
        """A retry failed too: this is an outage; report it once."""
        self.lost()
        if not self.reported and not self.gave_up:
            self.reported = True
            self.outages += 1
            self._proc.logger.warning(
                "%s (%s) unreachable: %s; retrying for up to %.0f s",
                self.provider,
                self.service,
                reason,
                self.grace_s,
            )
            await self._push("down", 0.0, reason)

    async def recovered(self) -> None:
        """The provider works again."""
        if self.since is None:
            return
        duration = self.elapsed
        reported = self.reported
        self.since = None
        self.reported = False
        if reported:
            self._proc.logger.warning(
                "%s (%s) reachable again after %.1f s", self.provider, self.service, duration
            )
            await self._push("up", duration, "")

    async def give_up(self, reason: str) -> None:
        """Down longer than the grace: report it and ask the task to end the call gracefully."""
        if self.gave_up:
            return
        if not self.reported:
            await self.failed(reason)
        self.gave_up = True
        duration = self.elapsed
        self._proc.logger.error(
            "%s (%s) unreachable for %.1f s (grace %.0f s): ending the call. %s",
            self.provider,
            self.service,
            duration,
            self.grace_s,
            reason,
        )
        await self._push("gave_up", duration, reason)
        await self._proc.push_error(f"{self._proc.name}: {reason}")
        await self._proc.push_frame(
            EndTaskFrame(reason=f"{self.provider} unreachable"), FrameDirection.UPSTREAM
        )

    async def _push(self, state: str, duration: float, reason: str) -> None:
        frame = ProviderOutageFrame(
            self.service, self.provider, state, duration_s=duration, reason=reason
        )
        await self._proc.push_frame(frame, self.direction)
