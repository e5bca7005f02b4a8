"""01 echo: the smallest bot with speech. It says back what the caller said.

    voxpipe serve bots/examples/01_echo.py       # call it (browser or phone)
    voxpipe test bots/examples/01_echo.yaml      # its scenario test

A bot file defines ``async def bot(call)`` returning the pipeline for one call. Frames flow
left to right: the caller's audio in, speech-to-text, our processor, text-to-speech, audio out.
With no provider keys set, the STT and TTS are the offline ones (PocketSphinx, espeak-ng).
"""

from __future__ import annotations

from voxpipe.call import Call
from voxpipe.frames import Frame, FrameDirection, TranscriptionFrame, TTSSpeakFrame
from voxpipe.pipelines import Pipeline
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings


class SayItBack(FrameProcessor):
    """Turns each final transcript of the caller into a line for the TTS."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            await self.push_frame(TTSSpeakFrame(f"You said: {frame.text}"))
            return  # consumed: nothing after us needs the transcript
        await self.push_frame(frame, direction)  # every other frame passes on


async def bot(call: Call) -> Pipeline:
    """transport in -> STT -> SayItBack -> TTS -> transport out."""
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row),
            SayItBack(),
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
        ]
    )
