"""Scenario results and the checks of their expectations (``voxpipe test``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from voxpipe.testing.scenario_schema import Expect, Turn

__all__ = ["Failure", "ScenarioResult", "TurnOutcome", "check_stored", "check_turn", "stored_text"]


@dataclass(slots=True)
class Failure:
    """One expectation that did not hold: where, what was expected, what happened."""

    turn: str
    expected: str
    happened: str

    def lines(self) -> list[str]:
        return [
            f"  {self.turn}",
            f"    expected: {self.expected}",
            f"    happened: {self.happened}",
        ]


@dataclass(slots=True)
class TurnOutcome:
    """What the bot did in one turn."""

    turn: Turn
    reply: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)
    escalated: bool = False
    hangup: bool = False
    latency_ms: float | None = None
    bot_spoke: bool = False


@dataclass(slots=True)
class ScenarioResult:
    """The outcome of one scenario: passed, or the failures; what each turn did."""

    name: str
    path: str
    failures: list[Failure] = field(default_factory=list)
    turns: list[TurnOutcome] = field(default_factory=list)
    error: str | None = None  # the run itself broke (the bot raised, ...)
    call_seconds: float = 0.0  # on the call clock
    wall_seconds: float = 0.0
    end_reason: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None

    def report(self) -> str:
        """Human-readable: one line when it passed, the turn/expected/happened of each failure."""
        head = f"{'PASS' if self.passed else 'FAIL'} {self.path or self.name}"
        if self.passed:
            return f"{head} ({len(self.turns)} turns, {self.call_seconds:.1f} s of call)"
        lines = [head]
        if self.error:
            lines.append(f"  error: {self.error}")
        for f in self.failures:
            lines += f.lines()
        return "\n".join(lines)


# ---------------------------------------------------------------------------- checks


def check_turn(o: TurnOutcome) -> list[Failure]:
    """The failed expectations of one turn (all but ``stored`` / ``not_stored``)."""
    out: list[Failure] = []
    e, t = o.turn.expect, o.turn

    def fail(expected: str, happened: str) -> None:
        out.append(Failure(t.describe(), expected, happened))

    said = f"the bot said {o.reply!r}" if o.reply else "the bot said nothing"
    if e.reply_matches is not None and not e.reply_matches.search(o.reply):
        fail(f"reply_matches /{e.reply_matches.pattern}/", said)
    if e.reply_not_matches is not None and e.reply_not_matches.search(o.reply):
        fail(f"reply_not_matches /{e.reply_not_matches.pattern}/", said)
    if e.tool is not None:
        called = [c for c in o.tools if c["name"] == e.tool]
        if not called or (e.args and not any(_subset(e.args, c["arguments"]) for c in called)):
            want = f"tool {e.tool}" + (f" with args {_js(e.args)}" if e.args else "")
            calls = ", ".join(f"{c['name']}({_js(c['arguments'])})" for c in o.tools)
            fail(want, f"tools called: {calls}" if calls else "no tool was called")
    if e.no_reply is not None:
        silent = not o.reply and not o.bot_spoke
        if e.no_reply and not silent:
            fail("no_reply", said)
        elif not e.no_reply and silent:
            fail("a reply (no_reply: false)", "the bot said nothing")
    if e.escalated is not None and e.escalated != o.escalated:
        fail(
            f"escalated: {str(e.escalated).lower()}",
            "the call was escalated to a person" if o.escalated else "no escalation",
        )
    if e.hangup is not None and e.hangup != o.hangup:
        fail(
            f"hangup: {str(e.hangup).lower()}",
            "the bot ended the call" if o.hangup else f"the call went on ({said})",
        )
    if e.max_latency_ms is not None:
        if o.latency_ms is None:
            fail(f"max_latency_ms {e.max_latency_ms:g}", "the bot did not answer")
        elif o.latency_ms > e.max_latency_ms:
            fail(
                f"max_latency_ms {e.max_latency_ms:g}",
                f"the bot started answering {o.latency_ms:g} ms after the caller stopped",
            )
    return out


def check_stored(stored: str, outcomes: list[TurnOutcome]) -> list[Failure]:
    """The failed ``stored`` / ``not_stored`` expectations, against everything stored."""
    out: list[Failure] = []
    checks = [o for o in outcomes if o.turn.expect.stored or o.turn.expect.not_stored]
    flat = " ".join(stored.split()).lower()
    digits = re.sub(r"\D", "", stored)
    for o in checks:
        e: Expect = o.turn.expect
        for text in e.stored:
            if " ".join(text.split()).lower() not in flat:
                shown = stored[:200] + ("..." if len(stored) > 200 else "")
                out.append(
                    Failure(
                        o.turn.describe(),
                        f"stored {text!r}",
                        f"the stores hold {shown!r}" if stored else "nothing was stored",
                    )
                )
        for text in e.not_stored:
            needle = re.sub(r"\D", "", text)
            # A number may be stored spaced or dashed: compare digits too.
            leaked = " ".join(text.split()).lower() in flat or (
                len(needle) >= 6 and needle in digits
            )
            if leaked:
                out.append(Failure(o.turn.describe(), f"not_stored {text!r}", "the stores hold it"))
    return out


async def stored_text(call: Any) -> str:
    """Everything the call left in the (scratch) stores: transcript, session turns and meta."""
    from voxpipe.state.shared import shared_stores

    stores = await shared_stores(call.settings)
    parts: list[str] = []
    transcript = await stores.transcripts.read(call.call_id, reader="voxpipe test")
    if transcript is not None:
        for turn in transcript.turns:
            parts.append(turn.text)
            parts += [json.dumps(c, default=str) for c in turn.tool_calls]
        parts.append(json.dumps(transcript.metadata, default=str))
        if transcript.escalation_reason:
            parts.append(transcript.escalation_reason)
    session = await stores.sessions.load(call.call_id)
    if session is not None:
        parts += [t.text for t in session.turns]
        parts.append(json.dumps(session.meta, default=str))
    return "\n".join(p for p in parts if p)


def _subset(want: Any, got: Any) -> bool:
    """``want`` is contained in ``got``: dict keys recursively, other values equal (or as text)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(
            k in got and _subset(v, got[k]) for k, v in want.items()
        )
    if want == got:
        return True
    return not isinstance(want, dict | list) and str(want) == str(got)


def _js(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
