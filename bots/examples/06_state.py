"""06 state: keep the conversation in the session store and the transcript at call end.

    voxpipe serve bots/examples/06_state.py
    voxpipe test bots/examples/06_state.yaml

New here: stores. ``shared_stores`` opens this worker's stores once (sessions in Redis with
REDIS_URL, else memory; transcripts in Postgres with DATABASE_URL, else SQLite). The
``TranscriptRecorder`` writes each turn as it completes and the whole call when it ends. Where
the caller's jurisdiction asks for consent first, nothing is stored until it is given (the
``ConsentGate`` of bots/support_agent.py asks); card numbers are never stored.
"""

from __future__ import annotations

from voxpipe.call import Call
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings
from voxpipe.state.shared import shared_stores

INTENTS = [
    Intent("order", patterns=[r"order (?:number )?(?P<order>\d+)"], reply="Noted: order {order}."),
    Intent("repeat", keywords=["which order"], reply="We talked about your order earlier."),
]


async def bot(call: Call) -> Pipeline:
    stores = await shared_stores(call.settings)
    context = LLMContext("You take order numbers. Be brief.")
    assistant = AssistantContextAggregator(context)
    recorder = TranscriptRecorder(
        assistant,
        sessions=stores.sessions,
        transcripts=stores.transcripts,
        call_id=call.call_id,
        # "none": no consent needed here (CONSENT_MODE and the caller's country decide).
        require_consent=call.consent_policy not in (None, "none"),
        meta={"caller": call.caller, "bot": "06_state"},
    )
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row),
            UserContextAggregator(context),
            llm_from_settings(call.settings, intents=INTENTS),
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
            assistant,
            recorder,  # after the assistant aggregator: stores what was said and heard
        ]
    )
