"""SilenceArtifactFilter: one short word said right after the bot stopped is dropped (virtual
clock; "said" on the call's audio timeline, not when the transcript arrives)."""

from __future__ import annotations

import pytest

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    Word,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.filters import SilenceArtifactFilter
from voxpipe.processors.stt.base import STTService
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


# ------------------------------------------------------------ on the call's audio timeline


class WordAtSTT(STTService):
    """A recogniser that hears one word at ``word_at`` seconds of its stream and reports it
    (as Deepgram does: word times in stream seconds) once ``report_at`` seconds arrived."""

    def __init__(self, word: str, word_at: float, report_at: float) -> None:
        super().__init__()
        self.word, self.word_at, self.report_at = word, word_at, report_at
        self.heard = 0.0

    async def process_audio(self, frame: InputAudioFrame) -> None:
        before = self.heard
        self.heard += frame.num_samples / frame.sample_rate
        if before < self.report_at <= self.heard + 1e-9:
            word = Word(self.word, start=self.word_at, end=self.word_at + 0.3)
            await self.push_transcript(f"{self.word}.", final=True, words=[word])


def line(seconds: float, bot_stops_at: float) -> list[Frame | Sleep]:
    """Caller audio in real time (a 20 ms chunk arrives as its last sample is captured), the
    bot's audio stopping at ``bot_stops_at``."""
    out: list[Frame | Sleep] = []
    for i in range(1, round(seconds / 0.02) + 1):
        out += [Sleep(0.02), InputAudioFrame(b"\0" * 320, sample_rate=8000)]
        if abs(i * 0.02 - bot_stops_at) < 1e-9:
            out.append(BotStoppedSpeakingFrame())
    return out


async def test_a_word_said_200_ms_after_the_bot_stopped_is_dropped_though_it_arrives_700_ms_after() -> (
    None
):
    flt = SilenceArtifactFilter(window_s=0.5)
    # The bot stops at 1.0 s; "Yeah" starts at 1.2 s; the STT reports it at 1.7 s.
    r = await run_frames(
        [WordAtSTT("Yeah", word_at=1.2, report_at=1.7), flt],
        [BotStartedSpeakingFrame(), *line(2.5, 1.0)],
    )
    assert finals(r) == [] and flt.dropped == 1


async def test_the_same_word_said_900_ms_after_is_kept() -> None:
    flt = SilenceArtifactFilter(window_s=0.5)
    r = await run_frames(
        [WordAtSTT("Yeah", word_at=1.9, report_at=2.4), flt],
        [BotStartedSpeakingFrame(), *line(3.0, 1.0)],
    )
    assert finals(r) == ["Yeah."] and flt.dropped == 0
    [word] = r.of_type(TranscriptionFrame)[0].words
    assert word.call_start == pytest.approx(1.9)  # stream seconds mapped to the call clock


async def test_a_stop_caused_by_the_caller_barging_in_opens_no_window() -> None:
    flt = SilenceArtifactFilter(window_s=0.5)
    r = await run_frames(
        [flt],
        [
            BotStartedSpeakingFrame(),
            InterruptionFrame(),
            BotStoppedSpeakingFrame(),
            Sleep(0.2),
            TranscriptionFrame("Stop."),
        ],
    )
    assert finals(r) == ["Stop."]
