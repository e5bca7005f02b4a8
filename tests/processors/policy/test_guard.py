"""The words guard after STT, and the non-interruptible span helper."""

import pytest

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    InterruptionRequestFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.policy import (
    DisableInterruptionsFrame,
    EnableInterruptionsFrame,
    InterruptionGuard,
    InterruptionGuardParams,
    InterruptionsAllowedFrame,
    count_words,
    uninterruptible,
)
from voxpipe.testing import Sleep, run_frames


def test_count_words_skips_fillers_and_punctuation():
    assert count_words("Mm-hmm.") == 0
    assert count_words("uh, huh") == 1  # "huh" alone is not a filler; "uh-huh" is
    assert count_words("Uh-huh, okay.") == 1
    assert count_words("Wait, stop — I didn't say that!") == 6
    assert count_words("  ...  ") == 0


def _guard(min_words: int = 3) -> InterruptionGuard:
    return InterruptionGuard(InterruptionGuardParams(min_words=min_words))


def _texts(frames) -> list[str]:
    return [f.text for f in frames if isinstance(f, TranscriptionFrame)]


async def test_a_backchannel_over_the_bot_neither_interrupts_nor_reaches_the_llm():
    guard = _guard()
    r = await run_frames(
        [guard],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            InterimTranscriptionFrame("mm"),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("Mm-hmm, yes."),
            Sleep(1.0),
            BotStoppedSpeakingFrame(),  # the bot finishes its sentence
            UserStartedSpeakingFrame(),  # the caller's next turn
            TranscriptionFrame("What are your opening hours?"),
        ],
    )
    assert not [f for f in r.upstream if isinstance(f, InterruptionRequestFrame)]
    assert _texts(r.downstream) == ["What are your opening hours?"]
    assert guard.dropped == 1 and guard.interruptions == 0


async def test_enough_words_interrupt_and_release_what_was_held():
    guard = _guard()
    r = await run_frames(
        [guard],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            InterimTranscriptionFrame("no"),
            TranscriptionFrame("No."),
            InterimTranscriptionFrame("wait that is"),  # 1 final + 3 interim words
            TranscriptionFrame("Wait, that is wrong."),
        ],
    )
    requests = [f for f in r.upstream if isinstance(f, InterruptionRequestFrame)]
    assert len(requests) == 1 and "4 words" in requests[0].reason
    kinds = [type(f).__name__ for f in r.downstream]
    # The sweep comes first, then the caller's words in order, finals only (interims dropped
    # before the decision, passed after it).
    cut = kinds.index("InterruptionFrame")
    assert _texts(r.downstream[cut:]) == ["No.", "wait that is", "Wait, that is wrong."]
    assert not _texts(r.downstream[:cut])


async def test_answer_overlapping_the_bots_last_words_is_kept():
    guard = _guard()
    r = await run_frames(
        [guard],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Yes"),
            BotStoppedSpeakingFrame(),  # the bot stops while the caller still talks
            UserStoppedSpeakingFrame(),
        ],
    )
    assert _texts(r.downstream) == ["Yes"]
    assert not [f for f in r.upstream if isinstance(f, InterruptionRequestFrame)]


async def test_turns_while_the_bot_is_silent_pass_untouched():
    guard = _guard()
    frames = [UserStartedSpeakingFrame(), InterimTranscriptionFrame("ok"), TranscriptionFrame("OK")]
    r = await run_frames([guard], frames)
    assert _texts(r.downstream) == ["ok", "OK"]


async def test_inside_a_non_interruptible_span_the_turn_is_not_guarded():
    guard = _guard()
    r = await run_frames(
        [guard],
        [
            BotStartedSpeakingFrame(),
            InterruptionsAllowedFrame(allowed=False),
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Hang on a second please"),
        ],
    )
    # Nothing to decide: the caller cannot interrupt now; the words go on to the context.
    assert not [f for f in r.upstream if isinstance(f, InterruptionRequestFrame)]
    assert _texts(r.downstream) == ["Hang on a second please"]


async def test_an_interruption_from_elsewhere_releases_the_turn():
    guard = _guard()
    r = await run_frames(
        [guard],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Stop"),
            InterruptionFrame(),  # e.g. a DTMF press
        ],
    )
    assert _texts(r.downstream) == ["Stop"]


async def test_zero_min_words_passes_everything():
    guard = InterruptionGuard()
    frames = [BotStartedSpeakingFrame(), UserStartedSpeakingFrame(), TranscriptionFrame("mm")]
    r = await run_frames([guard], frames)
    assert _texts(r.downstream) == ["mm"]


def test_uninterruptible_wraps_frames_in_a_span():
    speak = TTSSpeakFrame("This call may be recorded.")
    frames = uninterruptible(speak, reason="notice")
    assert [type(f) for f in frames] == [
        DisableInterruptionsFrame,
        TTSSpeakFrame,
        EnableInterruptionsFrame,
    ]
    assert frames[0].reason == "notice" and frames[1] is speak


def test_params_are_checked():
    with pytest.raises(ValueError, match="min_words"):
        InterruptionGuardParams(min_words=-1)
    with pytest.raises(ValueError, match="min_speech_secs"):
        InterruptionGuardParams(min_speech_secs=-0.1)
