"""Escalation to a human: an LLM tool, and a policy that escalates without being asked.

``Escalation.escalate(reason, summary)`` is the one path: it records the escalation (session
and transcript), hands the agent the reason and a summary *before* they join (warm
transfer), then moves the caller. ``EscalationPolicy`` calls it on an explicit request for a
person, on the same question asked three times, and on strong negative sentiment.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voxpipe.frames import Frame, FrameDirection, TranscriptionFrame, TTSSpeakFrame
from voxpipe.processors.aggregators.context import LLMContext
from voxpipe.processors.base import FrameProcessor

DOWNSTREAM = FrameDirection.DOWNSTREAM

# transfer(reason, summary): tell the agent, then connect the caller.
Transfer = Callable[[str, str], Awaitable[None]]
Recorder = Callable[[str, str], Awaitable[None]]

ESCALATE_TOOL = {
    "type": "function",
    "function": {
        "name": "escalate_to_human",
        "description": "Transfer the caller to a human agent. Use when the caller asks for a "
        "person, when you cannot help, or when the caller is upset.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why the call is escalated."},
                "summary": {
                    "type": "string",
                    "description": "Two sentences for the agent: who calls and what they need.",
                },
            },
            "required": ["reason", "summary"],
        },
    },
}


class Escalation:
    """Hands the call to a human once: records it, briefs the agent, transfers the caller."""

    def __init__(
        self,
        *,
        record: Recorder | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        self._record = record
        self._transfer = transfer
        self.escalated = False
        self.reason: str | None = None
        self.summary: str | None = None

    async def escalate(self, reason: str, summary: str = "") -> dict[str, Any]:
        """The ``escalate_to_human`` tool: returns what the model should know about the outcome."""
        if self.escalated:
            return {"status": "already_transferring"}
        self.escalated = True
        self.reason, self.summary = reason, summary
        if self._record is not None:
            await self._record(reason, summary)
        if self._transfer is None:
            # No transfer path for this call (issue 11): the model must not promise one.
            return {"status": "unavailable", "reason": reason}
        try:
            await self._transfer(reason, summary)
        except Exception:  # the carrier refused to move the caller: the bot keeps the call
            return {"status": "unavailable", "reason": reason}
        return {"status": "transferring", "reason": reason}


@dataclass(slots=True)
class EscalationParams:
    """When the policy escalates on its own."""

    request_phrases: tuple[str, ...] = (
        "human",
        "real person",
        "a person",
        "an agent",
        "representative",
        "operator",
        "someone else",
        "talk to somebody",
        "speak to someone",
    )
    repeat_limit: int = 3  # the same question this many times
    negative_words: tuple[str, ...] = (
        "angry",
        "furious",
        "ridiculous",
        "terrible",
        "awful",
        "useless",
        "worst",
        "hate",
        "stupid",
        "unacceptable",
        "disgusting",
        "pathetic",
        "fed up",
        "sick of",
        "waste of time",
    )
    negative_threshold: int = 2  # negative words in one utterance that count as strong
    negative_turns: int = 2  # ... or this many negative utterances in the call
    handoff_line: str = "I'm connecting you to a colleague who can help. Please hold."
    # Said instead when no transfer is possible (no transfer path, or the move failed).
    unavailable_line: str = (
        "I'm sorry, I can't put you through to a colleague on this line. "
        "I can take a message or a callback number."
    )
    extra_requests: tuple[str, ...] = field(default_factory=tuple)


def _normalize(text: str) -> str:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return " ".join(
        w for w in words if w not in {"please", "um", "uh", "so", "ok", "okay", "again"}
    )


class EscalationPolicy(FrameProcessor):
    """After the filters, before the user aggregator: escalates on an explicit request for a
    person, the same question asked ``repeat_limit`` times, or strong negative sentiment.

    The triggering words still enter the context; the LLM is not asked to answer them, the
    handoff line is spoken instead.
    """

    def __init__(
        self,
        escalation: Escalation,
        context: LLMContext,
        params: EscalationParams | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.escalation = escalation
        self.context = context
        self.params = params or EscalationParams()
        phrases = self.params.request_phrases + self.params.extra_requests
        self._request_rx = re.compile(
            r"(?<!\w)(" + "|".join(re.escape(p) for p in phrases) + r")(?!\w)", re.I
        )
        self._negative_rx = re.compile(
            r"(?<!\w)(" + "|".join(re.escape(p) for p in self.params.negative_words) + r")(?!\w)",
            re.I,
        )
        self._asked: dict[str, int] = {}
        self._negative_utterances = 0
        self._recent: deque[str] = deque(maxlen=3)  # the caller's last utterances, for the brief

    def evaluate(self, text: str) -> str | None:
        """The reason to escalate on this utterance, or None."""
        if self._request_rx.search(text):
            return "caller asked for a person"
        key = _normalize(text)
        if len(key.split()) >= 3:
            self._asked[key] = self._asked.get(key, 0) + 1
            if self._asked[key] >= self.params.repeat_limit:
                return f"same question asked {self._asked[key]} times"
        negatives = len(self._negative_rx.findall(text))
        if negatives:
            self._negative_utterances += 1
        if negatives >= self.params.negative_threshold or (
            negatives and self._negative_utterances >= self.params.negative_turns
        ):
            return "caller is upset"
        return None

    def _summary(self, latest: str) -> str:
        recent = [*self._recent, latest]
        if self.context.summary:
            return f"{self.context.summary} Latest: " + " / ".join(recent)
        return "Caller said: " + " / ".join(recent)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if (
            direction is DOWNSTREAM
            and isinstance(frame, TranscriptionFrame)
            and frame.final
            and not self.escalation.escalated
        ):
            reason = self.evaluate(frame.text)
            if reason is None:
                self._recent.append(frame.text)
            else:
                self.logger.info("escalating to a human: %s", reason)
                summary = self._summary(frame.text)
                self.context.add_user_message(frame.text)
                result = await self.escalation.escalate(reason, summary)
                line = (
                    self.params.unavailable_line
                    if result.get("status") == "unavailable"
                    else self.params.handoff_line
                )
                await self.push_frame(TTSSpeakFrame(line))
                return
        await self.push_frame(frame, direction)
