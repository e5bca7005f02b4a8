"""SilenceArtifactFilter: one short word right after the bot stopped is dropped (virtual clock)."""

from __future__ import annotations

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.filters import SilenceArtifactFilter
from voxpipe.testing import RunResult, Sleep, run_frames

UP = FrameDirection.UPSTREAM


def finals(r: RunResult) -> list[str]:
    return [
        f.text
        for f in r.of_type(TranscriptionFrame)
        if not isinstance(f, InterimTranscriptionFrame)
    ]


async def test_one_short_word_within_the_window_is_dropped() -> None:
    flt = SilenceArtifactFilter(window_s=0.5)
    r = await run_frames(
        [flt],
        [
            BotStartedSpeakingFrame(),
            BotStoppedSpeakingFrame(),
            Sleep(0.2),
            TranscriptionFrame("Yeah."),
            TranscriptionFrame("Mm-hmm."),
            Sleep(0.25),
            TranscriptionFrame("Yes, book it."),  # more than one word: a real answer
            Sleep(0.1),  # now 0.55 s after the bot stopped
            TranscriptionFrame("Yeah."),
        ],
    )
    assert finals(r) == ["Yes, book it.", "Yeah."]
    assert flt.dropped == 2


async def test_interims_pass_and_the_bot_speaking_again_resets_the_window() -> None:
    r = await run_frames(
        [SilenceArtifactFilter(window_s=0.5)],
        [
            BotStoppedSpeakingFrame(),
            InterimTranscriptionFrame("Yeah"),
            BotStartedSpeakingFrame(),
            TranscriptionFrame("Okay."),
        ],
    )
    assert [f.text for f in r.of_type(InterimTranscriptionFrame)] == ["Yeah"]
    assert finals(r) == ["Okay."]


async def test_nothing_is_dropped_before_the_bot_has_spoken() -> None:
    r = await run_frames([SilenceArtifactFilter(window_s=0.5)], [TranscriptionFrame("Hello.")])
    assert finals(r) == ["Hello."]


async def test_word_list_keep_list_and_length_are_configurable() -> None:
    r = await run_frames(
        [SilenceArtifactFilter(window_s=0.5, words=["yeah", "mm-hmm"])],
        [BotStoppedSpeakingFrame(), TranscriptionFrame("Yeah!"), TranscriptionFrame("Two.")],
    )
    assert finals(r) == ["Two."]
    r = await run_frames(
        [SilenceArtifactFilter(window_s=0.5, keep=["one", "two"], max_chars=5)],
        [
            BotStoppedSpeakingFrame(),
            TranscriptionFrame("Two."),
            TranscriptionFrame("Uh."),
            TranscriptionFrame("Absolutely."),  # longer than max_chars
        ],
    )
    assert finals(r) == ["Two.", "Absolutely."]


async def test_bot_stopped_arriving_upstream_from_the_output_transport_counts() -> None:
    class OutputTransport(FrameProcessor):
        """Announces the end of bot speech upstream once its (pretend) audio has played."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TTSSpeakFrame):
                await self.push_frame(BotStoppedSpeakingFrame(), UP)
                return
            await self.push_frame(frame, direction)

    flt = SilenceArtifactFilter(window_s=0.5)
    r = await run_frames(
        [flt, OutputTransport()],
        [TTSSpeakFrame("Bye for now."), Sleep(0.1), TranscriptionFrame("Hmm.")],
    )
    assert finals(r) == [] and flt.dropped == 1
    assert r.of_type(BotStoppedSpeakingFrame, UP)


async def test_window_defaults_to_the_setting_and_zero_disables() -> None:
    assert SilenceArtifactFilter().window_s == 0.5
    r = await run_frames(
        [SilenceArtifactFilter(window_s=0)],
        [BotStoppedSpeakingFrame(), TranscriptionFrame("Yeah.")],
    )
    assert finals(r) == ["Yeah."]
