"""The interruption arbiter on its own (frames in, frames out) and the locale word lists."""

from __future__ import annotations

import pytest

from voxpipe.config.locale_texts import SHIPPED_LANGUAGES, LocaleTexts
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.frames import (
    BackchannelFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterimTranscriptionFrame,
    InterruptionRequestFrame,
    PauseBotOutputFrame,
    ResumeBotOutputFrame,
    SmartInterruptionsFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.policy.frames import InterruptionsAllowedFrame
from voxpipe.processors.turn.backchannel import (
    BACKCHANNELS_KEY,
    STOP_PHRASES_KEY,
    BackchannelWords,
    InterruptionArbiter,
    InterruptionParams,
    interruption_params,
)
from voxpipe.testing import Sleep, run_frames

# One backchannel and one stop phrase per shipped language, as an STT would write them.
SAMPLES = {
    "en": ("Mm-hmm, right.", "Wait, that's wrong."),
    "de": ("Ja, genau.", "Moment, das stimmt nicht."),
    "fr": ("Oui, d'accord.", "Attendez !"),
    "es": ("Ajá, vale.", "Espera."),
    "it": ("Sì, certo.", "Aspetta."),
    "pt": ("Aham, tá bom.", "Espera, não é isso."),
}


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_every_shipped_language_has_its_own_lists(language: str) -> None:
    texts = LocaleTexts.for_locale(language)
    assert texts.translated(BACKCHANNELS_KEY) and texts.translated(STOP_PHRASES_KEY)
    words = BackchannelWords.for_locale(f"{language}-XX")
    backchannel, stop = SAMPLES[language]
    assert words.judge(backchannel).stop is None and words.judge(backchannel).words == 0
    assert words.judge(stop).stop is not None


def test_judging_words() -> None:
    en = BackchannelWords.for_locale("en-US")
    assert en.judge("Uh-huh.").words == 0 and not en.judge("Uh-huh.").empty
    assert en.judge("  ").empty
    assert en.judge("No, no.").stop == "no"
    assert en.judge("I know").stop is None  # whole words only
    assert en.judge("I know").words == 2
    assert en.judge("Okay, what about my refund?").words == 4
    es = BackchannelWords.for_locale("es-ES")
    assert es.judge("aja").words == 0  # an STT without accents
    assert es.judge("¡Para, para!").stop == "para"


def test_settings_build_the_params() -> None:
    settings = VoxpipeSettings(
        interruption_mode="immediate", backchannel_max_s=1.2, backchannel_min_words=3
    )
    assert interruption_params(settings) == InterruptionParams(
        mode="immediate", max_speech_secs=1.2, min_words=3
    )
    assert VoxpipeSettings().interruption_mode == "smart"  # the served default


def _kinds(frames, cls) -> list:
    return [f for f in frames if isinstance(f, cls)]


async def test_announces_itself_to_the_input_transport() -> None:
    r = await run_frames([InterruptionArbiter(InterruptionParams(max_speech_secs=0.7))], [])
    [announce] = _kinds(r.upstream, SmartInterruptionsFrame)
    assert announce.max_speech_secs == 0.7
    r = await run_frames([InterruptionArbiter(InterruptionParams(mode="immediate"))], [])
    assert not _kinds(r.upstream, SmartInterruptionsFrame)


async def test_interim_backchannel_resumes_at_the_stop_and_a_late_final_still_interrupts() -> None:
    arbiter = InterruptionArbiter()
    r = await run_frames(
        [arbiter],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            InterimTranscriptionFrame("okay"),
            Sleep(0.2),
            UserStoppedSpeakingFrame(),  # only "okay" so far: the bot goes on at once
            Sleep(0.2),
            TranscriptionFrame("Okay, wait."),  # the final says more: a barge-in after all
        ],
    )
    assert len(_kinds(r.downstream, PauseBotOutputFrame)) == 1
    assert len(_kinds(r.downstream, ResumeBotOutputFrame)) == 1
    assert len(_kinds(r.downstream, BackchannelFrame)) == 1
    [request] = _kinds(r.upstream, InterruptionRequestFrame)
    assert "wait" in request.reason
    assert [f.text for f in _kinds(r.downstream, TranscriptionFrame) if f.final] == ["Okay, wait."]


async def test_a_final_of_backchannels_is_dropped_and_the_next_turn_passes() -> None:
    arbiter = InterruptionArbiter()
    r = await run_frames(
        [arbiter],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            Sleep(0.1),
            TranscriptionFrame("Yeah, yeah."),
            Sleep(1.0),
            BotStoppedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
            TranscriptionFrame("What are your opening hours?"),
        ],
    )
    assert not _kinds(r.upstream, InterruptionRequestFrame)
    texts = [f.text for f in _kinds(r.downstream, TranscriptionFrame)]
    assert texts == ["What are your opening hours?"]
    assert arbiter.backchannels == 1 and arbiter.dropped == 1
    [bc] = _kinds(r.downstream, BackchannelFrame)
    assert bc.text == "Yeah, yeah." and bc.speech_secs == pytest.approx(0.1)


async def test_one_real_word_after_the_caller_stopped_is_a_turn() -> None:
    r = await run_frames(
        [InterruptionArbiter()],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            InterimTranscriptionFrame("what"),  # one word while speaking: not yet
            UserStoppedSpeakingFrame(),
        ],
    )
    [request] = _kinds(r.upstream, InterruptionRequestFrame)
    assert "1 word" in request.reason


async def test_the_bot_finishing_while_judged_makes_the_words_a_turn() -> None:
    r = await run_frames(
        [InterruptionArbiter()],
        [
            BotStartedSpeakingFrame(),
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Yes"),
            BotStoppedSpeakingFrame(),
            UserStoppedSpeakingFrame(),
        ],
    )
    assert not _kinds(r.upstream, InterruptionRequestFrame)
    assert [f.text for f in _kinds(r.downstream, TranscriptionFrame)] == ["Yes"]


async def test_no_pause_in_a_span_or_while_the_bot_is_silent() -> None:
    r = await run_frames(
        [InterruptionArbiter()],
        [
            UserStartedSpeakingFrame(),  # the bot is silent: an ordinary turn
            TranscriptionFrame("Hi"),
            UserStoppedSpeakingFrame(),
            BotStartedSpeakingFrame(),
            InterruptionsAllowedFrame(allowed=False),  # a notice the caller cannot cut off
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Stop"),
            UserStoppedSpeakingFrame(),
        ],
    )
    assert not _kinds(r.downstream, PauseBotOutputFrame)
    assert not _kinds(r.upstream, InterruptionRequestFrame)
    assert [f.text for f in _kinds(r.downstream, TranscriptionFrame)] == ["Hi", "Stop"]
