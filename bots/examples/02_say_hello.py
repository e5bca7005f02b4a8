"""02 say hello: greet the caller, then answer with a language model.

    voxpipe serve bots/examples/02_say_hello.py
    voxpipe test bots/examples/02_say_hello.yaml

New here: the LLM and the conversation context. ``llm_from_settings`` gives OpenAI when
OPENAI_API_KEY is set, else a scripted dialog from ``INTENTS`` (rules: words -> reply), so the
bot runs and is testable offline. The user aggregator turns the caller's words into a request;
the assistant aggregator (after the output) keeps what the caller really heard.
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
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings

GREETING = "Hello! I'm the demo bot. How can I help?"
PROMPT = "You are a friendly phone assistant. Answer in one short sentence."
# What the offline recogniser (PocketSphinx) listens for: near exact with a phrase list.
PHRASES = ["what is your name", "who are you", "tell me a joke", "hello"]
INTENTS = [Intent("name", keywords=["your name", "who are you"], reply="I'm Vox, a demo bot.")]


class Greeter(FrameProcessor):
    """Says the greeting as soon as the call starts."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(TTSSpeakFrame(GREETING))


async def bot(call: Call) -> Pipeline:
    context = LLMContext(PROMPT)
    llm = llm_from_settings(
        call.settings, intents=INTENTS, default_reply="Sorry, I can only tell you my name."
    )
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row, phrases=PHRASES),
            UserContextAggregator(context),
            Greeter(),
            llm,
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
            AssistantContextAggregator(context),
        ]
    )
