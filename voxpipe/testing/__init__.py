"""Test helpers for bot authors and for voxpipe itself: run frames, record and replay calls."""

from voxpipe.testing.harness import RunResult, Sleep, run_frames, run_frames_sync
from voxpipe.testing.recording import (
    FrameRecorder,
    RecordedFrame,
    Recording,
    read_recording,
    replay_frames,
)

__all__ = [
    "FrameRecorder",
    "RecordedFrame",
    "Recording",
    "RunResult",
    "Sleep",
    "read_recording",
    "replay_frames",
    "run_frames",
    "run_frames_sync",
    "run_scenario",
]


def __getattr__(name: str) -> object:
    # Scenarios load bots and settings: imported on first use, not with every test helper.
    if name == "run_scenario":
        from voxpipe.testing.scenario import run_scenario

        return run_scenario
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
