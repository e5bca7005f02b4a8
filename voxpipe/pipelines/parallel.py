"""ParallelPipeline: branches that each see every frame, their outputs merged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from voxpipe.frames import EndFrame, Frame, FrameDirection
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.processors.base import FrameProcessor

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM


class _BranchEdge(FrameProcessor):
    """Collects what leaves a branch and hands it to the parallel pipeline's merge."""

    def __init__(self, owner: ParallelPipeline, name: str) -> None:
        super().__init__(name=name)
        self._owner = owner

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self._owner._merge(frame, direction)


class ParallelPipeline(FrameProcessor):
    """Gives every frame to each branch; a frame that several branches pass on leaves once.

    An end frame leaves only when every branch has passed it on, so all branches drain.
    """

    def __init__(self, *branches: Sequence[FrameProcessor], name: str | None = None) -> None:
        super().__init__(name=name)
        if not branches:
            raise ValueError("ParallelPipeline needs at least one branch")
        self._branches: list[Pipeline] = []
        for i, procs in enumerate(branches):
            up = _BranchEdge(self, f"{self.name}.b{i}.up")
            down = _BranchEdge(self, f"{self.name}.b{i}.down")
            branch = Pipeline(list(procs), name=f"{self.name}.b{i}")
            up.link(branch)
            branch.link(down)
            self._branches.append(branch)
        # frame id -> times it has left so far, for frames that entered from outside
        self._in_flight: dict[int, int] = {}

    def processors(self) -> Iterator[FrameProcessor]:
        yield self
        for b in self._branches:
            if b._prev is not None:
                yield b._prev
            yield from b.processors()
            if b._next is not None:
                yield b._next

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        key = frame.id
        self._in_flight[key] = 0
        for branch in self._branches:
            await branch.process_frame(frame, direction)
        if type(frame) is not EndFrame:
            self._in_flight.pop(key, None)

    async def _merge(self, frame: Frame, direction: FrameDirection) -> None:
        seen = self._in_flight.get(frame.id)
        if seen is None:  # made inside a branch: always passes
            await self.push_frame(frame, direction)
            return
        seen += 1
        self._in_flight[frame.id] = seen
        if type(frame) is EndFrame:
            if seen == len(self._branches):
                del self._in_flight[frame.id]
                await self.push_frame(frame, direction)
        elif seen == 1:
            await self.push_frame(frame, direction)
