"""Inbound support agent: the production voice loop with its defaults.

Greets the caller in their locale (chosen per call from the locale table: explicit choice,
Twilio's FromCountry, or the caller's calling code), then runs
transport in -> STT -> payment guard -> consent gate -> silence-artifact filter ->
escalation policy -> user context -> LLM (with tools) -> TTS -> transport out ->
assistant context -> transcript recorder.

Compliance: the consent policy of the caller's jurisdiction (``call.consent_policy``, from the
locale table and CONSENT_MODE): ``ivr`` asks a caller who has not chosen (or whose choice
expired) first (1 / 2 or a spoken yes / no, stored per caller id) and greets after the answer,
without a "yes" nothing of the call is stored; ``notice`` says a one-sentence recording notice
before the greeting; a caller may withdraw at any time ("stop recording"). Card numbers are redacted right after
STT and recording and transcription pause around payment details (``start_payment`` /
``end_payment`` tools, or a card number detected).

With DEEPGRAM_API_KEY / OPENAI_API_KEY / ELEVENLABS_API_KEY set it uses those services;
without them it runs fully offline (PocketSphinx, a scripted dialog, espeak-ng) and says so
in the log. Conversation state goes to the session store as each turn completes (Redis with
REDIS_URL, else memory); the full transcript goes to the transcript store at call end
(Postgres with DATABASE_URL, else SQLite).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from xml.sax.saxutils import escape

from voxpipe.call import Call
from voxpipe.config.consent_policy import call_consent_policy
from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.config.locales import ConsentPolicy, LocaleRow
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
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.filters.silence_artifact import SilenceArtifactFilter
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.policy.consent import ConsentGate, ConsentPrompts
from voxpipe.processors.policy.escalation import (
    ESCALATE_TOOL,
    Escalation,
    EscalationParams,
    EscalationPolicy,
)
from voxpipe.processors.policy.payment import (
    END_PAYMENT_TOOL,
    START_PAYMENT_TOOL,
    PaymentGuard,
    PaymentGuardParams,
)
from voxpipe.processors.policy.phrases import PhraseMatcher
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings
from voxpipe.state.shared import shared_stores

logger = logging.getLogger("bots.support_agent")

SYSTEM_PROMPT = (
    "You are the phone support agent of Acme Home Internet. You are speaking on a phone line: "
    "answer in one or two short sentences, no lists, no markdown. Help with opening hours, "
    "order and repair status, and billing questions. If you cannot help, or the caller asks "
    "for a person, call escalate_to_human with a reason and a two-sentence summary. "
    "Never ask for card numbers in the conversation: when the caller wants to pay by card, "
    "call start_payment first, then ask for the card details; call end_payment when done. "
    "'[card number]' in the caller's words is a card number removed for security."
)

# The offline stack's dialog (no OPENAI_API_KEY): the same tools, driven by rules.
INTENTS = [
    Intent(
        "human",
        keywords=["human", "real person", "representative", "operator", "an agent"],
        reply="Of course.",
        tool="escalate_to_human",
        arguments=lambda m: {"reason": "caller asked for a person", "summary": m.text},
        after_tool="I'm connecting you to a colleague now. Please hold.",
    ),
    Intent(
        "order",
        patterns=[r"order(?: number)?\s+(?P<order>[a-z0-9 ]+)"],
        keywords=["order", "delivery", "package"],
        reply="Let me check that order.",
        tool="order_status",
        after_tool="Your order {order} is {status}.",
    ),
    Intent(
        "hours",
        keywords=["hours", "open", "close", "opening"],
        reply="We're open Monday to Saturday, eight to eight.",
    ),
    Intent(
        "payment",
        keywords=["pay by card", "pay my bill", "card number"],
        reply="Sure.",
        tool="start_payment",
        after_tool="Go ahead with your card details. This part of the call is not recorded.",
    ),
    Intent(
        "billing",
        keywords=["bill", "billing", "payment", "charge", "invoice", "balance"],
        reply="Your balance is twenty four dollars, due on the fifth.",
    ),
    Intent(
        "goodbye",
        keywords=["bye", "goodbye", "that's all", "thank you"],
        reply="Thanks for calling. Goodbye!",
    ),
]

# What the offline recogniser listens for (PocketSphinx is near exact with a phrase list).
OFFLINE_PHRASES = [
    "what are your opening hours",
    "when do you open",
    "where is my order",
    "i want to check my order",
    "i want to talk to a human",
    "let me speak to a real person",
    "what is my balance",
    "i have a question about my bill",
    "thank you goodbye",
    "goodbye",
]

ORDERS = {"default": "out for delivery and arrives tomorrow"}


async def order_status(order: str = "") -> dict[str, Any]:
    """Look up an order's delivery status by order number."""
    return {
        "order": order.strip() or "on file",
        "status": ORDERS.get(order.strip(), ORDERS["default"]),
    }


ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "description": "Look up an order's delivery status by order number.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string", "description": "The order number."}},
            "required": [],
        },
    },
}


class Greeter(FrameProcessor):
    """Speaks the locale's greeting as soon as the call has started."""

    def __init__(self, greeting: str) -> None:
        super().__init__()
        self.greeting = greeting

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self.greeting:
            await self.push_frame(TTSSpeakFrame(self.greeting))


class GoodbyeHangup(FrameProcessor):
    """Ends the call once the bot has said goodbye (the server then hangs up the line)."""

    _bye = False

    def __init__(self, phrases: tuple[str, ...] = ("goodbye",)) -> None:
        super().__init__()
        self._goodbye = PhraseMatcher(phrases)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TTSTextFrame) and self._goodbye.search(frame.text):
            self._bye = True
        elif isinstance(frame, BotStoppedSpeakingFrame) and self._bye:
            await self.push_frame(EndTaskFrame(reason="bot said goodbye"), FrameDirection.UPSTREAM)
        await self.push_frame(frame, direction)


def localized_intents(texts: LocaleTexts) -> list[Intent]:
    """The offline dialog with its handoff, payment and goodbye lines in the call's language."""
    lines = {
        "human": ("after_tool", "escalation.handoff"),
        "payment": ("after_tool", "payment.details_prompt"),
        "goodbye": ("reply", "goodbye.line"),
    }
    out = []
    for intent in INTENTS:
        if intent.name in lines:
            attribute, key = lines[intent.name]
            intent = dataclasses.replace(intent, **{attribute: texts.text(key)})
        out.append(intent)
    return out


def consent_policy(call: Call, locale: LocaleRow | None, stores: Any) -> ConsentPolicy:
    """The call's consent policy: the server's choice, or (a Call built by hand) the same rule."""
    if call.consent_policy is not None:
        return call.consent_policy
    return call_consent_policy(
        call.settings.consent_mode,
        carrier=call.carrier,
        rows=stores.locales.rows_now(),
        row=locale,
        country=call.country,
        caller=call.caller,
    )


def consent_prompts(call: Call, locale: str) -> ConsentPrompts:
    """The consent wording in the call's language (CONSENT_PROMPT overrides the IVR prompt)."""
    prompts = ConsentPrompts.for_locale(locale)
    if call.settings.consent_prompt:
        prompts = dataclasses.replace(prompts, prompt=call.settings.consent_prompt)
    return prompts


def _transfer_for(call: Call) -> Any:
    """Warm transfer over Twilio's REST API where the call came from Twilio and keys are set."""
    s = call.settings
    if call.carrier != "twilio" or not s.twilio_account_sid or s.twilio_auth_token is None:
        return None
    from voxpipe.server.twilio_rest import TwilioCallControl

    control = TwilioCallControl(
        s.twilio_account_sid, s.twilio_auth_token.get_secret_value(), base_url=s.twilio_api_base_url
    )

    async def transfer(reason: str, summary: str) -> None:
        room = f"support-{call.call_id}"
        # The agent desk reads the reason and summary from the session before joining the
        # conference; the caller waits in it with hold music.
        twiml = f"<Response><Dial><Conference>{escape(room)}</Conference></Dial></Response>"
        await control.redirect(call.call_id, twiml)

    return transfer


async def bot(call: Call) -> Pipeline:
    """Build the support agent's pipeline for one call."""
    settings = call.settings
    stores = await shared_stores(settings)
    # Chosen by the server from the locale table (the database, refreshed in the background).
    locale = call.locale_row
    tag = locale.locale if locale else call.locale
    texts = LocaleTexts.for_locale(tag)
    greeting = locale.greeting if locale else "Hello, how can I help you today?"
    policy = consent_policy(call, locale, stores)
    prompts = consent_prompts(call, tag)

    stt = stt_from_settings(settings, locale, phrases=OFFLINE_PHRASES)
    # LLM_FALLBACK_TEXT when the operator set it, else the locale's line.
    fallback = (
        settings.llm_fallback_text
        if "llm_fallback_text" in settings.model_fields_set
        else texts.text("llm.fallback")
    )
    llm = llm_from_settings(settings, intents=localized_intents(texts), fallback_text=fallback)
    tts = tts_from_settings(settings, locale)

    # Tools come from the functions registered on the LLM below.
    context = LLMContext(
        SYSTEM_PROMPT,
        max_turns=settings.context_turns,
        summarizer=llm,  # both the OpenAI service and the scripted dialog summarize
    )
    user = UserContextAggregator(context)
    assistant = AssistantContextAggregator(context)
    recorder = TranscriptRecorder(
        assistant,
        sessions=stores.sessions,
        transcripts=stores.transcripts,
        call_id=call.call_id,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        require_consent=policy != "none",
        meta={
            "caller": call.caller,
            "called": call.called,
            "locale": locale.locale if locale else call.locale,
            "carrier": call.carrier,
            "country": call.country,
            "bot": "support_agent",
        },
    )
    escalation = Escalation(record=recorder.mark_escalated, transfer=_transfer_for(call))
    llm.register_function(
        "escalate_to_human", escalation.escalate, ESCALATE_TOOL, cancel_on_interruption=False
    )
    llm.register_function("order_status", order_status, ORDER_TOOL)
    payment = PaymentGuard(
        PaymentGuardParams(
            resume_after_s=settings.payment_resume_after_s,
            max_pause_s=settings.payment_max_pause_s,
        )
    )
    for name, handler, schema in (
        ("start_payment", payment.start_payment, START_PAYMENT_TOOL),
        ("end_payment", payment.end_payment, END_PAYMENT_TOOL),
    ):
        llm.register_function(name, handler, schema, cancel_on_interruption=False)

    # First after STT, so nothing downstream sees a card number; with consent to ask, the gate
    # greets once the caller has answered (not over the prompt) and replaces the Greeter.
    compliance: list[FrameProcessor] = [payment]
    opening: list[FrameProcessor] = [Greeter(greeting)]
    if policy != "none":
        gate = ConsentGate(
            stores.consents,
            caller=call.caller,
            call_id=call.call_id,
            prompts=prompts,
            after=greeting,
            policy=policy,
            answer_timeout_s=settings.consent_answer_timeout_s,
            ttl_s=settings.consent_ttl_days * 86400.0,
        )
        compliance.append(gate)
        opening = []

    return Pipeline(
        [
            call.transport.input(),
            stt,
            *compliance,
            SilenceArtifactFilter(window_s=settings.silence_artifact_window_s),
            EscalationPolicy(
                escalation,
                context,
                EscalationParams(
                    request_phrases=texts.phrases("escalation.request_phrases"),
                    handoff_line=texts.text("escalation.handoff"),
                ),
            ),
            user,
            *opening,
            llm,
            tts,
            call.transport.output(),
            assistant,
            GoodbyeHangup(texts.phrases("goodbye.phrases")),
            recorder,
        ]
    )
