"""Test helpers: hold a run_frames input list until a condition holds (`Until` + `Gate`), and collect frames mid-pipeline (`Collect`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxpipe.frames import DataFrame, Frame, FrameDirection
from voxpipe.processors.base import FrameProcessor


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; the timeout only guards against a hang."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@dataclass(slots=True)
class Until(DataFrame):
    """In a run_frames input list: hold the next input frames until ``predicate()`` is true."""

    predicate: Callable[[], object]
    timeout: float = 5.0


class Gate(FrameProcessor):
    """First processor of a test pipeline: waits on ``Until`` frames (they go no further)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, Until):
            await wait_until(frame.predicate, frame.timeout)
            return
        await self.push_frame(frame, direction)


class Collect(FrameProcessor):
    """Records every frame it sees downstream while the call runs."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    def of_type(self, cls: type) -> list[Any]:
        return [f for f in self.frames if isinstance(f, cls)]
