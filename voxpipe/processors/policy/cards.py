"""Card numbers in transcripts: found (Luhn-valid, 13-19 digits, written or spoken) and redacted.

What counts as a digit: written digits (``4111 1111-1111``), digit words (``four one one``,
``oh`` and ``o`` for zero, ``nought``, ``niner``) and ``double`` / ``triple`` before a digit
(``double five`` is ``55``). A *run* is a sequence of digits separated only by spaces, dashes,
commas or full stops. A run is a card number when it has 13 to 19 digits and passes the
Luhn check. A run longer than any card (more than 19 digits) is checked for a card at its start
and at its end: a card read straight on with its expiry date or security code.

Runs of 13-19 digits failing the Luhn check are left alone on purpose (order numbers, account
references): only a card number is redacted, so the caller can still give the others. Phone
numbers (at most 15 digits, usually 10-12) rarely reach 13 digits and then mostly fail Luhn.
A card the STT mis-heard by one digit fails Luhn too and is *not* caught here: asking for card
details only inside a payment pause (``PaymentGuard``) is what keeps those out of the record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CARD_PLACEHOLDER",
    "CardMatch",
    "count_digits",
    "ends_with_digits",
    "find_card_numbers",
    "redact_continued_card",
    "trailing_run",
    "luhn_valid",
    "mask_digit_runs",
    "redact_card_numbers",
]

CARD_PLACEHOLDER = "[card number]"
MIN_DIGITS = 13
MAX_DIGITS = 19

_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "nought": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "niner": "9",
}
_REPEAT = {"double": 2, "triple": 3}

# One digit token: a group of written digits, a digit word, or double/triple + a digit word
# or a single written digit. Word boundaries keep "one" out of "someone" and "oh" out of "ohm".
_WORD_ALT = "|".join(sorted(_DIGIT_WORDS, key=len, reverse=True))
_TOKEN = re.compile(
    rf"(?<![\w])(?:(?P<rep>double|triple)[\s-]+(?P<repd>{_WORD_ALT}|\d)|(?P<word>{_WORD_ALT})|(?P<num>\d+))(?![\w])",
    re.IGNORECASE,
)
# What may sit between two digit tokens of one run.
_GAP = re.compile(r"[\s,.\-]*")


@dataclass(slots=True, frozen=True)
class CardMatch:
    """A card number found in a text: where it is (``start``:``end``) and its digits."""

    start: int
    end: int
    digits: str


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` (only 0-9) pass the Luhn checksum that every card number carries."""
    if not digits or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _token_digits(m: re.Match[str]) -> str:
    if m.group("rep"):
        d = m.group("repd").lower()
        return _DIGIT_WORDS.get(d, d) * _REPEAT[m.group("rep").lower()]
    if m.group("word"):
        return _DIGIT_WORDS[m.group("word").lower()]
    return m.group("num")


def _runs(text: str) -> list[list[tuple[int, int, str]]]:
    """Digit tokens of ``text`` as (start, end, digits), grouped in runs."""
    runs: list[list[tuple[int, int, str]]] = []
    current: list[tuple[int, int, str]] = []
    for m in _TOKEN.finditer(text):
        if current and _GAP.fullmatch(text, current[-1][1], m.start()) is None:
            runs.append(current)
            current = []
        current.append((m.start(), m.end(), _token_digits(m)))
    if current:
        runs.append(current)
    return runs


def _is_card(digits: str) -> bool:
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and luhn_valid(digits)


def _card_in_run(run: list[tuple[int, int, str]]) -> CardMatch | None:
    digits = "".join(t[2] for t in run)
    if len(digits) < MIN_DIGITS:
        return None
    if len(digits) <= MAX_DIGITS:
        return CardMatch(run[0][0], run[-1][1], digits) if _is_card(digits) else None
    # Longer than any card: a card followed (or preceded) by more digits, longest first.
    best: CardMatch | None = None
    for i in range(len(run)):  # suffixes run[i:], prefixes run[: len(run) - i]
        for part in (run[: len(run) - i], run[i:]):
            found = "".join(t[2] for t in part)
            if _is_card(found) and (best is None or len(found) > len(best.digits)):
                best = CardMatch(part[0][0], part[-1][1], found)
    return best


def find_card_numbers(text: str) -> list[CardMatch]:
    """Every card number in ``text``, in order."""
    found = []
    for run in _runs(text):
        match = _card_in_run(run)
        if match is not None:
            found.append(match)
    return found


def ends_with_digits(text: str) -> bool:
    """True if ``text`` ends with a digit (written or spoken): a number may go on in the next
    transcript, so the two must be checked together."""
    runs = _runs(text)
    return bool(runs) and _GAP.fullmatch(text, runs[-1][-1][1]) is not None


def trailing_run(text: str) -> str:
    """The digit run ``text`` ends with, as written ("" if it does not end with a digit)."""
    runs = _runs(text)
    if not runs or _GAP.fullmatch(text, runs[-1][-1][1]) is None:
        return ""
    return text[runs[-1][0][0] :]


def count_digits(text: str) -> int:
    """How many digits (written or spoken) ``text`` holds."""
    return sum(len(t[2]) for run in _runs(text) for t in run)


def redact_continued_card(
    before: str, text: str, placeholder: str = CARD_PLACEHOLDER
) -> tuple[str, int]:
    """``text`` with the end of a card number that ``before`` (the digit run a previous
    transcript ended with) began replaced by ``placeholder``, and 1 if there was one (else 0).
    For a caller who paused mid-number for longer than a transcript is held: the second part
    is redacted, so the whole number is never kept anywhere."""
    if not before:
        return text, 0
    offset = len(before) + 1
    for m in find_card_numbers(f"{before} {text}"):
        if m.start < len(before) and m.end > offset:
            return placeholder + text[m.end - offset :], 1
    return text, 0


def redact_card_numbers(text: str, placeholder: str = CARD_PLACEHOLDER) -> tuple[str, int]:
    """``text`` with each card number replaced by ``placeholder``, and how many were replaced."""
    matches = find_card_numbers(text)
    if not matches:
        return text, 0
    out: list[str] = []
    at = 0
    for m in matches:
        out.append(text[at : m.start])
        out.append(placeholder)
        at = m.end
    out.append(text[at:])
    return "".join(out), len(matches)


def mask_digit_runs(text: str, placeholder: str = CARD_PLACEHOLDER, min_digits: int = 6) -> str:
    """``text`` with every run of ``min_digits`` or more digits replaced: for partial text (an
    interim transcript) where a card number may be only half said and cannot be checked yet."""
    out: list[str] = []
    at = 0
    for run in _runs(text):
        if sum(len(t[2]) for t in run) >= min_digits:
            out.append(text[at : run[0][0]])
            out.append(placeholder)
            at = run[-1][1]
    out.append(text[at:])
    return "".join(out)
