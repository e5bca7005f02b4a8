"""Frame-stream recordings round-trip frames and times, and replay on the virtual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxpipe.frames import (
    DTMFFrame,
    InputAudioFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    Word,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.testing import FrameRecorder, Sleep, read_recording, replay_frames, run_frames
from voxpipe.testing.recording import RecordingError


async def test_recorded_stream_reads_back_equal_frames_with_equal_times(tmp_path: Path) -> None:
    path = tmp_path / "call.vpf"
    frames = [
        InputAudioFrame(bytes(range(256)) * 2 + b"\x01\x02", 16000),
        Sleep(0.02),
        InputAudioFrame(b"\x00\x01" * 320, 16000),
        Sleep(0.5),
        UserStartedSpeakingFrame(),
        DTMFFrame("5"),
        Sleep(0.25),
        TranscriptionFrame(
            "hello there", confidence=0.91, language="en-US", words=[Word("hello", 0.1, 0.4, 0.99)]
        ),
    ]
    # The recorder reads the call's clock: under run_frames that is the virtual clock.
    from voxpipe.pipelines.clock import VirtualClock

    clock = VirtualClock()
    recorder = FrameRecorder(path, clock=clock, call_id="CA1", metadata={"from": "+441234"})
    await run_frames([FrameProcessor()], frames, clock=clock, observers=[recorder])

    rec = read_recording(path)
    assert rec.header["call_id"] == "CA1" and rec.header["metadata"] == {"from": "+441234"}
    originals = [f for f in frames if not isinstance(f, Sleep)]
    *recorded, end = rec.frames
    assert type(end.frame).__name__ == "EndFrame"  # the harness's end entered the call too
    assert [r.frame for r in recorded] == originals
    assert [r.frame.timestamp for r in recorded] == [f.timestamp for f in originals]
    assert [round(r.t, 9) for r in recorded] == [0.0, 0.02, 0.52, 0.52, 0.77]


def test_replay_feeds_frames_at_their_times(tmp_path: Path) -> None:
    path = tmp_path / "call.vpf"
    from voxpipe.pipelines.clock import VirtualClock
    from voxpipe.testing import run_frames_sync

    clock = VirtualClock()
    src = [DTMFFrame("1"), Sleep(1.5), DTMFFrame("2"), Sleep(30.0), DTMFFrame("3")]
    run_frames_sync(
        [FrameProcessor()], src, clock=clock, observers=[FrameRecorder(path, clock=clock)]
    )
    rec = read_recording(path)

    import asyncio

    from voxpipe.pipelines import Pipeline, PipelineTask

    clock2 = VirtualClock()

    async def replay() -> list[tuple[float, str]]:
        task = PipelineTask(Pipeline([FrameProcessor()]))
        got: list[tuple[float, str]] = []
        task.on_downstream(
            lambda f: got.append((clock2.now(), f.digit)) if isinstance(f, DTMFFrame) else None
        )
        runner = asyncio.get_running_loop().create_task(task.run())
        await asyncio.sleep(0)
        await replay_frames(rec, task)
        await task.stop_when_done()
        await runner
        return got

    got = clock2.run(replay())
    assert got == [(0.0, "1"), (1.5, "2"), (31.5, "3")]


def test_bad_recordings_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.vpf"
    bad.write_text("not json\n")
    with pytest.raises(RecordingError, match="not a voxpipe recording"):
        read_recording(bad)
    bad.write_text('{"format": "voxpipe-frames", "version": 99}\n')
    with pytest.raises(RecordingError, match="version 99"):
        read_recording(bad)
