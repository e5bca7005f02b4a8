"""Pipelines, tasks, the runner, observers and clocks.

Names are imported lazily so that ``voxpipe.processors.base`` can use the clock and
logging modules here without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxpipe.pipelines.clock import Clock, RealClock, VirtualClock
    from voxpipe.pipelines.observer import Observer
    from voxpipe.pipelines.parallel import ParallelPipeline
    from voxpipe.pipelines.pipeline import Pipeline
    from voxpipe.pipelines.runner import PipelineRunner
    from voxpipe.pipelines.task import PipelineTask, TaskParams

_WHERE = {
    "Clock": "clock",
    "RealClock": "clock",
    "VirtualClock": "clock",
    "Observer": "observer",
    "ParallelPipeline": "parallel",
    "Pipeline": "pipeline",
    "PipelineRunner": "runner",
    "PipelineTask": "task",
    "TaskParams": "task",
}

__all__ = [
    "Clock",
    "Observer",
    "ParallelPipeline",
    "Pipeline",
    "PipelineRunner",
    "PipelineTask",
    "RealClock",
    "TaskParams",
    "VirtualClock",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'voxpipe.pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(f"voxpipe.pipelines.{module}"), name)
