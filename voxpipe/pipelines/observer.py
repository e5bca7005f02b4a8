"""Observers: see frames crossing processors, and frames entering a call, without changing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from voxpipe.frames import Frame, FrameDirection

if TYPE_CHECKING:
    from voxpipe.processors.base import FrameProcessor


class Observer:
    """Base observer; override ``on_push`` (every hop) and/or ``on_input`` (frames entering a call).

    An observer that does not override ``on_push`` is never called per hop, so it costs
    the hot path nothing; with no observer attached a hop pays one ``is None`` check.
    """

    watches_hops: ClassVar[bool] = False

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.watches_hops = cls.on_push is not Observer.on_push

    def on_push(
        self, src: FrameProcessor, dst: FrameProcessor, frame: Frame, direction: FrameDirection
    ) -> None:
        """A frame is passing from ``src`` to ``dst``."""

    def on_input(self, frame: Frame, direction: FrameDirection) -> None:
        """A frame entered the call from outside (queued to the task or pushed by a transport)."""

    def on_finish(self) -> None:
        """The call is over."""


class CompositeObserver(Observer):
    """Fans one hook out to several observers."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def on_push(
        self, src: FrameProcessor, dst: FrameProcessor, frame: Frame, direction: FrameDirection
    ) -> None:
        for obs in self.observers:
            obs.on_push(src, dst, frame, direction)

    def on_input(self, frame: Frame, direction: FrameDirection) -> None:
        for obs in self.observers:
            obs.on_input(frame, direction)

    def on_finish(self) -> None:
        for obs in self.observers:
            obs.on_finish()


def combine(observers: list[Observer]) -> Observer | None:
    """One observer for a list (None for an empty list)."""
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]
    return CompositeObserver(observers)
