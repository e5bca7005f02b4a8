"""The scenario file format of ``voxpipe test``: parsing and validation with one-line errors.

A scenario is a YAML mapping (see the README, "Testing your bot")::

    bot: bots/support_agent.py
    caller: {from: "+14155550100", country: US}
    settings: {CONSENT_MODE: "off"}
    latency: {llm_first_token_ms: 300}
    replies:
      - {when: "(?i)hours", say: "We open at eight."}
    turns:
      - caller: "What are your opening hours?"
        expect: {reply_matches: "(?i)open|eight"}

Every problem found is reported (not only the first), each as one line naming the file and
the place in it, so a typo in a key, a bad regex and a missing bot are fixed in one go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EXPECT_KEYS",
    "Expect",
    "Reply",
    "Scenario",
    "ScenarioError",
    "Turn",
    "load_scenario",
    "parse_scenario",
]

TOP_KEYS = ("name", "bot", "caller", "settings", "latency", "replies", "turns")
CALLER_KEYS = ("from", "to", "country", "locale", "carrier", "params")
LATENCY_KEYS = ("stt_ms", "llm_first_token_ms", "llm_token_ms", "tts_ms")
REPLY_KEYS = ("when", "say", "tool", "args", "after_tool")
TURN_KEYS = ("caller", "press", "expect", "pause_ms", "barge_in_ms")
EXPECT_KEYS = (
    "reply_matches",
    "reply_not_matches",
    "tool",
    "args",
    "no_reply",
    "escalated",
    "hangup",
    "max_latency_ms",
    "stored",
    "not_stored",
)
DTMF = re.compile(r"^[0-9*#A-Da-d]+$")


class ScenarioError(ValueError):
    """A scenario that cannot run: ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(slots=True)
class Expect:
    """What one turn must (or must not) produce; None = not checked."""

    reply_matches: re.Pattern[str] | None = None
    reply_not_matches: re.Pattern[str] | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    no_reply: bool | None = None
    escalated: bool | None = None
    hangup: bool | None = None
    max_latency_ms: float | None = None
    stored: list[str] = field(default_factory=list)
    not_stored: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Turn:
    """One step of the call: the caller says something, presses keys, or just waits."""

    index: int
    caller: str | None = None
    press: str | None = None
    expect: Expect = field(default_factory=Expect)
    pause_ms: float = 0.0  # line silence before the caller speaks
    barge_in_ms: float | None = None  # speak this long after the bot started, not after it ended

    def describe(self) -> str:
        if self.caller is not None:
            return f"turn {self.index + 1} (caller: {self.caller!r})"
        if self.press is not None:
            return f"turn {self.index + 1} (press: {self.press!r})"
        return f"turn {self.index + 1} (wait)"


@dataclass(slots=True)
class Reply:
    """A scripted model rule from ``replies:``: when the caller's words match, say / call a tool."""

    when: str
    say: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    after_tool: str | None = None


@dataclass(slots=True)
class Scenario:
    """A validated scenario file."""

    path: Path | None
    name: str
    bot: Path
    caller: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def fail(self, place: str, message: str) -> None:
        self.problems.append(f"{self.where}: {place}: {message}")

    def mapping(self, value: Any, place: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(place, f"must be a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in known:
                hint = _close(str(key), known)
                message = f"unknown key {key!r}{hint} (known: {', '.join(known)})"
                self.problems.append(f"{self.where}: {place + ': ' if place else ''}{message}")
        return {str(k): v for k, v in value.items() if k in known}

    def regex(self, value: Any, place: str) -> re.Pattern[str] | None:
        if not isinstance(value, str):
            self.fail(place, f"must be a regular expression (a string), got {_kind(value)}")
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.fail(place, f"bad regular expression {value!r}: {exc}")
            return None

    def text(self, value: Any, place: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(place, f"must be text, got {_kind(value)}")
            return None
        return str(value)

    def flag(self, value: Any, place: str) -> bool | None:
        if not isinstance(value, bool):
            self.fail(place, f"must be true or false, got {_kind(value)}")
            return None
        return value

    def number(self, value: Any, place: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.fail(place, f"must be a number of milliseconds >= 0, got {value!r}")
            return None
        return float(value)

    def texts(self, value: Any, place: str) -> list[str]:
        items = value if isinstance(value, list) else [value]
        out = [self.text(v, place) for v in items]
        return [t for t in out if t]


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _close(key: str, known: tuple[str, ...]) -> str:
    import difflib

    match = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _expect(c: _Checker, raw: Any, place: str) -> Expect:
    d = c.mapping(raw, place, EXPECT_KEYS)
    e = Expect()
    if "reply_matches" in d:
        e.reply_matches = c.regex(d["reply_matches"], f"{place}.reply_matches")
    if "reply_not_matches" in d:
        e.reply_not_matches = c.regex(d["reply_not_matches"], f"{place}.reply_not_matches")
    if "tool" in d:
        e.tool = c.text(d["tool"], f"{place}.tool")
    if "args" in d:
        if "tool" not in d:
            c.fail(f"{place}.args", "needs `tool` (the arguments of which tool call?)")
        elif not isinstance(d["args"], dict):
            c.fail(f"{place}.args", f"must be a mapping, got {_kind(d['args'])}")
        else:
            e.args = dict(d["args"])
    for key in ("no_reply", "escalated", "hangup"):
        if key in d:
            setattr(e, key, c.flag(d[key], f"{place}.{key}"))
    if "max_latency_ms" in d:
        e.max_latency_ms = c.number(d["max_latency_ms"], f"{place}.max_latency_ms")
    if "stored" in d:
        e.stored = c.texts(d["stored"], f"{place}.stored")
    if "not_stored" in d:
        e.not_stored = c.texts(d["not_stored"], f"{place}.not_stored")
    if e.no_reply and (e.reply_matches is not None):
        c.fail(place, "no_reply: true contradicts reply_matches")
    return e


def _turn(c: _Checker, raw: Any, i: int) -> Turn | None:
    place = f"turns[{i}]"
    if not isinstance(raw, dict):
        c.fail(place, f"must be a mapping such as {{caller: '...'}}, got {_kind(raw)}")
        return None
    d = c.mapping(raw, place, TURN_KEYS)
    turn = Turn(index=i)
    if "caller" in d and "press" in d:
        c.fail(place, "has both `caller` and `press`: one action per turn")
    if "caller" in d:
        turn.caller = c.text(d["caller"], f"{place}.caller")
        if turn.caller is not None and not turn.caller.strip():
            c.fail(f"{place}.caller", "is empty")
    if "press" in d:
        keys = c.text(d["press"], f"{place}.press")
        if keys is not None and not DTMF.match(keys):
            c.fail(f"{place}.press", f"{keys!r} is not keypad keys (0-9, *, #, A-D)")
        turn.press = keys
    if "pause_ms" in d:
        turn.pause_ms = c.number(d["pause_ms"], f"{place}.pause_ms") or 0.0
    if "barge_in_ms" in d:
        if turn.caller is None:
            c.fail(f"{place}.barge_in_ms", "only a `caller` turn can barge in")
        turn.barge_in_ms = c.number(d["barge_in_ms"], f"{place}.barge_in_ms")
    turn.expect = _expect(c, d.get("expect"), f"{place}.expect")
    return turn


def _reply(c: _Checker, raw: Any, i: int) -> Reply | None:
    place = f"replies[{i}]"
    d = c.mapping(raw, place, REPLY_KEYS)
    if not d:
        if isinstance(raw, dict):
            c.fail(place, "needs at least `when` and `say` or `tool`")
        return None
    if "when" not in d:
        c.fail(place, "needs `when` (a regular expression over the caller's words)")
        return None
    if c.regex(d["when"], f"{place}.when") is None:
        return None
    if "say" not in d and "tool" not in d:
        c.fail(place, "needs `say` or `tool`")
    args = d.get("args")
    if args is not None and not isinstance(args, dict):
        c.fail(f"{place}.args", f"must be a mapping, got {_kind(args)}")
        args = None
    return Reply(
        when=str(d["when"]),
        say=c.text(d["say"], f"{place}.say") if "say" in d else None,
        tool=c.text(d["tool"], f"{place}.tool") if "tool" in d else None,
        args=args,
        after_tool=c.text(d["after_tool"], f"{place}.after_tool") if "after_tool" in d else None,
    )


def _settings(c: _Checker, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.fail("settings", f"must be a mapping of setting names to values, got {_kind(raw)}")
        return {}
    from voxpipe.config.settings import VoxpipeSettings

    known = VoxpipeSettings.model_fields
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).lower()
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0].upper()!r}?)" if close else ""
            c.fail("settings", f"unknown setting {key!r}{hint}")
            continue
        out[name] = value
    return out


def _resolve_bot(c: _Checker, raw: Any, base: Path | None) -> Path | None:
    if raw is None:
        c.fail("bot", "missing: name the bot file, e.g. `bot: bots/support_agent.py`")
        return None
    if not isinstance(raw, str) or not raw.strip():
        c.fail("bot", f"must be the path of a bot file, got {_kind(raw)}")
        return None
    # Next to the scenario first (examples sit beside their bots), else from the working dir.
    candidates = [base / raw] if base is not None else []
    candidates.append(Path(raw))
    for path in candidates:
        if path.is_file():
            return path
    c.fail("bot", f"bot file {raw} does not exist")
    return None


def parse_scenario(data: Any, *, path: Path | None = None) -> Scenario:
    """A ``Scenario`` from parsed YAML (a dict); raises ``ScenarioError`` listing every problem."""
    where = str(path) if path is not None else "<scenario>"
    c = _Checker(where)
    if not isinstance(data, dict):
        raise ScenarioError([f"{where}: must be a mapping with `bot` and `turns`"])
    d = c.mapping(data, "", TOP_KEYS)
    bot = _resolve_bot(c, d.get("bot"), path.parent if path is not None else None)
    caller = c.mapping(d.get("caller"), "caller", CALLER_KEYS)
    if "params" in caller and not isinstance(caller["params"], dict):
        c.fail("caller.params", "must be a mapping")
    caller = {k: (v if k == "params" else str(v)) for k, v in caller.items()}
    latency: dict[str, float] = {}
    for key, value in c.mapping(d.get("latency"), "latency", LATENCY_KEYS).items():
        ms = c.number(value, f"latency.{key}")
        if ms is not None:
            latency[key] = ms
    replies_raw = d.get("replies") or []
    if not isinstance(replies_raw, list):
        c.fail("replies", f"must be a list, got {_kind(replies_raw)}")
        replies_raw = []
    replies = [r for i, raw in enumerate(replies_raw) if (r := _reply(c, raw, i)) is not None]
    turns_raw = d.get("turns")
    if not isinstance(turns_raw, list) or not turns_raw:
        c.fail("turns", "missing: a scenario needs a list of turns")
        turns_raw = []
    turns = [t for i, raw in enumerate(turns_raw) if (t := _turn(c, raw, i)) is not None]
    settings = _settings(c, d.get("settings"))
    if c.problems or bot is None:
        raise ScenarioError(c.problems)
    name = str(d.get("name") or (path.stem if path is not None else "scenario"))
    return Scenario(path, name, bot, caller, settings, latency, replies, turns)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{p}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError([f"{p}: {at}not valid YAML: {problem}"]) from exc
    return parse_scenario(data, path=p)
