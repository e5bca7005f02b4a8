"""Echo bot: plays back each thing the caller says once they stop speaking. No services needed.

Used by the transport tests and `voxpipe bench calls`; also the smallest example of a bot file:
one async function `bot(call)` returning the pipeline to run.
"""

from __future__ import annotations

from collections import deque

from voxpipe.call import Call
from voxpipe.frames import (
    DTMFFrame,
    EndTaskFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    OutputAudioFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines import Pipeline
from voxpipe.processors.base import FrameProcessor

# The VAD reports speech a little after it began (it waits for enough of it): keep this much
# audio from before the report so the echo starts with the first syllable.
PRE_ROLL_SECS = 0.4
MAX_UTTERANCE_SECS = 30.0


class Echo(FrameProcessor):
    """Buffers the caller's audio between started/stopped speaking and sends it back as bot audio."""

    def __init__(self) -> None:
        super().__init__()
        self._speaking = False
        self._buffer: list[InputAudioFrame] = []
        self._buffered_secs = 0.0
        self._pre_roll: deque[InputAudioFrame] = deque()
        self._pre_roll_secs = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        if kind is InputAudioFrame:
            assert isinstance(frame, InputAudioFrame)
            self._keep(frame)
            return  # consumed: nothing after the echo needs the caller's audio
        if kind is UserStartedSpeakingFrame:
            self._speaking = True
            self._buffer = list(self._pre_roll)
            self._buffered_secs = self._pre_roll_secs
        elif kind is UserStoppedSpeakingFrame and self._speaking:
            self._speaking = False
            await self.push_frame(frame, direction)
            await self._play_back()
            return
        elif kind is DTMFFrame and getattr(frame, "digit", "") == "#":
            # The caller asked to hang up: the bot ends the call (the server hangs up the line).
            await self.push_frame(EndTaskFrame(reason="caller pressed #"), FrameDirection.UPSTREAM)
        await self.push_frame(frame, direction)

    def _keep(self, frame: InputAudioFrame) -> None:
        if self._speaking:
            if self._buffered_secs < MAX_UTTERANCE_SECS:
                self._buffer.append(frame)
                self._buffered_secs += frame.duration
            return
        self._pre_roll.append(frame)
        self._pre_roll_secs += frame.duration
        while self._pre_roll and self._pre_roll_secs - self._pre_roll[0].duration >= PRE_ROLL_SECS:
            self._pre_roll_secs -= self._pre_roll.popleft().duration

    async def _play_back(self) -> None:
        frames, self._buffer = self._buffer, []
        self._buffered_secs = 0.0
        self._pre_roll.clear()
        self._pre_roll_secs = 0.0
        if not frames:
            return
        first = frames[0]
        audio = b"".join(f.audio for f in frames)
        await self.push_frame(
            OutputAudioFrame(
                audio=audio,
                sample_rate=first.sample_rate,
                num_channels=first.num_channels,
                encoding=first.encoding,
            )
        )


async def bot(call: Call) -> Pipeline:
    """The echo bot: transport in -> Echo -> transport out."""
    return Pipeline([call.transport.input(), Echo(), call.transport.output()])
