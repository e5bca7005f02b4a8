"""What a preemptive reply was prepared from, and when two transcripts say the same thing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PREEMPTIVE_METRIC", "Preemption", "normalized_words"]

# MetricsFrame names: preemptive_started, preemptive_used, preemptive_discarded (value 1 each).
PREEMPTIVE_METRIC = "preemptive_"

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def normalized_words(text: str) -> tuple[str, ...]:
    """The words of ``text``, lower-cased, without punctuation ("Yes, four." -> yes four)."""
    return tuple(w.replace("’", "'") for w in _WORD.findall(text.casefold()))


@dataclass(slots=True)
class Preemption:
    """A reply asked for before the caller's turn was confirmed."""

    reply_id: int
    words: tuple[str, ...]  # the transcript it answers, normalised
    source: str  # "interim" (words still being recognised) or "final"
    before: list[dict[str, Any]] = field(default_factory=list)  # the messages before the turn
