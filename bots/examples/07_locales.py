"""07 locales: greet and answer in the caller's language.

    voxpipe serve bots/examples/07_locales.py
    voxpipe test bots/examples/07_locales.yaml

New here: the locale. The server picks ``call.locale_row`` from the locale table (the caller's
choice, the carrier's country or the number's calling code): its greeting, STT language and
TTS voice. Wording lives in locale data (``LocaleTexts``: voxpipe/config/texts/*.json), not in
code; the bot hangs up after saying the locale's goodbye line.
"""

from __future__ import annotations

from voxpipe.call import Call
from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.frames import (
    BotStoppedSpeakingFrame,
    EndTaskFrame,
    Frame,
    FrameDirection,
    StartFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings


class GreetAndHangUp(FrameProcessor):
    """Greets at the start; ends the call once the goodbye line has been said."""

    def __init__(self, greeting: str, goodbye: str) -> None:
        super().__init__()
        self.greeting, self.goodbye, self._said = greeting, goodbye, ""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(TTSSpeakFrame(self.greeting))
        elif isinstance(frame, TTSTextFrame):  # the words being spoken, one by one
            self._said = f"{self._said} {frame.text}".strip()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            if self.goodbye in self._said:
                await self.push_frame(EndTaskFrame(reason="said goodbye"), FrameDirection.UPSTREAM)
            self._said = ""


async def bot(call: Call) -> Pipeline:
    row = call.locale_row
    texts = LocaleTexts.for_locale(call.locale)
    greeting = row.greeting if row else "Hello, how can I help you?"
    goodbye = texts.text("goodbye.line")
    intents = [Intent("bye", keywords=list(texts.phrases("goodbye.phrases")), reply=goodbye)]
    context = LLMContext(f"Answer in the caller's language ({call.locale}). Be brief.")
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, row),
            UserContextAggregator(context),
            llm_from_settings(call.settings, intents=intents, default_reply=greeting),
            tts_from_settings(call.settings, row),
            GreetAndHangUp(greeting, goodbye),
            call.transport.output(),
            AssistantContextAggregator(context),
        ]
    )
