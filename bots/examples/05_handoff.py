"""05 handoff: hand the caller to a person when they ask (or the model decides to).

    voxpipe serve bots/examples/05_handoff.py
    voxpipe test bots/examples/05_handoff.yaml

New here: escalation. ``Escalation`` is the one path to a person: the ``escalate_to_human``
tool and the ``EscalationPolicy`` (an explicit request, a question asked three times, anger)
both use it. Its ``transfer`` moves the call (``TwilioHandoff``, see bots/support_agent.py);
without one, as here, the bot says it cannot put the caller through and keeps the call.
"""

from __future__ import annotations

import logging
from typing import Any

from voxpipe.call import Call
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.policy.escalation import (
    ESCALATE_TOOL,
    Escalation,
    EscalationParams,
    EscalationPolicy,
)
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings

logger = logging.getLogger("bots.examples.handoff")
INTENTS = [
    Intent(
        "stuck",
        keywords=["doesn't work", "still broken"],
        reply="Let me get you some help.",
        tool="escalate_to_human",
        arguments=lambda m: {"reason": "problem not solved", "summary": m.text},
        after_tool="I can't put you through right now, but I've noted it for a colleague.",
    ),
    Intent("router", keywords=["router"], reply="Please restart your router and try again."),
]


# What the offline recogniser (PocketSphinx) listens for: near exact with a phrase list.
PHRASES = [
    "my internet is down",
    "my router blinks red",
    "it is still broken",
    "i want a real person please",
]


async def bot(call: Call) -> Pipeline:
    context = LLMContext("You are a support agent. Escalate when you cannot help.")
    llm = llm_from_settings(call.settings, intents=INTENTS)

    async def note(reason: str, summary: str) -> None:  # what a colleague picks up
        logger.warning("escalated call %s: %s (%s)", call.call_id, reason, summary)

    escalation = Escalation(record=note, transfer=None)  # no transfer path: "unavailable"

    async def escalate_to_human(reason: str, summary: str = "") -> dict[str, Any]:
        return await escalation.escalate(reason, summary)

    llm.register_function("escalate_to_human", escalate_to_human, ESCALATE_TOOL)
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row, phrases=PHRASES),
            EscalationPolicy(escalation, context, EscalationParams()),
            UserContextAggregator(context),
            llm,
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
            AssistantContextAggregator(context),
        ]
    )
