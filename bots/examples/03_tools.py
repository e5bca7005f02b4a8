"""03 tools: the model calls a function of ours and answers with its result.

    voxpipe serve bots/examples/03_tools.py
    voxpipe test bots/examples/03_tools.yaml

New here: a tool. ``@llm.function(schema)`` registers ``next_opening`` for the model (OpenAI
sees the schema; the docstring is its description). Offline, the intent names the tool and
its pattern's named group ``day`` becomes the argument; ``after_tool`` is said with the
tool's result. The same function serves both: one list of tools.
"""

from __future__ import annotations

from typing import Any

from voxpipe.call import Call
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings

HOURS = {"saturday": "ten", "sunday": None}  # other days: nine
DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
INTENTS = [
    Intent(
        "opening",
        patterns=[rf"\b(?P<day>{DAYS})\b"],
        reply="Let me check.",
        tool="next_opening",
        after_tool="On {day} we {answer}.",
    )
]
# What the offline recogniser (PocketSphinx) listens for: near exact with a phrase list.
PHRASES = [
    "when do you open on saturday",
    "and on sunday",
    "when do you open on monday",
    "hello there",
]
DAY_SCHEMA = {
    "type": "object",
    "properties": {"day": {"type": "string", "description": "Day of the week, e.g. monday."}},
    "required": ["day"],
}


async def bot(call: Call) -> Pipeline:
    context = LLMContext("You tell callers when the shop opens. Use next_opening. Be brief.")
    llm = llm_from_settings(call.settings, intents=INTENTS, default_reply="Which day?")

    @llm.function(DAY_SCHEMA)
    async def next_opening(day: str) -> dict[str, Any]:
        """When the shop opens on a given day of the week."""
        opens = HOURS.get(day.lower(), "nine")
        return {"answer": f"open at {opens}" if opens else "are closed"}

    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row, phrases=PHRASES),
            UserContextAggregator(context),
            llm,
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
            AssistantContextAggregator(context),
        ]
    )
