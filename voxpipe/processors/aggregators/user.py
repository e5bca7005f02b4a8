"""UserContextAggregator: turns the caller's final transcripts into a user message and a request."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    CancelFrame,
    EndFrame,
    EscalationEndedFrame,
    EscalationStartedFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    LLMMessagesFrame,
    MetricsFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.aggregators.context import LLMContext
from voxpipe.processors.aggregators.preemptive import (
    PREEMPTIVE_METRIC,
    Preemption,
    normalized_words,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.turn.frames import (
    PreemptiveLLMMessagesFrame,
    PreemptiveReplyFrame,
    UserSilenceStartedFrame,
    UserSpeechResumedFrame,
)

DOWNSTREAM = FrameDirection.DOWNSTREAM

# A transcript is taken for the whole of what the caller said when its last word ended this
# close to the silence (STT word times and the VAD differ by a few tens of ms); an older one
# misses words, and the final the silence asked for (Finalize) comes a moment later instead.
FRESH_TRANSCRIPT_S = 0.2


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

    Preemptive replies (``preemptive``, and the call's ``PREEMPTIVE_REPLIES`` carried by
    ``UserSilenceStartedFrame``): when the caller goes quiet, a reply is asked for at once
    from the words recognised so far (finals and the newest interim) with a
    ``PreemptiveLLMMessagesFrame``; the LLM holds it. When the turn ends on the same words
    (normalised) it is released and the user message enters the context; if the caller goes
    on, it is discarded, and if newer words come (a later interim, the final) it is discarded
    and asked again from them. A discarded reply is never heard nor recorded
    (``preemptive_discarded`` counts them: the LLM requests it cost).
    """

    def __init__(
        self,
        context: LLMContext,
        *,
        transcript_timeout_s: float = 1.0,
        idle_delay_s: float = 0.5,
        preemptive: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.context = context
        self.preemptive = preemptive
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
        self._interim_text = ""  # the newest interim since the last final
        self._heard_end: float | None = None  # when the newest transcript's last word ended
        self._final_in_pause = False  # a final came since the silence began
        self._paused = False  # the caller went quiet (a reply may be prepared); not decided
        self._silence_at: float | None = None  # when that silence began (call clock)
        self._preempt: Preemption | None = None  # a held reply for the turn in progress
        self._reply_ids = 0
        # Preemptive replies: asked for, released (heard as the reply), discarded unheard.
        self.preemptive_started = 0
        self.preemptive_used = 0
        self.preemptive_discarded = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, BotStartedSpeakingFrame):
            self._reply_pending = False
            if self._summary_due:
                self._start_summary()
        elif isinstance(frame, EscalationStartedFrame | EscalationEndedFrame):
            self._escalation(frame)
        elif isinstance(frame, UserSilenceStartedFrame):
            await self.push_frame(frame, direction)
            self._paused = frame.preemptive
            self._silence_at = frame.speech_end
            self._final_in_pause = False
            await self._recheck()
            return
        elif isinstance(frame, UserSpeechResumedFrame):
            self._paused = False
            await self._discard("the caller went on")
        elif direction is DOWNSTREAM:
            if isinstance(frame, UserStartedSpeakingFrame):
                self._paused = False
                await self._discard("the caller spoke again")
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
                    self._interim_text = frame.text.strip()
                    self._heard_end = _last_word_end(frame)
                    await self._recheck()
            elif isinstance(frame, TranscriptionFrame):
                await self.push_frame(frame, direction)
                end = _last_word_end(frame)
                if end is not None or frame.text.strip():
                    self._heard_end = end
                self._final_in_pause = self._paused
                await self._final(frame.text)
                return
            elif isinstance(frame, EndFrame):
                self._stop_timer()
                await self._discard("the call ends")
        if isinstance(frame, CancelFrame):
            self._preempt = None  # the LLM service is cancelled with everything it holds
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
        self._interim_text = ""
        if text.strip():
            self._parts.append(text.strip())
        await self._recheck()
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
            return
        await self._discard("no final transcript came")
        if self._resend:
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
        self._interim_text = ""
        self._paused = False
        self._resend = False
        held = self._preempt
        if held is not None and (self.replies_held or held.words != normalized_words(text)):
            await self._discard("the final transcript differs")
            held = None
        self.context.add_user_message(text)
        if held is not None and held.before != self.context.window_messages()[:-1]:
            # The conversation changed meanwhile (a tool's result, the bot's words heard).
            await self._discard("the context changed")
            held = None
        if self.replies_held:
            self.logger.debug("caller turn kept without a reply: the call is being handed over")
            return
        if held is not None:
            # The reply prepared while the turn was being decided answers these very words.
            self._preempt = None
            self.preemptive_used += 1
            await self._count("used")
            self._reply_pending = True
            await self.push_frame(PreemptiveReplyFrame(reply_id=held.reply_id, release=True))
        else:
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

    # ------------------------------------------------------------------ preemptive replies

    def _heard(self) -> str:
        """What the caller said in this turn so far: the finals, then the newest interim."""
        return " ".join([*self._parts, *([self._interim_text] if self._interim_text else [])])

    async def _preempt_from(self, text: str) -> None:
        """Ask for a held reply to ``text`` (the caller is quiet, the turn not decided)."""
        words = normalized_words(text)
        if not (self.preemptive and self._speaking and words) or self.replies_held:
            return
        if self._preempt is not None:
            if self._preempt.words == words:
                return
            await self._discard("newer words came")
        self._reply_ids += 1
        source = "interim" if self._interim_text else "final"
        # The messages as they will be once this turn is added (the context is left alone).
        entries = self.context.entries
        entry = self.context.add_user_message(text)
        try:
            messages = self.context.window_messages()
        finally:
            # By identity: an earlier message with the same words is equal to it.
            del entries[max(i for i, e in enumerate(entries) if e is entry)]
        self._preempt = Preemption(self._reply_ids, words, source, messages[:-1])
        self.preemptive_started += 1
        await self._count("started")
        await self.push_frame(
            PreemptiveLLMMessagesFrame(
                messages,
                tools=self.context.tools,
                max_messages=self.context.max_turns,
                reply_id=self._reply_ids,
            )
        )

    async def on_interruption(self) -> None:
        # The LLM service drops a held reply on an interruption: it is discarded.
        if self._preempt is not None:
            self._preempt = None
            self.preemptive_discarded += 1
            await self._count("discarded")

    async def _count(self, outcome: str) -> None:
        if self.metrics_enabled:  # voxpipe_preemptive_replies{outcome}
            await self.push_frame(MetricsFrame(self.name, PREEMPTIVE_METRIC + outcome, 1.0))

    async def _recheck(self) -> None:
        """In a pause: a reply is prepared from words that cover the caller's speech (the
        finals, and an interim whose last word ends at the silence); newer words replace it."""
        if not (self._paused and self._speaking):
            return
        if self._covers_speech():
            await self._preempt_from(self._heard())
        elif self._preempt is not None and self._preempt.words != normalized_words(self._heard()):
            # Newer words, but not all of them yet: the final (Finalize was sent) follows.
            await self._discard("newer words came")

    def _covers_speech(self) -> bool:
        """Whether the words heard so far reach the silence: the newest transcript's last word
        ends at it, or (an STT without word times) a final came since it began."""
        end, silence = self._heard_end, self._silence_at
        if end is not None and silence is not None:
            return end >= silence - FRESH_TRANSCRIPT_S
        return self._final_in_pause and not self._interim_pending

    async def _discard(self, reason: str) -> None:
        held, self._preempt = self._preempt, None
        if held is None:
            return
        self.preemptive_discarded += 1
        await self._count("discarded")
        self.logger.debug("preemptive reply %d discarded: %s", held.reply_id, reason)
        await self.push_frame(PreemptiveReplyFrame(reply_id=held.reply_id, release=False))

    @property
    def pending_text(self) -> str:
        """What the caller said in the turn not yet sent."""
        return " ".join(self._parts)


def _last_word_end(frame: TranscriptionFrame) -> float | None:
    """When the transcript's last word ended, on the call's clock (None: no word times)."""
    for word in reversed(frame.words):
        if word.call_end is not None:
            return word.call_end
    return None
