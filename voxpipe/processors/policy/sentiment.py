"""Strong negative sentiment, per language, with VADER (vaderSentiment: offline, rule based,
handles negation, intensifiers, "but" and exclamation marks).

English uses VADER's own lexicon. The other shipped languages use VADER's analyser with a
lexicon file of their own (``voxpipe/config/sentiment/<lang>.txt``, VADER's format: word, tab,
valence from -4 to 4) and the locale's negation, intensifier and contrast words
(``sentiment.negations`` / ``sentiment.boosters`` / ``sentiment.contrast`` in the locale
texts), which are mapped to the English words VADER's rules know ("not", "very", "but") before
scoring, so "ce n'est pas terrible" is negated like "it is not terrible". Accents are ignored
on both sides (an STT may drop them).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from voxpipe.config.locale_texts import LocaleTexts

__all__ = ["SentimentDetector", "sentiment_score"]


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.replace("’", "'"))
    return "".join(c for c in text if not unicodedata.combining(c))


@functools.lru_cache(maxsize=8)
def _analyser(language: str) -> SentimentIntensityAnalyzer:
    """VADER for a language (English: its own lexicon); loaded once per process."""
    lexicon = resources.files("voxpipe.config.sentiment").joinpath(f"{language}.txt")
    if language == "en" or not lexicon.is_file():
        return SentimentIntensityAnalyzer()
    with resources.as_file(lexicon) as path:
        analyser = SentimentIntensityAnalyzer(lexicon_file=str(path))
    analyser.lexicon = {_plain(k).lower(): v for k, v in analyser.lexicon.items()}
    return analyser


@dataclass(slots=True)
class _Mapping:
    rx: re.Pattern[str] | None
    to: dict[str, str]


@functools.lru_cache(maxsize=32)
def _mapping(locale: str) -> _Mapping:
    texts = LocaleTexts.for_locale(locale)
    to: dict[str, str] = {}
    for key, english in (
        ("sentiment.negations", "not"),
        ("sentiment.boosters", "very"),
        ("sentiment.contrast", "but"),
    ):
        if texts.has(key):
            to.update({_plain(w).lower(): english for w in texts.phrases(key)})
    if not to:
        return _Mapping(None, {})
    body = "|".join(re.escape(w) for w in sorted(to, key=len, reverse=True))
    return _Mapping(re.compile(rf"(?<![\w'])({body})(?![\w'])", re.I), to)


def _language(locale: str) -> str:
    return (locale.strip().replace("_", "-").split("-")[0] or "en").lower()


def sentiment_score(text: str, locale: str = "en") -> float:
    """VADER's compound score of ``text`` in ``locale``'s language: -1 (very negative) to 1."""
    language = _language(locale)
    plain = _plain(text)
    if language != "en":
        mapping = _mapping(locale)
        if mapping.rx is not None:
            # Elided forms ("n'est", "l'attente") split so each word is scored on its own.
            plain = re.sub(r"(?<=\w)'(?=\w)", "' ", plain)
            plain = mapping.rx.sub(lambda m: mapping.to[m.group(0).lower()], plain)
    return float(_analyser(language).polarity_scores(plain)["compound"])


@dataclass(slots=True)
class SentimentDetector:
    """Escalates on ``turns`` strongly negative utterances (compound score at or below
    ``threshold``) in a call, or on one at or below ``severe``."""

    locale: str = "en"
    threshold: float = -0.5
    severe: float = -0.85
    turns: int = 2
    scores: list[float] = field(default_factory=list)

    def observe(self, text: str) -> bool:
        """Score one utterance; True when the caller is upset enough to escalate."""
        score = sentiment_score(text, self.locale)
        if score <= self.threshold:
            self.scores.append(score)
        if score <= min(self.severe, self.threshold) or len(self.scores) >= self.turns:
            # Counted afresh: after an escalation that could not transfer, a calm utterance
            # must not escalate again on the same two.
            self.scores.clear()
            return True
        return False
