import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from voxpipe.audio import read_wav, resample_pcm16
from voxpipe.frames import EndFrame, Frame
from voxpipe.pipelines import Observer, Pipeline, PipelineTask, VirtualClock
from voxpipe.processors.base import FrameProcessor
from voxpipe.transports.base import Transport

DATA = Path(__file__).resolve().parents[1] / "data"


@dataclass
class CallLog:
    """Frames that left a call, with their call-clock times."""

    down: list[tuple[float, Frame]] = field(default_factory=list)
    up: list[tuple[float, Frame]] = field(default_factory=list)
    end_reason: str = ""
    end_time: float = 0.0

    def times(self, cls: type, up: bool = False) -> list[float]:
        return [t for t, f in (self.up if up else self.down) if isinstance(f, cls)]

    def frames(self, cls: type, up: bool = False) -> list:
        return [f for _, f in (self.up if up else self.down) if isinstance(f, cls)]


Script = Callable[[PipelineTask], Awaitable[None]]


def run_call(
    transport: Transport,
    middle: list[FrameProcessor],
    script: Script,
    *,
    after: list[FrameProcessor] | None = None,
    send_end: bool = True,
    end_timeout: float = 10.0,
    allow_interruptions: bool = True,
    observers: list[Observer] | None = None,
) -> CallLog:
    """Run input -> middle -> output -> after on a virtual clock while ``script(task)`` drives it."""

    async def main() -> CallLog:
        procs = [transport.input(), *middle, transport.output(), *(after or [])]
        task = PipelineTask(
            Pipeline(procs),
            params=transport.task_params(allow_interruptions=allow_interruptions),
            end_timeout=end_timeout,
            observers=observers or (),
        )
        log = CallLog()
        task.on_downstream(lambda f: log.down.append((task.clock.now(), f)))
        task.on_upstream(lambda f: log.up.append((task.clock.now(), f)))
        runner = asyncio.get_running_loop().create_task(task.run())
        await task.wait_started()
        await script(task)
        if send_end:
            await task.queue_frame(EndFrame(reason="test"))
        await runner
        log.end_reason = task.end_reason
        log.end_time = task.clock.now()
        return log

    return VirtualClock().run(main())


@pytest.fixture(scope="session")
def truth() -> dict:
    return json.loads((DATA / "speech_16k.json").read_text())


@pytest.fixture(scope="session")
def speech_8k_pcm() -> bytes:
    audio = read_wav(DATA / "speech_16k.wav")
    return resample_pcm16(audio.pcm, audio.sample_rate, 8000)


@pytest.fixture
def call() -> Callable[..., CallLog]:
    """``call(transport, middle, script, ...)``: run a call on a virtual clock (see run_call)."""
    return run_call
