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

Provider outages: while the STT cannot hear the caller (or the TTS cannot speak) the bot says
a pre-rendered apology in the caller's language, and says goodbye and ends the call if the
provider stays down past PROVIDER_OUTAGE_GRACE_S (``OutagePolicy``, ``OUTAGE_LINES``).

With DEEPGRAM_API_KEY / OPENAI_API_KEY / ELEVENLABS_API_KEY set it uses those services;
without them it runs fully offline (PocketSphinx, a scripted dialog, espeak-ng) and says so
in the log. Conversation state goes to the session store as each turn completes (Redis with
REDIS_URL, else memory); the full transcript goes to the transcript store at call end
(Postgres with DATABASE_URL, else SQLite).

Callbacks continue (CALLBACK_CONTINUITY, default on): a caller whose call dropped and who calls
back within SESSION_TTL_S is welcomed back with the topic of the earlier call, whose turns the
LLM gets with every detail withheld until ``verify_caller`` (PIN or date of birth, checked
against a bot-side lookup) passes; "start over" gives a fresh context. The wording, phrases,
sensitive patterns and demo lookup are in ``support_agent_continuity.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

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
from voxpipe.processors.aggregators import UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.continuity import ContinuityKeeper, StartOverDetector
from voxpipe.processors.aggregators.resume import PriorConversation, PriorNotes, ResumableContext
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.filters.silence_artifact import SilenceArtifactFilter
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.policy.consent import ConsentGate, ConsentPrompts
from voxpipe.processors.policy.escalation import (
    Escalation,
    EscalationParams,
    EscalationPolicy,
    EscalationState,
)
from voxpipe.processors.policy.outage import OutageLines, OutagePolicy
from voxpipe.processors.policy.payment import (
    END_PAYMENT_TOOL,
    START_PAYMENT_TOOL,
    PaymentGuard,
    PaymentGuardParams,
)
from voxpipe.processors.policy.phrases import PhraseMatcher
from voxpipe.processors.policy.triggers import CANNOT_HELP_TOOL
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings
from voxpipe.processors.turn.backchannel import InterruptionArbiter, interruption_params
from voxpipe.records.recording import recording_for_call
from voxpipe.state.consent import identifiable_caller
from voxpipe.state.continuity import CallerContinuity, ResumableConversation
from voxpipe.state.shared import shared_stores
from voxpipe.telephony.carrier_handoffs import (
    TelnyxHandoff,
    TelnyxTransferConfig,
    VonageHandoff,
    VonageTransferConfig,
)
from voxpipe.telephony.handoff import Handoff, TwilioHandoff, resume_conversation
from voxpipe.telephony.handoff import take_message as take_message_for
from voxpipe.telephony.sip_transfer import NOBODY_TOOK, SipHandoff, sip_targets
from voxpipe.telephony.transfers import RESUME_PARAM, TransferConfig
from voxpipe.telephony.warm_transfer import TransferWording

logger = logging.getLogger("bots.support_agent")

SYSTEM_PROMPT = (
    "You are the phone support agent of Acme Home Internet. You are speaking on a phone line: "
    "answer in one or two short sentences, no lists, no markdown. Help with opening hours, "
    "order and repair status, and billing questions. When you cannot answer or cannot do "
    "what the caller asks, do not guess: call cannot_help with the reason and say what its "
    "result tells you. When the caller asks for a person, call escalate_to_human with a "
    "reason and a two-sentence summary; when they mention a person but it is unclear whether "
    "they want to be put through, ask them first. If escalate_to_human "
    "answers that no transfer is possible, do not promise one: offer to take a message or a "
    "callback number and call take_message. "
    "Never ask for card numbers in the conversation: when the caller wants to pay by card, "
    "call start_payment first, then ask for the card details; call end_payment when done. "
    "'[card number]' in the caller's words is a card number removed for security."
)

ORDERS = {"default": "out for delivery and arrives tomorrow"}


async def order_status(order: Annotated[str, "The order number."] = "") -> dict[str, Any]:
    """Look up an order's delivery status by order number."""
    return {
        "order": order.strip() or "on file",
        "status": ORDERS.get(order.strip(), ORDERS["default"]),
    }


# The offline stack's dialog (no OPENAI_API_KEY): the same tools (registered once in bot()),
# driven by rules.
INTENTS = [
    Intent(
        "human",
        keywords=["human", "real person", "representative", "operator", "an agent"],
        reply="Of course.",
        tool="escalate_to_human",
        arguments=lambda m: {"reason": "caller asked for a person", "summary": m.text},
        after_tool="{say}",  # what the tool's outcome lets the bot promise (see _escalate_tool)
    ),
    Intent(
        "message",
        keywords=["take a message", "call me back", "callback", "leave a message"],
        reply="Of course.",
        tool="take_message",
        arguments=lambda m: {"message": m.text, "callback_number": ""},
        after_tool="{say}",
    ),
    Intent(
        "order",
        patterns=[r"order(?: number)?\s+(?P<order>[a-z0-9 ]+)"],
        keywords=["order", "delivery", "package"],
        reply="Let me check that order.",
        tool=order_status,
        after_tool="Your order {order} is {status}.",
    ),
    Intent(
        "hours",
        keywords=["hours", "open", "close", "opening"],
        reply="We're open Monday to Saturday, eight to eight.",
    ),
    Intent(
        "payment",
        # Not the payment guard's "[card number]" (a number read out): that is no new request.
        patterns=[r"(?<!\[)\bcard number\b(?!\])"],
        keywords=["pay by card", "pay my bill"],
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
    "please call me back",
    "can you take a message",
    "what is my balance",
    "i have a question about my bill",
    "thank you goodbye",
    "goodbye",
    # Said over the bot: backchannels it talks on through, and words that stop it.
    "uh huh",
    "okay",
    "right",
    "yeah",
    "wait",
    "stop",
    "no",
    "hold on",
]

# What the bot says while a provider is down, by language (the locale's first part). Rendered
# at call start (once per worker) so they are heard even while the TTS is down.
# TODO(lead): move to the locale data once its accessor API (issue 18, h4) is merged.
OUTAGE_LINES = {
    "en": OutageLines(
        apology="I'm having trouble hearing you, one moment.",
        goodbye="I'm sorry, we're having technical problems. Please call us back later. Goodbye.",
    ),
    "de": OutageLines(
        apology="Ich habe gerade Schwierigkeiten, Sie zu verstehen, einen Moment bitte.",
        goodbye="Es tut mir leid, wir haben technische Probleme. Bitte rufen Sie später "
        "wieder an. Auf Wiederhören.",
    ),
    "fr": OutageLines(
        apology="J'ai du mal à vous entendre, un instant s'il vous plaît.",
        goodbye="Désolé, nous avons un problème technique. Merci de rappeler plus tard. Au revoir.",
    ),
    "es": OutageLines(
        apology="Tengo problemas para oírle, un momento por favor.",
        goodbye="Lo siento, tenemos problemas técnicos. Por favor, llame más tarde. Adiós.",
    ),
    "it": OutageLines(
        apology="Ho difficoltà a sentirla, un momento per favore.",
        goodbye="Mi dispiace, abbiamo problemi tecnici. La preghiamo di richiamare più tardi. "
        "Arrivederci.",
    ),
    "pt": OutageLines(
        apology="Estou com dificuldade para ouvi-lo, um momento por favor.",
        goodbye="Desculpe, estamos com problemas técnicos. Por favor, ligue mais tarde. Adeus.",
    ),
}

# Warm-transfer wording by language (issue 11): what the agent hears before taking the call,
# what the caller hears when moved to hold, when nobody is free, when no transfer is possible.
TRANSFER_WORDING: dict[str, dict[str, str]] = {
    "en": {
        "brief": "Incoming escalated call. Reason: {reason}. Summary: {summary}",
        "accept": "Press 1 to take the call.",
        "gone": "The caller has hung up.",
        "hold": "Please hold while I connect you to a colleague.",
        "handoff": "I'm connecting you to a colleague who can help. Please hold.",
        "nobody_free": "I'm sorry, nobody is free to take your call right now. I can take a "
        "message or a callback number for you.",
        "unavailable": "I'm sorry, I can't put you through to a colleague on this line. "
        "I can take a message or a callback number.",
        "message_taken": "Thank you, I've passed your message on. A colleague will call you back.",
    },
    "de": {
        "brief": "Weitergeleiteter Anruf. Grund: {reason}. Zusammenfassung: {summary}",
        "accept": "Drücken Sie die 1, um den Anruf anzunehmen.",
        "gone": "Der Anrufer hat aufgelegt.",
        "hold": "Bitte bleiben Sie dran, ich verbinde Sie mit einem Kollegen.",
        "handoff": "Ich verbinde Sie mit einem Kollegen. Bitte bleiben Sie dran.",
        "nobody_free": "Es tut mir leid, gerade ist niemand frei. Ich kann eine Nachricht "
        "oder eine Rückrufnummer aufnehmen.",
        "unavailable": "Es tut mir leid, auf dieser Leitung kann ich Sie nicht weiterverbinden. "
        "Ich kann eine Nachricht oder eine Rückrufnummer aufnehmen.",
        "message_taken": "Danke, ich habe Ihre Nachricht weitergegeben. Wir rufen Sie zurück.",
    },
    "fr": {
        "brief": "Appel transféré. Motif : {reason}. Résumé : {summary}",
        "accept": "Appuyez sur 1 pour prendre l'appel.",
        "gone": "L'appelant a raccroché.",
        "hold": "Veuillez patienter, je vous mets en relation avec un collègue.",
        "handoff": "Je vous mets en relation avec un collègue. Veuillez patienter.",
        "nobody_free": "Je suis désolé, personne n'est disponible pour le moment. Je peux "
        "prendre un message ou un numéro de rappel.",
        "unavailable": "Je suis désolé, je ne peux pas vous transférer sur cette ligne. "
        "Je peux prendre un message ou un numéro de rappel.",
        "message_taken": "Merci, j'ai transmis votre message. Un collègue vous rappellera.",
    },
    "es": {
        "brief": "Llamada escalada. Motivo: {reason}. Resumen: {summary}",
        "accept": "Pulse 1 para atender la llamada.",
        "gone": "El cliente ha colgado.",
        "hold": "Espere un momento, le paso con un compañero.",
        "handoff": "Le paso con un compañero que puede ayudarle. Espere un momento.",
        "nobody_free": "Lo siento, ahora mismo no hay nadie disponible. Puedo tomar un "
        "mensaje o un número para devolverle la llamada.",
        "unavailable": "Lo siento, en esta línea no puedo pasarle con un compañero. "
        "Puedo tomar un mensaje o un número para devolverle la llamada.",
        "message_taken": "Gracias, he pasado su mensaje. Un compañero le llamará.",
    },
    "it": {
        "brief": "Chiamata inoltrata. Motivo: {reason}. Riepilogo: {summary}",
        "accept": "Prema 1 per rispondere alla chiamata.",
        "gone": "Il cliente ha riattaccato.",
        "hold": "Resti in linea, la metto in contatto con un collega.",
        "handoff": "La metto in contatto con un collega. Resti in linea.",
        "nobody_free": "Mi dispiace, al momento non c'è nessuno disponibile. Posso prendere "
        "un messaggio o un numero per richiamarla.",
        "unavailable": "Mi dispiace, su questa linea non posso passarla a un collega. "
        "Posso prendere un messaggio o un numero per richiamarla.",
        "message_taken": "Grazie, ho inoltrato il suo messaggio. Un collega la richiamerà.",
    },
    "pt": {
        "brief": "Chamada encaminhada. Motivo: {reason}. Resumo: {summary}",
        "accept": "Pressione 1 para atender a chamada.",
        "gone": "O cliente desligou.",
        "hold": "Aguarde, vou transferi-lo para um colega.",
        "handoff": "Vou transferi-lo para um colega que pode ajudar. Aguarde.",
        "nobody_free": "Lamento, não há ninguém disponível neste momento. Posso anotar uma "
        "mensagem ou um número para ligarmos de volta.",
        "unavailable": "Lamento, nesta linha não consigo transferi-lo para um colega. "
        "Posso anotar uma mensagem ou um número para ligarmos de volta.",
        "message_taken": "Obrigado, passei a sua mensagem. Um colega vai ligar de volta.",
    },
}

# What the model is told with each escalation outcome (it must not promise what is not so).
ESCALATION_INSTRUCTIONS = {
    "transferring": "The caller is being transferred; say nothing more.",
    "unavailable": "No transfer to a person is possible on this call. Do not promise one: "
    "apologise and offer to take a message or a callback number (then call take_message).",
    "already_transferring": "A transfer is already under way.",
    "noted": "Tell the caller honestly that you cannot answer that, and ask whether you can "
    "help with something else or whether they can put it another way.",
}


def transfer_wording(locale: str) -> dict[str, str]:
    """The transfer wording for a locale (its language; English when not translated)."""
    return TRANSFER_WORDING.get(locale.split("-")[0].lower(), TRANSFER_WORDING["en"])


# --- callback continuity (issue 17): the policy is data, next to this file ------------------
CONTINUITY = json.loads(Path(__file__).with_name("support_agent_continuity.json").read_text())
SENSITIVE = [re.compile(p, re.IGNORECASE) for p in CONTINUITY["sensitive_patterns"]]
PRIOR_NOTES = PriorNotes(
    unverified=CONTINUITY["prior_notes"]["unverified"],
    verified=CONTINUITY["prior_notes"]["verified"],
    message_taken=CONTINUITY["prior_notes"]["message_taken"],
    message_text=CONTINUITY["prior_notes"]["message_text"],
)
VERIFY_ATTEMPTS = 3


def is_sensitive(text: str) -> bool:
    """Account and order numbers, addresses, dates of birth: withheld until verification."""
    return any(p.search(text) for p in SENSITIVE)


def topic_of(messages: Sequence[dict[str, Any]]) -> str | None:
    """The earlier call's topic: the last tool it used, else the caller's words."""
    tools = CONTINUITY["topic_tools"]
    for m in reversed(messages):
        for call in m.get("tool_calls") or ():
            topic = tools.get(call.get("function", {}).get("name"))
            if topic:
                return str(topic)
    said = " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    said = said.lower()
    for topic, words in CONTINUITY["topic_keywords"].items():
        if any(w in said for w in words):
            return str(topic)
    return "other" if said.strip() else None


def welcome_back(language: str, topic: str | None) -> str:
    """'Welcome back — we were talking about your order. Shall we continue?' in the language."""
    lang = language if language in CONTINUITY["welcome_back"] else "en"
    topics = CONTINUITY["topics"][lang]
    return str(CONTINUITY["welcome_back"][lang]).format(
        topic=topics.get(topic or "other", topics["other"])
    )


def start_over_phrases() -> list[str]:
    """Every language's phrases: a caller may switch language when starting over."""
    return [p for phrases in CONTINUITY["start_over"].values() for p in phrases]


class CallerVerification:
    """The ``verify_caller`` tool: a PIN or date of birth against the bot's account lookup."""

    def __init__(self, caller: str, prior: PriorConversation) -> None:
        self.account = CONTINUITY["demo_accounts"].get(identifiable_caller(caller) or "")
        self.prior = prior
        self.attempts = 0

    async def verify_caller(self, pin: str = "", date_of_birth: str = "") -> dict[str, Any]:
        """Verify the caller before discussing details of their earlier call: their PIN, or
        their date of birth (YYYY-MM-DD).

        Args:
            pin: The caller's PIN.
            date_of_birth: YYYY-MM-DD.
        """
        # On success the earlier call's details reach the model.
        if self.prior.verified:
            return {"verified": True}
        if self.attempts >= VERIFY_ATTEMPTS:
            return {"verified": False, "reason": "too many attempts; offer a colleague"}
        self.attempts += 1
        account = self.account or {}
        digits = re.sub(r"\D", "", pin)
        dob = re.sub(r"\D", "", date_of_birth)
        ok = bool(
            (digits and digits == account.get("pin"))
            or (dob and dob == re.sub(r"\D", "", str(account.get("date_of_birth", ""))))
        )
        if ok:
            self.prior.verify()
            logger.info("caller verified: earlier call details released to the model")
        return {"verified": ok}


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


def _callback_locale(call: Call, stores: Any, earlier: str | None) -> LocaleRow | None:
    """A callback continues in the earlier call's language, unless this call chose one."""
    if not earlier or "locale" in call.custom_parameters:
        return None
    return next((row for row in stores.locales.rows_now() if row.locale == earlier), None)


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


def _sip_transfer_for(
    call: Call,
    recorder: TranscriptRecorder,
    stores: Any,
    locale: str,
    trigger: dict[str, str],
) -> SipHandoff | None:
    """Blind REFER to TRANSFER_TO after the handoff line (a PBX cannot play our whisper)."""
    try:
        targets = sip_targets(call.settings.transfer_to, call.control.peer_host)
    except ValueError as exc:
        logger.error("%s: escalations take a message instead", exc)
        return None
    if not targets:
        return None
    words = transfer_wording(locale)
    return SipHandoff(
        call.control,
        targets,
        call_id=call.call_id,
        recorder=recorder,
        sessions=stores.sessions,
        brief=lambda reason, summary: words["brief"].format(reason=reason, summary=summary),
        nobody_free=words["nobody_free"],
        trigger=lambda: trigger.get("by", "policy"),
        notify_timeout_s=call.settings.transfer_ring_timeout_s + 10.0,
    )


def _transfer_for(
    call: Call,
    recorder: TranscriptRecorder,
    stores: Any,
    locale: str,
    trigger: dict[str, str],
) -> Handoff | SipHandoff | None:
    """Warm transfer over the carrier's REST API where the call came from Twilio, Telnyx or
    Vonage and TRANSFER_TO, the carrier's keys and PUBLIC_URL are set; a REFER on a direct SIP
    call with TRANSFER_TO; None = no transfer path (a message is taken)."""
    if call.carrier == "sip" and call.control is not None:
        return _sip_transfer_for(call, recorder, stores, locale, trigger)
    if call.custom_parameters.get(RESUME_PARAM):
        return None  # a caller nobody could take is not put on hold again in the same call
    words = transfer_wording(locale)

    def wording(reason: str, summary: str) -> TransferWording:
        return TransferWording(
            brief=words["brief"].format(reason=reason, summary=summary),
            accept_prompt=words["accept"],
            caller_gone=words["gone"],
            language=locale,
            hold_line=words["hold"],
        )

    common: dict[str, Any] = {
        "recorder": recorder,
        "sessions": stores.sessions,
        "transcripts": stores.transcripts,
        "wording": wording,
        "trigger": lambda: trigger.get("by", "policy"),
        "heartbeat_interval_s": call.settings.heartbeat_interval_s,
    }
    if call.carrier == "twilio":
        config = TransferConfig.from_settings(call.settings)
        if config is None:
            return None
        return TwilioHandoff(config, call_sid=call.call_id, called=call.called, **common)
    if call.carrier == "telnyx" and call.stream_url is not None:
        telnyx = TelnyxTransferConfig.from_settings(call.settings)
        if telnyx is None:
            return None
        return TelnyxHandoff(
            telnyx, call_id=call.call_id, called=call.called, stream_url=call.stream_url, **common
        )
    if call.carrier == "vonage" and call.stream_url is not None:
        vonage = VonageTransferConfig.from_settings(call.settings)
        if vonage is None:
            return None
        return VonageHandoff(
            vonage, call_id=call.call_id, called=call.called, stream_url=call.stream_url, **common
        )
    return None


def _escalation(
    call: Call,
    llm: Any,
    recorder: TranscriptRecorder,
    stores: Any,
    locale: str,
    on_escalated: Callable[[str, str], None] | None = None,
    on_message: Callable[[str, str], None] | None = None,
    on_hold: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Escalation, EscalationParams, Callable[[dict[str, Any]], dict[str, Any]]]:
    """The escalation (warm transfer where there is a path, else a message), its tools, and
    what a tool answers the model about an escalation's outcome."""
    words = transfer_wording(locale)
    trigger = {"by": "policy"}
    handoff = _transfer_for(call, recorder, stores, locale, trigger)
    if isinstance(handoff, VonageHandoff):
        handoff.on_hold = on_hold  # Vonage leaves the bot's websocket open: end it

    async def record(reason: str, summary: str) -> None:
        # Which trigger started it (request, loop, sentiment, confidence, tool), for the record.
        trigger["by"] = escalation.trigger or "policy"
        await recorder.mark_escalated(reason, summary)
        if on_escalated is not None:  # e.g. kept for a callback (issue 17)
            on_escalated(reason, summary)
        if handoff is None:  # no transfer: the record says so; take_message completes it
            await take_message_record(reason, summary, trigger["by"])

    async def take_message_record(reason: str, summary: str, by: str) -> None:
        values = {
            "escalation": {
                "reason": reason,
                "summary": summary,
                "trigger": by,
                "outcome": "unavailable",
                "started_at": time.time(),
            }
        }
        recorder.meta.update(values)
        if recorder.retaining:
            await stores.sessions.set_meta(call.call_id, values)

    escalation = Escalation(record=record, transfer=handoff)
    if isinstance(handoff, SipHandoff):
        handoff.escalation = escalation  # the REFERs end it: transferred, or back to the bot

    async def escalate_to_human(reason: str, summary: str = "") -> dict[str, Any]:
        """Transfer the caller to a human agent. Use when the caller asks for a person, when
        you cannot help, or when the caller is upset.

        Args:
            reason: Why the call is escalated.
            summary: Two sentences for the agent: who calls and what they need.
        """
        return escalation_outcome(await escalation.escalate(reason, summary, trigger="tool"))

    def escalation_outcome(result: dict[str, Any]) -> dict[str, Any]:
        status = str(result.get("status", ""))
        result["instructions"] = ESCALATION_INSTRUCTIONS.get(status, "")
        if status != "noted":  # noted: cannot_help, not escalated (yet); the model answers
            result["say"] = words["unavailable"] if status == "unavailable" else words["handoff"]
        return result

    async def take_message(message: str, callback_number: str = "") -> dict[str, Any]:
        """Store a message and/or callback number for a colleague, when no person can take
        the call.

        Args:
            message: The caller's message.
            callback_number: Where the caller wants to be called back, if given.
        """
        if "escalation" not in recorder.meta:
            await take_message_record("caller left a message", "", "tool")
        result = await take_message_for(
            recorder, stores.sessions, call.call_id, message, callback_number or call.caller
        )
        if on_message is not None:  # a callback is told its message was taken (issue 17)
            on_message(message, callback_number or call.caller)
        result["say"] = words["message_taken"]
        return result

    # Each tool declared once: its schema comes from the signature and docstring.
    llm.register_function(escalate_to_human, cancel_on_interruption=False)
    llm.register_function(take_message, cancel_on_interruption=False)
    params = EscalationParams(handoff_line=words["handoff"], unavailable_line=words["unavailable"])
    if isinstance(handoff, SipHandoff):  # the bot keeps the call while the REFERs go
        params.transfer_timeout_s = handoff.max_duration_s
    return escalation, params, escalation_outcome


async def bot(call: Call) -> Pipeline:
    """Build the support agent's pipeline for one call."""
    settings = call.settings
    stores = await shared_stores(settings)
    # A caller nobody could take comes back to us: the same conversation carries on (issue 11).
    resuming = call.custom_parameters.get(RESUME_PARAM) == "transfer"
    # A caller whose earlier call ended calls back: that conversation carries on (issue 17).
    continuity = CallerContinuity.for_call(settings, stores.continuity, call.caller, call.call_id)
    earlier: ResumableConversation | None = await continuity.begin()
    if resuming:
        # The same call back from a transfer nobody took: the session store restores it (and
        # this call keeps the caller's lease, so the message it takes reaches a callback).
        earlier = None
    # Chosen by the server from the locale table (the database, refreshed in the background).
    locale = _callback_locale(call, stores, earlier.locale if earlier else None) or call.locale_row
    tag = locale.locale if locale else call.locale
    texts = LocaleTexts.for_locale(tag)
    greeting = locale.greeting if locale else "Hello, how can I help you today?"
    policy = consent_policy(call, locale, stores)
    prompts = consent_prompts(call, tag)
    prior = PriorConversation(earlier, notes=PRIOR_NOTES) if earlier else None
    if earlier is not None:
        greeting = welcome_back(tag.split("-")[0].lower(), earlier.topic)
    resumed = None
    if resuming:
        greeting = transfer_wording(tag)["nobody_free"]
        resumed = await stores.sessions.load(call.call_id)
        if resumed is not None and resumed.meta.get("consent"):
            policy = "none"  # asked and answered earlier in this call

    stt = stt_from_settings(settings, locale, phrases=OFFLINE_PHRASES)
    # LLM_FALLBACK_TEXT when the operator set it, else the locale's line.
    fallback = (
        settings.llm_fallback_text
        if "llm_fallback_text" in settings.model_fields_set
        else texts.text("llm.fallback")
    )
    llm = llm_from_settings(settings, intents=localized_intents(texts), fallback_text=fallback)
    tts = tts_from_settings(settings, locale)
    language = (locale.locale if locale else call.locale).split("-")[0].lower()
    outage_lines = OUTAGE_LINES.get(language, OUTAGE_LINES["en"])
    # Said from the cache when a provider is down (the LLM's fallback line too).
    tts.prerender(*outage_lines.all(), llm.fallback_text)

    # Tools come from the functions registered on the LLM below.
    context = ResumableContext(
        SYSTEM_PROMPT,
        max_turns=settings.context_turns,
        summarizer=llm,  # both the OpenAI service and the scripted dialog summarize
        prior=prior,
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
    keeper = ContinuityKeeper(
        context,
        continuity,
        require_consent=policy != "none",
        is_sensitive=is_sensitive,
        topic_of=topic_of,
        locale=tag,
    )
    if resumed is not None:
        # After the keeper: the resumed turns are part of what a callback continues from.
        resume_conversation(resumed, context, recorder)
    escalation, escalation_params, outcome = _escalation(
        call,
        llm,
        recorder,
        stores,
        tag,
        on_escalated=keeper.mark_escalated,
        on_message=keeper.mark_message_taken,
        on_hold=lambda: escalation_policy.push_frame(
            EndTaskFrame(reason="caller on hold for a transfer"), FrameDirection.UPSTREAM
        ),
    )

    async def transfer_returned(state: EscalationState, detail: str) -> None:
        # A SIP transfer nobody took: the bot has said so; the model must now offer a message.
        if state is EscalationState.FAILED and detail == NOBODY_TOOK:
            context.add_message(
                {"role": "system", "content": ESCALATION_INSTRUCTIONS["unavailable"]}
            )

    escalation.add_listener(transfer_returned)
    # The triggers read the call's language (request patterns, contractions, sentiment
    # lexicon: the locale data) and the handoff line is said in it.
    escalation_params = dataclasses.replace(
        escalation_params,
        locale=tag,
        handoff_line=texts.text("escalation.handoff"),
        sentiment_threshold=settings.escalation_sentiment_threshold,
    )
    escalation_policy = EscalationPolicy(escalation, context, escalation_params)

    async def cannot_help(reason: str = "") -> dict[str, Any]:
        # Confidence failure: the second one in the call escalates (trigger "confidence").
        return outcome(await escalation_policy.cannot_help(reason or "no reason given"))

    llm.register_function(
        "cannot_help", cannot_help, CANNOT_HELP_TOOL, cancel_on_interruption=False
    )
    if prior is not None:
        verification = CallerVerification(call.caller, prior)
        llm.register_function(verification.verify_caller)

        async def start_over() -> dict[str, Any]:
            """The caller does not want to continue the earlier call: start afresh."""
            await keeper.start_over()
            return {"status": "started over"}

        llm.register_function(start_over)
    llm.register_function(order_status)
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

    transport_in, transport_out = call.transport.input(), call.transport.output()
    # The call recording (RECORDING=on): right after the compliance processors, so a payment
    # pause or a consent answer takes effect the moment it is decided.
    recording = recording_for_call(call, require_consent=policy != "none")
    if recording is not None:
        recording.attach(transport_in, transport_out)
        compliance.append(recording)

    return Pipeline(
        [
            transport_in,
            stt,
            *compliance,
            # Caller speech over the bot: a backchannel resumes it, a barge-in interrupts it.
            InterruptionArbiter(interruption_params(settings), locale=tag),
            SilenceArtifactFilter(window_s=settings.silence_artifact_window_s),
            escalation_policy,
            StartOverDetector(keeper, start_over_phrases()),
            user,
            *opening,
            OutagePolicy(outage_lines),
            llm,
            tts,
            transport_out,
            assistant,
            GoodbyeHangup(texts.phrases("goodbye.phrases")),
            recorder,
            keeper,
        ]
    )
