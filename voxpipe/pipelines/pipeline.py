"""Pipeline: a linear chain of processors that is itself a processor, so pipelines nest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from voxpipe.frames import Frame, FrameDirection
from voxpipe.processors.base import FrameProcessor, TaskContext

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM


class _Entry(FrameProcessor):
    """Head of a pipeline: frames leaving the chain upstream exit through the owner."""

    def __init__(self, owner: FrameProcessor) -> None:
        super().__init__(name=f"{owner.name}.entry")
        self._owner: FrameProcessor | None = owner

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._owner is not None:  # else the call is over
            await self._owner.push_frame(frame, direction)

    def dispose(self) -> None:
        """Also let go of the pipeline (which holds this end)."""
        super().dispose()
        self._owner = None


class _Exit(FrameProcessor):
    """Tail of a pipeline: frames leaving the chain downstream exit through the owner."""

    def __init__(self, owner: FrameProcessor) -> None:
        super().__init__(name=f"{owner.name}.exit")
        self._owner: FrameProcessor | None = owner

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._owner is not None:  # else the call is over
            await self._owner.push_frame(frame, direction)

    def dispose(self) -> None:
        """Also let go of the pipeline (which holds this end)."""
        super().dispose()
        self._owner = None


class Pipeline(FrameProcessor):
    """Runs frames through ``processors`` in order downstream, and in reverse upstream."""

    def __init__(self, processors: Sequence[FrameProcessor], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._processors = list(processors)
        self._entry = _Entry(self)
        self._exit = _Exit(self)
        self._link()

    def _link(self) -> None:
        # Made here and at each setup: the end of a run (dispose) cuts them, and a pipeline
        # may run again (tests run the same processors in several tasks).
        self._entry._owner = self
        self._exit._owner = self
        chain: list[FrameProcessor] = [self._entry, *self._processors, self._exit]
        for a, b in zip(chain, chain[1:], strict=False):
            a.link(b)

    @property
    def processors_list(self) -> list[FrameProcessor]:
        return list(self._processors)

    def processors(self) -> Iterator[FrameProcessor]:
        yield self
        yield self._entry
        for p in self._processors:
            yield from p.processors()
        yield self._exit

    def setup(self, ctx: TaskContext) -> None:
        super().setup(ctx)
        self._link()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWNSTREAM:
            await self._entry.push_frame(frame, DOWNSTREAM)
        else:
            await self._exit.push_frame(frame, UPSTREAM)
