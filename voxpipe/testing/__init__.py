"""Test helpers for bot authors and for voxpipe itself: run frames, whole calls from a WAV,
caller audio from text, record and replay calls."""

from voxpipe.testing.bot_runs import WavCallOutput, run_wav_call
from voxpipe.testing.caller_audio import CallerLine, caller_wav
from voxpipe.testing.harness import RunResult, Sleep, run_frames, run_frames_sync
from voxpipe.testing.recording import (
    FrameRecorder,
    RecordedFrame,
    Recording,
    read_recording,
    replay_frames,
)

__all__ = [
    "CallerLine",
    "FrameRecorder",
    "RecordedFrame",
    "Recording",
    "RunResult",
    "Sleep",
    "WavCallOutput",
    "caller_wav",
    "read_recording",
    "replay_frames",
    "run_frames",
    "run_frames_sync",
    "run_scenario",
    "run_wav_call",
]


def __getattr__(name: str) -> object:
    # Scenarios load bots and settings: imported on first use, not with every test helper.
    if name == "run_scenario":
        from voxpipe.testing.scenario import run_scenario

        return run_scenario
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
