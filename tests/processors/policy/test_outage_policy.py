"""OutagePolicy: the apology when the caller is not heard (or a reply cannot be spoken), the
goodbye when a provider gave up; on the virtual clock."""

from __future__ import annotations

from voxpipe.frames import (
    FrameDirection,
    ProviderOutageFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.policy.outage import OutageLines, OutagePolicy
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.helpers import Collect

LINES = OutageLines(apology="Trouble hearing you, one moment.", goodbye="Sorry. Goodbye.")


def said(r: object) -> list[str]:
    return [f.text for f in r.of_type(TTSSpeakFrame)]  # type: ignore[attr-defined]


def stt(state: str) -> ProviderOutageFrame:
    return ProviderOutageFrame("stt", "deepgram", state)


async def test_the_caller_speaking_during_an_stt_outage_hears_the_apology() -> None:
    r = await run_frames(
        [OutagePolicy(LINES, repeat_after_s=10.0)],
        [
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),  # heard: no outage yet
            Sleep(5.0),
            stt("down"),  # silent caller: nothing to apologize for yet
            Sleep(1.0),
            UserStartedSpeakingFrame(),
            Sleep(2.0),
            UserStoppedSpeakingFrame(),  # not heard: the apology
            Sleep(2.0),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),  # again soon after: not repeated
            Sleep(10.0),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),  # much later, still down: once more
            stt("up"),
            UserStartedSpeakingFrame(),
            UserStoppedSpeakingFrame(),  # heard again: nothing
        ],
    )
    assert said(r) == [LINES.apology, LINES.apology]
    # The outage reports pass on (to the metrics at the pipeline's end).
    assert [f.state for f in r.of_type(ProviderOutageFrame)] == ["down", "up"]


async def test_words_just_before_the_outage_was_known_get_the_apology_at_once() -> None:
    r = await run_frames(
        [OutagePolicy(LINES)],
        [UserStartedSpeakingFrame(), UserStoppedSpeakingFrame(), Sleep(0.5), stt("down")],
    )
    assert said(r) == [LINES.apology]


async def test_tts_outage_apologizes_at_once_and_giving_up_says_goodbye_once() -> None:
    tts_down = ProviderOutageFrame("tts", "elevenlabs", "down")
    gave_up = ProviderOutageFrame("tts", "elevenlabs", "gave_up", duration_s=30.0)
    policy = OutagePolicy(LINES)
    r = await run_frames(
        [policy],
        [tts_down, Sleep(30.0), gave_up, stt("gave_up"), UserStoppedSpeakingFrame()],
    )
    assert said(r) == [LINES.apology, LINES.goodbye]
    assert policy.said_goodbye and policy.apologies == 1


async def test_reports_from_downstream_services_pass_upstream_and_speech_goes_down() -> None:
    policy = OutagePolicy(LINES)
    up = FrameDirection.UPSTREAM

    # Reports travel upstream from the TTS / LLM (placed after the policy).
    class Tail(Collect):
        async def on_start(self, frame: object) -> None:
            await self.push_frame(ProviderOutageFrame("tts", "elevenlabs", "down"), up)

    tail = Tail()
    r = await run_frames([policy, tail], [Sleep(0.1)])
    assert [f.state for f in r.of_type(ProviderOutageFrame, up)] == ["down"]
    assert [f.text for f in tail.of_type(TTSSpeakFrame)] == [LINES.apology]
