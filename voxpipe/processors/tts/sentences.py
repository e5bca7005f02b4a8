"""Split streamed LLM text into sentences, so each can be spoken as soon as it is complete."""

from __future__ import annotations

import re

__all__ = ["SentenceSplitter"]

# A sentence ends at . ! ? or … (closing quotes/brackets may follow) before whitespace, or at
# a line break. Requiring the whitespace means "3.5" or "e.g." mid-stream is not cut early.
_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n+")
# The same end at the very end of the text so far, where no whitespace has come yet: ! ? …
# always, and a full stop right after a letter (after a digit it may be "3.5" in the making).
# Waiting for the next token instead costs one token's time (tens of ms from a real LLM)
# before the first sentence can be spoken.
_END_OF_TEXT = re.compile(r"(?:[!?…]+|(?<=[^\W\d_])\.)[\"'”’)\]]*$")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ave blvd rd no vs etc e.g i.e approx dept est inc ltd co "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)


class SentenceSplitter:
    """Accumulates text fragments and hands back each sentence once its end is seen.

    ``push`` returns the sentences completed by a fragment; ``flush`` returns what is left
    (the end of a reply). Text with no sentence end for ``max_chars`` is cut at its last
    comma or space, so a long run-on sentence does not hold speech back. With ``eager`` (the
    default) a fragment that ends a sentence releases it at once, without waiting for the
    whitespace of the next one (except after digits and abbreviations).
    """

    def __init__(self, max_chars: int = 250, *, eager: bool = True) -> None:
        self.max_chars = max_chars
        self.eager = eager
        self._buf = ""

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buf):
            end = match.end()
            if match.group().startswith(".") and _is_abbreviation(self._buf[start : match.start()]):
                continue
            sentence = self._buf[start:end].strip()
            if sentence:
                out.append(sentence)
            start = end
        if self.eager:
            tail = _END_OF_TEXT.search(self._buf, start)
            if tail is not None and not (
                tail.group().startswith(".") and _is_abbreviation(self._buf[start : tail.start()])
            ):
                sentence = self._buf[start:].strip()
                if sentence:
                    out.append(sentence)
                start = len(self._buf)
        self._buf = self._buf[start:]
        while len(self._buf) > self.max_chars:
            cut = max(
                self._buf.rfind(", ", 0, self.max_chars), self._buf.rfind(" ", 0, self.max_chars)
            )
            if cut <= 0:
                cut = self.max_chars
            piece, self._buf = self._buf[: cut + 1].strip(), self._buf[cut + 1 :]
            if piece:
                out.append(piece)
        return out

    def flush(self) -> str:
        """The text not yet returned (no sentence end seen), and start afresh."""
        rest, self._buf = self._buf.strip(), ""
        return rest

    def reset(self) -> None:
        self._buf = ""

    @property
    def pending(self) -> str:
        return self._buf


def _is_abbreviation(before: str) -> bool:
    words = before.split()
    if not words:
        return False
    last = words[-1].rstrip(".")
    # "Dr." / "e.g." / an initial like "J." do not end a sentence ("... do I." does).
    initial = len(last) == 1 and last.isupper() and last != "I"
    return last.lower() in _ABBREVIATIONS or initial
