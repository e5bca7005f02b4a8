"""UserContextAggregator: turns the caller's final transcripts into a user message and a request."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    EndFrame,
    EscalationEndedFrame,
    EscalationStartedFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    LLMMessagesFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.aggregators.context import LLMContext
from voxpipe.processors.base import FrameProcessor

DOWNSTREAM = FrameDirection.DOWNSTREAM


class UserContextAggregator(FrameProcessor):
    """Collects the final transcripts of a user turn; at its end adds the user message to the
    context and pushes an ``LLMMessagesFrame`` with the windowed messages.

    A turn ends when the caller stops speaking (``UserStoppedSpeakingFrame``) and the STT has
    finalised what it was hearing: if the last transcript seen is an interim one, or none
    came yet, the turn waits up to ``transcript_timeout_s`` for the final. Finals that arrive
    with no speech turn around them (an STT without VAD) are sent ``idle_delay_s`` after the
    last one. Interim transcripts are passed on for display, never sent to the LLM.

    If the caller speaks again after a request went out but before any of the reply was
    heard, the stale reply is interrupted; should that speech bring no new words (a cough),
    the same request is sent again so the caller still gets an answer.

    From an ``EscalationStartedFrame`` (the call is being handed to a human) until an
    ``EscalationEndedFrame`` saying the hand-over failed, no transcript starts a reply: what
    the caller says is added to the context (for the transcript and the agent's summary), and
    no request goes out (``replies_held``). After a successful hand-over it stays so.
    """

    def __init__(
        self,
        context: LLMContext,
        *,
        transcript_timeout_s: float = 1.0,
        idle_delay_s: float = 0.5,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.context = context
        self.transcript_timeout_s = transcript_timeout_s
        self.idle_delay_s = idle_delay_s
        self._parts: list[str] = []
        self._speaking = False
        self._interim_pending = False  # an interim newer than the last final
        self._awaiting_final = False  # the caller stopped; the final transcript is late
        self._timer: asyncio.Task[None] | None = None
        self._timer_coro: Coroutine[Any, Any, None] | None = None
        self._reply_pending = False  # a request went out and none of its reply was heard yet
        self._resend = False  # that reply was interrupted: answer again if no new words come
        self._summary_due = False  # older turns to summarize once the reply is heard
        self.replies_held = False  # a hand-over to a human is under way or done

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, BotStartedSpeakingFrame):
            self._reply_pending = False
            if self._summary_due:
                self._start_summary()
        elif isinstance(frame, EscalationStartedFrame | EscalationEndedFrame):
            self._escalation(frame)
        elif direction is DOWNSTREAM:
            if isinstance(frame, UserStartedSpeakingFrame):
                self._speaking = True
                self._awaiting_final = False
                self._stop_timer()
                if self._reply_pending and self.interruptions_allowed:
                    # The caller is still talking: the reply being generated answers too little.
                    self._reply_pending = False
                    self._resend = True
                    await self.push_frame(frame, direction)
                    await self.request_interruption("caller spoke before the reply was heard")
                    return
            elif isinstance(frame, UserStoppedSpeakingFrame):
                await self.push_frame(frame, direction)
                self._speaking = False
                await self._turn_may_end(self.transcript_timeout_s)
                return
            elif isinstance(frame, InterimTranscriptionFrame):
                if frame.text.strip():
                    self._interim_pending = True
            elif isinstance(frame, TranscriptionFrame):
                await self.push_frame(frame, direction)
                await self._final(frame.text)
                return
            elif isinstance(frame, EndFrame):
                self._stop_timer()
        await self.push_frame(frame, direction)

    def _escalation(self, frame: EscalationStartedFrame | EscalationEndedFrame) -> None:
        if isinstance(frame, EscalationStartedFrame):
            self.replies_held = True
            # A reply owed to a cough over a stale one is not owed any more.
            self._reply_pending = False
            self._resend = False
        elif not frame.transferred:
            self.replies_held = False  # the hand-over failed: the bot answers again

    async def _final(self, text: str) -> None:
        self._interim_pending = False
        if text.strip():
            self._parts.append(text.strip())
        if self._speaking:
            return
        if self._awaiting_final:
            await self._turn_may_end(self.transcript_timeout_s)
        elif self._parts and self._timer is None:
            self._start_timer(self.idle_delay_s, "idle-turn")

    async def _turn_may_end(self, wait: float) -> None:
        if self._parts and not self._interim_pending:
            await self._end_turn()
            return
        # The STT is still finalising what the caller said: wait for its final.
        self._awaiting_final = True
        if self._timer is None:
            self._start_timer(wait, "await-final")

    async def _end_after(self, delay: float) -> None:
        await self.clock.sleep(delay)
        self._timer = None  # this task is finishing: _end_turn must not cancel it
        self._timer_coro = None
        self._awaiting_final = False
        self._interim_pending = False
        if self._parts:
            await self._end_turn()
        elif self._resend:
            self._resend = False
            if not self.replies_held:
                await self._request()

    def _start_timer(self, delay: float, name: str) -> None:
        self._timer_coro = self._end_after(delay)
        self._timer = self.create_task(self._timer_coro, name=name, interruptible=False)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            # A timer cancelled before it ever ran would warn "never awaited".
            if (
                self._timer_coro is not None
                and inspect.getcoroutinestate(self._timer_coro) == inspect.CORO_CREATED
            ):
                self._timer_coro.close()
        self._timer_coro = None

    async def _end_turn(self) -> None:
        """Add the user's words to the context and ask the LLM for a reply."""
        self._stop_timer()
        self._awaiting_final = False
        text = " ".join(self._parts)
        self._parts = []
        self._resend = False
        self.context.add_user_message(text)
        if self.replies_held:
            self.logger.debug("caller turn kept without a reply: the call is being handed over")
            return
        await self._request()
        # Summarizing older turns waits for the reply's first audio: started with the request,
        # its network round trip would compete with the reply's on the same loop.
        self._summary_due = True

    def _start_summary(self) -> None:
        self._summary_due = False
        job = self.context.summary_job()
        if job is not None:
            self.create_task(job, name="summarize", interruptible=False)

    async def _request(self) -> None:
        self._reply_pending = True
        await self.push_frame(
            LLMMessagesFrame(
                self.context.window_messages(),
                tools=self.context.tools,
                max_messages=self.context.max_turns,
            )
        )

    @property
    def pending_text(self) -> str:
        """What the caller said in the turn not yet sent."""
        return " ".join(self._parts)
