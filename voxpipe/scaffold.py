"""``voxpipe new bots/NAME.py``: a starter bot with one tool, and its scenario ``bots/NAME.yaml``.

The bot runs offline as written (PocketSphinx, a scripted dialog, espeak-ng) and with the
cloud providers once their keys are set; the scenario is the one ``voxpipe test`` runs.
Existing files are never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["NewBot", "ScaffoldError", "new_bot"]


class ScaffoldError(Exception):
    """A bot that cannot be created where asked (the files exist, or the name is unusable)."""


@dataclass(frozen=True, slots=True)
class NewBot:
    """The files ``new_bot`` wrote."""

    bot: Path
    scenario: Path


BOT_TEMPLATE = '''\
"""{name}: a starter bot with one tool, `next_opening`.

Run it: `voxpipe serve {bot}` (or `voxpipe call {bot} --wav caller.wav`).
Test it: `voxpipe test {scenario}`. Without provider keys it runs offline: PocketSphinx
hears the caller, the INTENTS below stand in for the model, espeak-ng speaks.
"""

from __future__ import annotations

from typing import Annotated

from voxpipe.call import Call
from voxpipe.pipelines import Pipeline
from voxpipe.processors.aggregators import LLMContext, UserContextAggregator
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.llm.factory import llm_from_settings
from voxpipe.processors.llm.scripted import Intent
from voxpipe.processors.stt.factory import stt_from_settings
from voxpipe.processors.tts.factory import tts_from_settings

SYSTEM_PROMPT = (
    "You are the phone assistant of a small shop. Answer in one short sentence. "
    "Use next_opening when the caller asks when the shop opens."
)
OPENING_HOURS = {{"saturday": "open from ten", "sunday": "closed"}}
DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"


async def next_opening(day: Annotated[str, "The day of the week"]) -> dict[str, str]:
    """When the shop opens on a given day."""
    day = day.strip().lower()
    return {{"day": day, "hours": OPENING_HOURS.get(day, "open from nine")}}


# Offline, these rules stand in for the model. They use the same tool: the pattern's named
# group `day` becomes its argument.
INTENTS = [
    Intent(
        "opening",
        patterns=[rf"\\b(?P<day>{{DAYS}})\\b"],
        keywords=["open", "opening"],
        reply="Let me check.",
        tool=next_opening,
        after_tool="On {{day}} we are {{hours}}.",
    ),
    Intent("goodbye", keywords=["bye", "goodbye"], reply="Thanks for calling. Bye!"),
]
# What the offline recogniser listens for (it is near exact with a phrase list).
OFFLINE_PHRASES = [f"when do you open on {{day}}" for day in DAYS.split("|")]
OFFLINE_PHRASES += ["thanks goodbye", "goodbye"]


async def bot(call: Call) -> Pipeline:
    """One call: caller audio -> STT -> context -> LLM (with the tool) -> TTS -> caller."""
    context = LLMContext(SYSTEM_PROMPT)
    llm = llm_from_settings(call.settings, intents=INTENTS)
    # The tool's schema comes from its signature and docstring.
    llm.register_function(next_opening)
    return Pipeline(
        [
            call.transport.input(),
            stt_from_settings(call.settings, call.locale_row, phrases=OFFLINE_PHRASES),
            UserContextAggregator(context),
            llm,
            tts_from_settings(call.settings, call.locale_row),
            call.transport.output(),
            AssistantContextAggregator(context),
        ]
    )
'''

SCENARIO_TEMPLATE = """\
# The scenario of {bot}: `voxpipe test {scenario}` (offline, deterministic).
bot: {bot}
caller: {{from: "+14155550100", country: US}}
settings: {{CONSENT_MODE: "off"}}
turns:
  - caller: "When do you open on Monday?"
    expect: {{tool: next_opening, args: {{day: monday}}, reply_matches: "(?i)nine"}}
  - caller: "When do you open on Saturday?"
    expect: {{tool: next_opening, args: {{day: saturday}}, reply_matches: "(?i)ten"}}
  - caller: "thanks, goodbye"
    expect: {{reply_matches: "(?i)bye"}}
"""


def new_bot(path: str | Path) -> NewBot:
    """Write a starter bot at ``path`` (``bots/NAME.py``) and its scenario next to it.

    Raises ``ScaffoldError`` when either file exists (nothing is written then) or the name
    is not a usable module name.
    """
    bot = Path(path)
    if bot.suffix != ".py":
        if bot.suffix:
            raise ScaffoldError(f"{bot}: a bot is a Python file; name it {bot.stem}.py")
        bot = bot.with_suffix(".py")
    if not bot.stem.isidentifier():
        raise ScaffoldError(
            f"{bot}: use a name made of letters, digits and underscores (e.g. my_bot.py)"
        )
    scenario = bot.with_suffix(".yaml")
    existing = [str(p) for p in (bot, scenario) if p.exists()]
    if existing:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ScaffoldError(
            f"{' and '.join(existing)} already {verb}: voxpipe new does not overwrite files; "
            "pick another name or remove them"
        )
    names = {"name": bot.stem, "bot": bot.as_posix(), "scenario": scenario.as_posix()}
    bot.parent.mkdir(parents=True, exist_ok=True)
    # "x": fails rather than overwrite a file created meanwhile.
    with bot.open("x", encoding="utf-8") as f:
        f.write(BOT_TEMPLATE.format(**names))
    with scenario.open("x", encoding="utf-8") as f:
        f.write(SCENARIO_TEMPLATE.format(**names))
    return NewBot(bot, scenario)
