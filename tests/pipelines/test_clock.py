"""The virtual clock: deterministic, and much faster than real time."""

from __future__ import annotations

import asyncio
import time

from voxpipe.frames import Frame, FrameDirection, InputAudioFrame
from voxpipe.pipelines.clock import VirtualClock
from voxpipe.processors.base import FrameProcessor
from voxpipe.testing import run_frames

FRAME_20MS = b"\x00\x00" * 320


def test_virtual_clock_jumps_to_timers_in_order() -> None:
    clock = VirtualClock()
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        order.append((name, clock.now()))

    async def main() -> None:
        await asyncio.gather(sleeper("b", 2.0), sleeper("a", 1.0), sleeper("c", 3600.0))

    t0 = time.perf_counter()
    clock.run(main())
    assert order == [("a", 1.0), ("b", 2.0), ("c", 3600.0)]
    assert time.perf_counter() - t0 < 5.0


def test_timeouts_fire_on_virtual_time() -> None:
    clock = VirtualClock()

    async def main() -> float:
        try:
            async with asyncio.timeout(0.8):
                await asyncio.Event().wait()
        except TimeoutError:
            return clock.now()
        return -1.0

    assert clock.run(main()) == 0.8


async def test_an_hour_of_20ms_frames_runs_in_seconds() -> None:
    """A paced source feeds 180,000 frames of 20 ms; the call's clock reaches one hour."""

    class Counter(FrameProcessor):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.last_ts = 0.0

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, InputAudioFrame):
                self.count += 1
                self.last_ts = frame.timestamp
            await self.push_frame(frame, direction)

    class PacedSource(FrameProcessor):
        async def on_start(self, frame: Frame) -> None:
            self.create_task(self._feed(), interruptible=False)

        async def _feed(self) -> None:
            t0 = self.clock.now()
            for i in range(1, 180_001):
                await self.clock.sleep_until(t0 + i * 0.02)
                await self.push_frame(InputAudioFrame(FRAME_20MS, 16000))
            await self.push_frame(_end())

    def _end() -> Frame:
        from voxpipe.frames import EndFrame

        return EndFrame()

    counter = Counter()
    wall0 = time.perf_counter()
    r = await run_frames([PacedSource(), counter], [], send_end=False)
    wall = time.perf_counter() - wall0
    assert counter.count == 180_000
    assert abs(counter.last_ts - 3600.0) < 1e-6
    assert abs(r.downstream_times[-1] - 3600.0) < 1e-6
    # "in seconds": generous bound for a loaded 2-core CI machine; typically ~3 s.
    assert wall < 60.0, f"an hour of simulated call took {wall:.1f}s"
