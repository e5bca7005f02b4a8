"""Matching what a caller said against phrase lists (from the locale data), forgivingly.

Case, punctuation, typographic apostrophes and accents are ignored (an STT may write "si" for
"sí" or "nao" for "não"), and a phrase only matches whole words ("no" is not in "know").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["PhraseMatcher", "normalize_speech", "yes_or_no"]

_NOT_WORD = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")


def normalize_speech(text: str) -> str:
    """Lower case, no accents, no punctuation but apostrophes, single spaces."""
    text = unicodedata.normalize("NFKD", text.lower().replace("’", "'").replace("`", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text)).strip()


class PhraseMatcher:
    """Finds which of a list of phrases occur in an utterance (as whole words)."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = tuple(dict.fromkeys(p for p in map(normalize_speech, phrases) if p))
        body = "|".join(re.escape(p) for p in sorted(self.phrases, key=len, reverse=True))
        self._rx = re.compile(rf"(?<![\w'])({body})(?![\w'])") if body else None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where phrases occur in ``normalize_speech(text)`` (longest phrase first)."""
        if self._rx is None:
            return []
        return [m.span() for m in self._rx.finditer(normalize_speech(text))]

    def search(self, text: str) -> bool:
        """True when one of the phrases is in ``text``."""
        return bool(self.spans(text))


def _outside(spans: list[tuple[int, int]], others: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] for o in others)]


def yes_or_no(text: str, yes: PhraseMatcher, no: PhraseMatcher) -> bool | None:
    """True for a yes, False for a no, None when neither or both ("yes, no, wait").

    A phrase inside a longer phrase of the other list does not count ("agree" in
    "I don't agree").
    """
    yes_spans, no_spans = yes.spans(text), no.spans(text)
    yes_spans, no_spans = _outside(yes_spans, no_spans), _outside(no_spans, yes_spans)
    if yes_spans and not no_spans:
        return True
    if no_spans and not yes_spans:
        return False
    return None
