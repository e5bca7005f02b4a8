"""The escalation triggers that read what the caller says: a request for a person, a question
asked again and again, and (``sentiment.py``) strong negative sentiment; plus the count of the
model's ``cannot_help`` calls.

Every word list and pattern comes from the locale data (``voxpipe/config/texts/<lang>.json``,
keys ``escalation.*``), so each shipped language has its own; the matching is done by
maintained libraries (``re`` for patterns, rapidfuzz for "the same question again").
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.processors.policy.phrases import PhraseMatcher, normalize_speech

__all__ = [
    "CANNOT_HELP_TOOL",
    "ConfidenceCounter",
    "Request",
    "RequestDetector",
    "RepeatDetector",
]

# Clauses: a negation or a question about the bot only reaches the end of its own clause
# ("No, I want a person" is a request; "are you a bot? get me a human" is one too).
_CLAUSES = re.compile(r"[,.;:!?¿¡]+")

CANNOT_HELP_TOOL = {
    "type": "function",
    "function": {
        "name": "cannot_help",
        "description": "Call this (instead of guessing) when you cannot answer the caller's "
        "question or cannot do what they ask. Say nothing about it to the caller; the result "
        "tells you what to say.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "What you cannot answer and why."},
            },
            "required": ["reason"],
        },
    },
}


class Request(enum.Enum):
    """What an utterance says about talking to a person."""

    NONE = "none"
    REQUEST = "request"  # a request for a person: escalate
    AMBIGUOUS = "ambiguous"  # names a person without asking for one: the model confirms


class RequestDetector:
    """Tells a request for a person ("can I speak to someone?") from a question about the
    bot ("am I talking to a human?"), a refusal ("I don't want a human") and a mention
    ("the bill is for someone else"), with the locale's patterns."""

    def __init__(self, texts: LocaleTexts) -> None:
        person = "|".join(
            re.escape(p)
            for p in sorted(
                map(normalize_speech, texts.phrases("escalation.person_words")),
                key=len,
                reverse=True,
            )
        )
        self._person = re.compile(rf"(?<![\w'])({person})(?![\w'])")

        def compile_all(key: str) -> tuple[re.Pattern[str], ...]:
            return tuple(
                re.compile(p.replace("{person}", f"(?:{person})")) for p in texts.phrases(key)
            )

        self._requests = compile_all("escalation.request_patterns")
        self._about_bot = compile_all("escalation.bot_questions")
        self._negations = PhraseMatcher(texts.phrases("escalation.request_negations"))
        # "someone else", "une autre personne": a mention of a third party, not of an agent.
        self._others = PhraseMatcher(texts.phrases("escalation.not_person"))

    def classify(self, text: str) -> Request:
        """REQUEST, AMBIGUOUS (left to the model) or NONE for one utterance."""
        found = Request.NONE
        for clause in _CLAUSES.split(text):
            words = normalize_speech(clause)
            if not words or any(rx.search(words) for rx in self._about_bot):
                continue
            negations = self._negations.spans(words)
            match = next((m for rx in self._requests if (m := rx.search(words))), None)
            if match is not None:
                if not any(start < match.start() for start, _ in negations):
                    return Request.REQUEST
                continue  # "I don't want to talk to a human"
            for start, end in self._others.spans(words):
                words = words[:start] + " " * (end - start) + words[end:]
            if not negations and self._person.search(words):
                found = Request.AMBIGUOUS
        return found


@dataclass(slots=True)
class _Question:
    key: str
    times: int = 1


@dataclass(slots=True)
class RepeatDetector:
    """Counts how often the caller asks the same unresolved question, paraphrases included
    ("what's my balance" = "so what is my balance"), by fuzzy matching (rapidfuzz token_set_ratio:
    word order and extra words around the same question do not matter; WRatio's partial
    matching found "where is my order" in unrelated complaints)
    after the locale's contractions are expanded and its filler words dropped."""

    texts: LocaleTexts
    similarity: float = 88.0  # token_set_ratio (0-100) from which two questions are the same
    min_words: int = 3  # shorter utterances ("yes", "hello?") are not questions
    _open: list[_Question] = field(default_factory=list, init=False)
    _contractions: list[tuple[re.Pattern[str], str]] = field(default_factory=list, init=False)
    _fillers: frozenset[str] = field(default=frozenset(), init=False)
    _resolved: PhraseMatcher | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        for pair in self.texts.phrases("escalation.contractions"):
            short, _, long = pair.partition("=")
            short = normalize_speech(short)
            self._contractions.append(
                (re.compile(rf"(?<![\w']){re.escape(short)}(?![\w'])"), normalize_speech(long))
            )
        self._fillers = frozenset(
            normalize_speech(w) for w in self.texts.phrases("escalation.filler_words")
        )
        self._resolved = PhraseMatcher(self.texts.phrases("escalation.resolved_phrases"))

    def forget(self, text: str) -> None:
        """Stop counting the question ``text`` (it escalated: its count starts over)."""
        key = self.key(text)
        self._open = [q for q in self._open if fuzz.token_set_ratio(key, q.key) < self.similarity]

    def key(self, text: str) -> str:
        """The utterance as compared: normalised, contractions expanded, fillers dropped."""
        words = normalize_speech(text)
        for rx, long in self._contractions:
            words = rx.sub(long, words)
        return " ".join(w for w in words.split() if w not in self._fillers)

    def observe(self, text: str) -> int:
        """How many times this question has now been asked (0: not a question, or resolved)."""
        assert self._resolved is not None
        if self._resolved.search(text):
            self._open.clear()  # the caller got their answer: earlier questions are closed
            return 0
        key = self.key(text)
        if len(key.split()) < self.min_words:
            return 0
        best = process.extractOne(
            key,
            [q.key for q in self._open],
            scorer=fuzz.token_set_ratio,
            score_cutoff=self.similarity,
        )
        if best is None:
            self._open.append(_Question(key))
            return 1
        question = self._open[best[2]]
        question.times += 1
        return question.times


@dataclass(slots=True)
class ConfidenceCounter:
    """Counts the model's ``cannot_help`` calls in a call; ``limit`` of them escalate."""

    limit: int = 2
    reasons: list[str] = field(default_factory=list)

    _since: int = field(default=0, init=False)  # failures since the last escalation

    def failed(self, reason: str) -> bool:
        """Record one; True when the call should now be escalated (the count starts over)."""
        self.reasons.append(reason)
        self._since += 1
        if self._since >= self.limit:
            self._since = 0
            return True
        return False
