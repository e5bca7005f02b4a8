"""Backoff and OutageTracker: jittered, capped delays; one outage's reports and grace."""

from __future__ import annotations

import random

import pytest

from voxpipe.frames import EndTaskFrame, ErrorFrame, FrameDirection, ProviderOutageFrame
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.outage import Backoff, OutageTracker
from voxpipe.testing import Sleep, run_frames

UP = FrameDirection.UPSTREAM


def test_backoff_grows_exponentially_to_its_cap_with_jitter_below_each_ceiling() -> None:
    b = Backoff(base_s=0.25, cap_s=2.0, jitter=0.5, rng=random.Random(7))
    for attempt, ceiling in enumerate([0.25, 0.5, 1.0, 2.0, 2.0, 2.0]):
        d = b.delay(attempt)
        assert ceiling * 0.5 <= d <= ceiling
    # Jitter: two calls' schedules differ (they do not retry in step).
    one = [Backoff(rng=random.Random(1)).delay(n) for n in range(5)]
    two = [Backoff(rng=random.Random(2)).delay(n) for n in range(5)]
    assert one != two
    assert Backoff(jitter=0.0).delay(3) == 2.0  # no jitter: the ceiling
    assert Backoff(base_s=1.0, cap_s=5.0).delay(10_000) <= 5.0  # no overflow


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


class _Flaky(FrameProcessor):
    """Loses its provider at start; reports at 0.3 s, recovers or gives up as told."""

    def __init__(self, recover_at: float | None, grace_s: float) -> None:
        super().__init__()
        self.tracker = OutageTracker(self, service="stt", provider="acme", grace_s=grace_s)
        self.recover_at = recover_at

    async def on_start(self, frame: object) -> None:
        self.create_task(self._run(), interruptible=False)

    async def _run(self) -> None:
        self.tracker.lost()
        await self.clock.sleep(0.3)
        await self.tracker.failed("refused")
        await self.tracker.failed("refused again")  # reported once
        while not self.tracker.expired:
            await self.clock.sleep(0.5)
            if self.recover_at is not None and self.clock.now() >= self.recover_at:
                await self.tracker.recovered()
                return
        await self.tracker.give_up("still refused")


async def test_an_outage_that_ends_within_the_grace_reports_down_then_up() -> None:
    p = _Flaky(recover_at=2.0, grace_s=5.0)
    r = await run_frames([p], [Sleep(3.0)])
    reports = r.of_type(ProviderOutageFrame, UP)
    assert [(f.state, f.provider, f.service) for f in reports] == [
        ("down", "acme", "stt"),
        ("up", "acme", "stt"),
    ]
    assert reports[1].duration_s == pytest.approx(2.3)
    assert not r.of_type(EndTaskFrame, UP) and p.tracker.outages == 1


async def test_an_outage_past_the_grace_gives_up_and_asks_for_a_graceful_end() -> None:
    p = _Flaky(recover_at=None, grace_s=2.0)
    r = await run_frames([p], [Sleep(5.0)], send_end=False)
    reports = r.of_type(ProviderOutageFrame, UP)
    assert [f.state for f in reports] == ["down", "gave_up"]
    assert reports[-1].duration_s >= 2.0
    assert r.of_type(EndTaskFrame, UP) and r.end_reason == "acme unreachable"
    errors = r.of_type(ErrorFrame, UP)
    assert errors and not errors[-1].fatal and "still refused" in errors[-1].error
