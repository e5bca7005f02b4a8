"""The support agent speaks and listens in the call's language, from the locale data: consent
prompts, the escalation handoff and request phrases, the LLM fallback line, goodbye detection."""

from __future__ import annotations

from pathlib import Path

from voxpipe.call import Call, load_bot
from voxpipe.config.locale_texts import locale_phrases, locale_text
from voxpipe.config.locales import load_seed_rows
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.processors.policy.consent import ConsentGate
from voxpipe.processors.policy.escalation import EscalationPolicy
from voxpipe.state.shared import close_shared_stores
from voxpipe.transports.memory import MemoryTransport

BOT = load_bot(Path(__file__).resolve().parents[2] / "bots" / "support_agent.py")


async def test_a_french_call_is_worded_in_french(tmp_path: Path) -> None:
    settings = VoxpipeSettings(  # type: ignore[call-arg]
        _env_file=None, sqlite_path=str(tmp_path / "db.sqlite3"), spool_dir=str(tmp_path / "s")
    )
    row = next(r for r in load_seed_rows() if r.locale == "fr-FR")
    call = Call(
        transport=MemoryTransport(),
        call_id="CAfr",
        settings=settings,
        carrier="twilio",
        caller="+33612345678",
        country="FR",
        locale="fr-FR",
        locale_row=row,
        consent_policy="ivr",
    )
    try:
        pipeline = await BOT(call)
    finally:
        await close_shared_stores()
    by_type = {type(p).__name__: p for p in pipeline._processors}
    gate = by_type["ConsentGate"]
    assert isinstance(gate, ConsentGate) and gate.policy == "ivr"
    assert gate.prompts.prompt == locale_text("fr-FR", "consent.ivr.prompt")
    assert gate.after == row.greeting
    policy = by_type["EscalationPolicy"]
    assert isinstance(policy, EscalationPolicy)
    assert policy.params.handoff_line == locale_text("fr-FR", "escalation.handoff")
    assert policy.evaluate("Je voudrais parler à un conseiller, s'il vous plaît")
    llm = next(p for p in pipeline._processors if hasattr(p, "fallback_text"))
    assert llm.fallback_text == locale_text("fr-FR", "llm.fallback")
    goodbye = by_type["GoodbyeHangup"]
    assert goodbye._goodbye.search("Merci de votre appel. Au revoir !")
    assert "au revoir" in locale_phrases("fr-FR", "goodbye.phrases")


def test_offline_dialog_lines_follow_the_language() -> None:
    from voxpipe.config.locale_texts import LocaleTexts

    localized = BOT.__globals__["localized_intents"](LocaleTexts.for_locale("de-DE"))
    by_name = {i.name: i for i in localized}
    assert by_name["payment"].after_tool == locale_text("de-DE", "payment.details_prompt")
    assert by_name["human"].after_tool == locale_text("de-DE", "escalation.handoff")
    assert by_name["goodbye"].reply == locale_text("de-DE", "goodbye.line")
