"""ParallelPipeline: branches that each see every frame, their outputs merged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from voxpipe.frames import EndFrame, Frame, FrameDirection
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.processors.base import FrameProcessor, TaskContext

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM


class _BranchEdge(FrameProcessor):
    """Collects what leaves a branch and hands it to the parallel pipeline's merge."""

    def __init__(self, owner: ParallelPipeline, name: str) -> None:
        super().__init__(name=name)
        self._owner: ParallelPipeline | None = owner

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._owner is not None:  # else the call is over
            await self._owner._merge(frame, direction)

    def dispose(self) -> None:
        """Also let go of the parallel pipeline (which holds this edge)."""
        super().dispose()
        self._owner = None


class ParallelPipeline(FrameProcessor):
    """Gives every frame to each branch; a frame that several branches pass on leaves once.

    An end frame leaves only when every branch has passed it on, so all branches drain.
    """

    def __init__(self, *branches: Sequence[FrameProcessor], name: str | None = None) -> None:
        super().__init__(name=name)
        if not branches:
            raise ValueError("ParallelPipeline needs at least one branch")
        self._branches: list[Pipeline] = []
        # Kept apart from the links, which dispose() cuts when the call is over.
        self._edges: list[tuple[_BranchEdge, Pipeline, _BranchEdge]] = []
        for i, procs in enumerate(branches):
            up = _BranchEdge(self, f"{self.name}.b{i}.up")
            down = _BranchEdge(self, f"{self.name}.b{i}.down")
            branch = Pipeline(list(procs), name=f"{self.name}.b{i}")
            self._branches.append(branch)
            self._edges.append((up, branch, down))
        self._link()
        # frame id -> times it has left so far, for frames that entered from outside
        self._in_flight: dict[int, int] = {}

    def _link(self) -> None:
        # Made here and at each setup: the end of a run (dispose) cuts them.
        for up, branch, down in self._edges:
            up._owner = down._owner = self
            up.link(branch)
            branch.link(down)

    def setup(self, ctx: TaskContext) -> None:
        super().setup(ctx)
        self._link()

    def processors(self) -> Iterator[FrameProcessor]:
        yield self
        for up, branch, down in self._edges:
            yield up
            yield from branch.processors()
            yield down

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
