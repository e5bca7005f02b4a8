"""04 interruptions: when the caller may talk over the bot, and a span they cannot cut off.

    voxpipe serve bots/examples/04_interruptions.py
    voxpipe test bots/examples/04_interruptions.yaml

New here: barge-in control. The transport's guard sets how much speech interrupts the bot
(``min_speech_secs``: coughs and "uh-huh" do not). An ``InterruptionArbiter`` after the STT
(INTERRUPTION_MODE=smart, the default) pauses the bot when the caller talks over it and
judges the words: "uh-huh", "okay" or a cough resume it where it paused, "wait", "no" or a
real sentence interrupt it (word lists per language in the locale data); with it, the guard's
``min_speech_secs`` only applies once speech lasts BACKCHANNEL_MAX_S.
``uninterruptible(...)`` wraps frames in a
span the caller cannot interrupt (a legal notice): the output tells the input transport
when it starts and ends, and interruptions inside it are dropped.
"""

from __future__ import annotations

from voxpipe.call import Call
from voxpipe.frames import Frame, FrameDirection, StartFrame, TTSSpeakFrame
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.policy.frames import uninterruptible
from voxpipe.processors.policy.guard import InterruptionGuardParams
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings
from voxpipe.processors.turn.backchannel import InterruptionArbiter, interruption_params

NOTICE = "This call may be recorded for quality purposes. Please listen to the whole notice."
INTENTS = [
    Intent(
        "plans",
        keywords=["plans", "prices"],
        reply="We have three plans: basic, plus and "
        "premium. Basic is ten dollars, plus is twenty, and premium is thirty a month.",
    ),
    Intent("basic", keywords=["basic"], reply="Basic it is. I'll send you the details."),
]


# What the offline recogniser (PocketSphinx) listens for: near exact with a phrase list.
PHRASES = ["what plans do you have", "what are your prices", "basic please"]


class Notice(FrameProcessor):
    """Says the notice, uninterruptible, when the call starts."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            for f in uninterruptible(TTSSpeakFrame(NOTICE), reason="recording notice"):
                await self.push_frame(f)


async def bot(call: Call) -> Pipeline:
    # Half a second of speech interrupts (the default is 0.4 s).
    call.transport.params.guard = InterruptionGuardParams(min_speech_secs=0.5)
    context = LLMContext("You sell internet plans. Answer briefly.")
    llm = llm_from_settings(call.settings, intents=INTENTS)
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row, phrases=PHRASES),
            InterruptionArbiter(interruption_params(call.settings), locale=call.locale),
            UserContextAggregator(context),
            Notice(),
            llm,
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
            AssistantContextAggregator(context),  # keeps only what was heard
        ]
    )
