"""Escalation to a human: an LLM tool, and a policy that escalates without being asked.

``Escalation.escalate(reason, summary, trigger=...)`` is the one path: it records the
escalation (session and transcript), hands the agent the reason and a summary *before* they
join (warm transfer), then moves the caller. ``EscalationPolicy`` calls it on an explicit
request for a person (trigger ``request``), on the same unresolved question asked three times
(``loop``), on strong negative sentiment (``sentiment``) and on the model's second
``cannot_help`` (``confidence``); the detectors are in ``triggers.py`` and ``sentiment.py``,
their word lists in the locale data.

An escalation is a small state machine (``EscalationState``): ``idle`` -> ``transferring`` ->
``transferred`` or ``failed`` (from which the caller may be escalated again). While it is
``transferring``, and once ``transferred``, no transcript of the caller starts an LLM reply:
``EscalationPolicy`` pushes ``EscalationStartedFrame`` downstream when it starts (whoever
started it: the policy or the LLM's ``escalate_to_human`` tool) and ``EscalationEndedFrame``
when it ends, and ``UserContextAggregator`` keeps what the caller says in the context without
asking for a reply in between (without this the second half of "get me a person, please,
now" reached the LLM as a new turn, and the caller heard the handoff line twice). The
transfer work ends it by calling ``Escalation.finished()`` / ``Escalation.failed()``, or by
pushing an ``EscalationEndedFrame`` downstream from before the policy; a transfer callable
that raises fails it, and one that has neither finished nor failed after
``EscalationParams.transfer_timeout_s`` is failed by the policy, so a caller is never left
with a bot that will not answer.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.frames import (
    EscalationEndedFrame,
    EscalationStartedFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)
from voxpipe.processors.aggregators.context import LLMContext
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.sentiment import SentimentDetector
from voxpipe.processors.policy.triggers import (
    ConfidenceCounter,
    RepeatDetector,
    Request,
    RequestDetector,
)

DOWNSTREAM = FrameDirection.DOWNSTREAM

# transfer(reason, summary): tell the agent, then connect the caller.
Transfer = Callable[[str, str], Awaitable[None]]
Recorder = Callable[[str, str], Awaitable[None]]


class EscalationState(enum.Enum):
    """Where the hand-over of a call to a human is."""

    IDLE = "idle"
    TRANSFERRING = "transferring"
    TRANSFERRED = "transferred"
    FAILED = "failed"


# listener(state, detail): told of every change of state, in order.
Listener = Callable[[EscalationState, str], Awaitable[None]]

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
    """Hands the call to a human: records it, briefs the agent, transfers the caller; knows
    whether the hand-over is under way, done or failed (``state``)."""

    def __init__(
        self,
        *,
        record: Recorder | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        self._record = record
        self._transfer = transfer
        self.state = EscalationState.IDLE
        self.reason: str | None = None
        self.summary: str | None = None
        # What started it: "request", "loop", "sentiment", "confidence" (EscalationPolicy),
        # "tool" (the model's escalate_to_human), or what the caller of escalate() says.
        self.trigger = ""
        self.detail = ""  # why it ended, once it has
        self._listeners: list[Listener] = []

    @property
    def escalated(self) -> bool:
        """True once an escalation started (whatever came of it)."""
        return self.state is not EscalationState.IDLE

    @property
    def in_progress(self) -> bool:
        """True while the caller is being handed over (no LLM replies meanwhile)."""
        return self.state is EscalationState.TRANSFERRING

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(state, detail)`` on every change of state."""
        self._listeners.append(listener)

    async def _set(self, state: EscalationState, detail: str = "") -> None:
        self.state = state
        self.detail = detail
        for listener in list(self._listeners):
            await listener(state, detail)

    async def escalate(
        self, reason: str, summary: str = "", *, trigger: str = "tool"
    ) -> dict[str, Any]:
        """The ``escalate_to_human`` tool: returns what the model should know about the outcome."""
        if self.state in (EscalationState.TRANSFERRING, EscalationState.TRANSFERRED):
            return {"status": "already_transferring"}
        self.reason, self.summary, self.trigger = reason, summary, trigger
        # First: from here on nothing the caller says starts a reply.
        await self._set(EscalationState.TRANSFERRING, reason)
        if self._record is not None:
            await self._record(reason, summary)
        if self._transfer is None:
            # No transfer path for this call (issue 11): the model must not promise one, and
            # the bot answers the caller again at once.
            await self.failed("unavailable: no transfer path")
            return {"status": "unavailable", "reason": reason}
        try:
            await self._transfer(reason, summary)
        except Exception as exc:  # the carrier refused to move the caller: the bot keeps the call
            await self.failed(f"unavailable: transfer failed: {exc}")
            return {"status": "unavailable", "reason": reason}
        return {"status": "transferring", "reason": reason}

    async def finished(self, detail: str = "") -> None:
        """The transfer work: a person has the call."""
        if self.state is EscalationState.TRANSFERRING:
            await self._set(EscalationState.TRANSFERRED, detail)

    async def failed(self, detail: str = "") -> None:
        """The transfer work: the hand-over failed; the bot answers the caller again."""
        if self.state is EscalationState.TRANSFERRING:
            await self._set(EscalationState.FAILED, detail)


@dataclass(slots=True)
class EscalationParams:
    """When the policy escalates on its own (the word lists are the locale's, see triggers)."""

    locale: str = "en"  # whose request patterns, contractions and sentiment lexicon are used
    repeat_limit: int = 3  # the same unresolved question this many times
    repeat_similarity: float = 88.0  # rapidfuzz token_set_ratio: two questions are the same
    # VADER compound score at or below which an utterance is strongly negative (-1..0) ...
    sentiment_threshold: float = -0.5
    sentiment_turns: int = 2  # ... this many of them in the call escalate,
    sentiment_severe: float = -0.85  # ... or one at or below this.
    confidence_limit: int = 2  # the model's cannot_help calls in a call that escalate
    handoff_line: str = "I'm connecting you to a colleague who can help. Please hold."
    # Said instead when no transfer is possible (no transfer path, or the move failed).
    unavailable_line: str = (
        "I'm sorry, I can't put you through to a colleague on this line. "
        "I can take a message or a callback number."
    )
    # A hand-over neither finished nor failed by then is failed, so the bot answers again.
    transfer_timeout_s: float | None = 60.0
    # The bot's escalation tool: an escalation the policy starts is recorded as a call of it
    # (in the context and the frame stream), so the model, a transcript reader and a scenario
    # (`tool: escalate_to_human`) see the same action whoever started it.
    tool_name: str = "escalate_to_human"


class EscalationPolicy(FrameProcessor):
    """After the filters, before the user aggregator: escalates on an explicit request for a
    person, the same unresolved question asked ``repeat_limit`` times, strong negative
    sentiment, or the model's ``cannot_help`` tool called ``confidence_limit`` times (see
    ``cannot_help``), and tells the processors after it when any escalation starts and ends
    (see the module doc). Each escalation records its trigger (``Escalation.trigger``).

    The triggering words still go on to the context (the user aggregator keeps them without
    asking for a reply); the handoff line is spoken instead of an answer. A mention of a
    person that is not clearly a request ("I need someone to look at this") is left to the
    model, which can confirm and call ``escalate_to_human``.
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
        p = self.params
        texts = LocaleTexts.for_locale(p.locale)
        self.requests = RequestDetector(texts)
        self.repeats = RepeatDetector(texts, similarity=p.repeat_similarity)
        self.sentiment = SentimentDetector(
            p.locale, p.sentiment_threshold, p.sentiment_severe, p.sentiment_turns
        )
        self.confidence = ConfidenceCounter(p.confidence_limit)
        self.trigger = ""  # the trigger of the last evaluate() that returned a reason
        self._recent: deque[str] = deque(maxlen=3)  # the caller's last utterances, for the brief
        self._policy_calls = 0
        self._timeout: asyncio.Task[None] | None = None
        escalation.add_listener(self._changed)

    def evaluate(self, text: str) -> str | None:
        """The reason to escalate on this utterance, or None (``trigger`` says which fired)."""
        found = self._evaluate(text)
        if found is None:
            return None
        self.trigger, reason = found
        return reason

    def _evaluate(self, text: str) -> tuple[str, str] | None:
        if self.requests.classify(text) is Request.REQUEST:
            return "request", "caller asked for a person"
        # Both counted on every utterance, so neither misses one the other escalated on.
        times = self.repeats.observe(text)
        upset = self.sentiment.observe(text)
        if times >= self.params.repeat_limit:
            self.repeats.forget(text)  # a failed transfer must not re-escalate on its 4th time
            return "loop", f"same question asked {times} times"
        if upset:
            return "sentiment", "caller is upset"
        return None

    async def cannot_help(self, reason: str) -> dict[str, Any]:
        """The model's ``cannot_help`` tool: counted; the ``confidence_limit``-th escalates."""
        if self.escalation.state not in (EscalationState.IDLE, EscalationState.FAILED):
            return {"status": "already_transferring"}
        if not self.confidence.failed(reason):
            return {"status": "noted", "times": len(self.confidence.reasons)}
        times = len(self.confidence.reasons)
        summary = self._summary(f"(the assistant could not help: {reason})")
        return await self.escalation.escalate(
            f"assistant could not help {times} times: {reason}", summary, trigger="confidence"
        )

    def _summary(self, latest: str) -> str:
        recent = [*self._recent, latest]
        if self.context.summary:
            return f"{self.context.summary} Latest: " + " / ".join(recent)
        return "Caller said: " + " / ".join(recent)

    async def _changed(self, state: EscalationState, detail: str) -> None:
        # Runs in whichever task changed the state (this processor's, the LLM's tool call, the
        # transfer work's): the frames go downstream from here, before the user aggregator.
        if state is EscalationState.TRANSFERRING:
            self._stop_timeout()
            if self.params.transfer_timeout_s is not None and self.started:
                self._timeout = self.create_task(
                    self._fail_after(self.params.transfer_timeout_s),
                    name="escalation-timeout",
                    interruptible=False,
                )
            await self.push_frame(EscalationStartedFrame(reason=detail))
        else:
            self._stop_timeout()
            transferred = state is EscalationState.TRANSFERRED
            self.logger.info("escalation %s%s", state.value, f": {detail}" if detail else "")
            await self.push_frame(EscalationEndedFrame(transferred=transferred, detail=detail))

    async def _fail_after(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        self._timeout = None  # this task is finishing: the change must not cancel it
        await self.escalation.failed(f"no transfer after {seconds:g} s")

    def _stop_timeout(self) -> None:
        if self._timeout is not None and self._timeout is not asyncio.current_task():
            self._timeout.cancel()
        self._timeout = None

    async def _record_tool_call(self, reason: str, summary: str, outcome: dict[str, Any]) -> None:
        """The policy's escalation, as a call of the bot's escalation tool and its result
        (the assistant aggregator adds both to the context; nothing asks the model to reply)."""
        self._policy_calls += 1
        call_id = f"policy-escalation-{self._policy_calls}"
        args = {"reason": reason, "summary": summary}
        name = self.params.tool_name
        await self.push_frame(FunctionCallInProgressFrame(call_id, name, args))
        await self.push_frame(FunctionCallResultFrame(call_id, name, args, dict(outcome)))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, EscalationEndedFrame) and direction is DOWNSTREAM:
            # Pushed by the transfer work from before this processor: one state, one frame.
            if self.escalation.in_progress:
                if frame.transferred:
                    await self.escalation.finished(frame.detail)
                else:
                    await self.escalation.failed(frame.detail)
                return  # the change pushed its own EscalationEndedFrame
        elif (
            direction is DOWNSTREAM
            and isinstance(frame, TranscriptionFrame)
            and frame.final
            and self.escalation.state in (EscalationState.IDLE, EscalationState.FAILED)
        ):
            reason = self.evaluate(frame.text)
            if reason is None:
                self._recent.append(frame.text)
            else:
                self.logger.info("escalating to a human: %s", reason)
                summary = self._summary(frame.text)
                # EscalationStartedFrame goes first (from the state change), then the words,
                # which the user aggregator keeps without asking for a reply.
                outcome = await self.escalation.escalate(reason, summary, trigger=self.trigger)
                if outcome.get("status") == "unavailable":
                    # No person can take the call: one fixed line (take a message), and the
                    # words stay in the context without a second, LLM-made answer.
                    self.context.add_user_message(frame.text)
                    await self._record_tool_call(reason, summary, outcome)
                    await self.push_frame(TTSSpeakFrame(self.params.unavailable_line))
                    return
                await self.push_frame(frame, direction)
                await self._record_tool_call(reason, summary, outcome)
                if outcome.get("status") == "transferring":
                    await self.push_frame(TTSSpeakFrame(self.params.handoff_line))
                return
        await self.push_frame(frame, direction)
