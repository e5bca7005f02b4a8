"""Consent before retention: the caller agrees (DTMF 1) or declines (2) before anything is kept.

``ConsentGate`` sits after STT, before anything that keeps or answers the caller's words. At
the start of a call it looks the caller up in the ``ConsentStore``: a caller who chose before is
not asked again (their choice applies at once). Otherwise it speaks the prompt (a legal notice:
the caller's speech does not cut it off) and waits for a key.

Until the choice is made the conversation does not start: the caller's transcripts go no
further (the LLM neither answers speech over the prompt nor hears a key press as words), and
the bot's greeting (``after``) is said only once the choice is made. The choice reaches the
``TranscriptRecorder`` as a ``RetentionConsentFrame``: with ``granted`` False (a 2, or no answer
after the prompt and one reminder, or a hang-up before answering) nothing of the call is stored.
Only a key press is stored as the caller's choice; no answer asks again on the next call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    Frame,
    FrameDirection,
    RetentionConsentFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.frames import uninterruptible
from voxpipe.state.consent import ConsentStore

__all__ = ["ConsentGate", "ConsentPrompts"]

DOWNSTREAM = FrameDirection.DOWNSTREAM


@dataclass(slots=True)
class ConsentPrompts:
    """What the consent flow says; a bot passes its locale's wording."""

    prompt: str = (
        "Before we start: this call may be recorded and transcribed to help us serve you. "
        "Press 1 to agree, or 2 to decline."
    )
    reminder: str = "Please press 1 to agree to recording, or 2 to decline."
    agreed: str = "Thank you."
    declined: str = "Understood. This call will not be recorded."
    no_answer: str = "This call will not be recorded."


class ConsentGate(FrameProcessor):
    """Asks an unknown caller for retention consent (DTMF 1 / 2), stores the choice per caller
    id, and holds the conversation back until it is made."""

    def __init__(
        self,
        store: ConsentStore,
        *,
        caller: str,
        call_id: str = "",
        prompts: ConsentPrompts | None = None,
        after: str = "",
        answer_timeout_s: float = 8.0,
        reminders: int = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.store = store
        self.caller = caller
        self.consent_call_id = call_id
        self.prompts = prompts or ConsentPrompts()
        self.after = after
        self.answer_timeout_s = answer_timeout_s
        self.reminders = reminders
        self.granted: bool | None = None  # the decision for this call, once made
        self.source = ""  # dtmf | stored | no_answer
        self.asking = False
        self._reminded = 0
        self._timer: asyncio.Task[None] | None = None

    @property
    def decided(self) -> bool:
        return self.granted is not None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            # The lookup may wait on the database: it must not hold up the call's start.
            self.create_task(self._look_up(), name="consent-lookup", interruptible=False)
            return
        if not self.decided and direction is DOWNSTREAM:
            if isinstance(frame, DTMFFrame):
                await self._key(frame.digit)
                return
            if isinstance(frame, TranscriptionFrame):
                return  # the conversation has not started: speech over the prompt is dropped
        if self.asking:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._stop_timer()  # the wait for an answer starts once the prompt has played
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._start_timer()
        await self.push_frame(frame, direction)

    async def _look_up(self) -> None:
        try:
            record = await self.store.get(self.caller)
        except Exception as exc:  # a store outage asks again rather than assume either way
            self.logger.warning("consent store unavailable, asking the caller: %s", exc)
            record = None
        if self.decided:
            return  # the caller pressed a key before the lookup came back
        if record is not None:
            await self._decide(record.granted, "stored", store=False)
            return
        self.asking = True
        for f in uninterruptible(TTSSpeakFrame(self.prompts.prompt), reason="consent notice"):
            await self.push_frame(f)
        self._start_timer()  # also covers a pipeline with no audio output to say it played

    async def _key(self, digit: str) -> None:
        if digit == "1":
            await self._decide(True, "dtmf")
        elif digit == "2":
            await self._decide(False, "dtmf")
        elif self.asking:
            await self.push_frame(TTSSpeakFrame(self.prompts.reminder))
            self._start_timer()

    async def _no_answer(self) -> None:
        await self.clock.sleep(self.answer_timeout_s)
        self._timer = None  # finishing: _decide must not cancel the task it runs in
        if self.decided:
            return
        if self._reminded < self.reminders:
            self._reminded += 1
            await self.push_frame(TTSSpeakFrame(self.prompts.reminder))
            self._start_timer()
            return
        await self._decide(False, "no_answer", store=False)

    async def _decide(self, granted: bool, source: str, *, store: bool = True) -> None:
        self._stop_timer()
        self.granted, self.source = granted, source
        was_asking, self.asking = self.asking, False
        self.logger.info("retention consent %s (%s)", "granted" if granted else "refused", source)
        await self.push_frame(RetentionConsentFrame(granted=granted, source=source))
        if store:
            try:
                stored = await self.store.record(
                    self.caller, granted, call_id=self.consent_call_id or self.call_id
                )
                if not stored:
                    self.logger.info("caller id withheld: the choice applies to this call only")
            except Exception as exc:  # the choice still applies to this call
                self.logger.error("consent could not be stored: %s", exc)
        if was_asking:
            if source == "no_answer":
                reply = self.prompts.no_answer
            else:
                reply = self.prompts.agreed if granted else self.prompts.declined
            await self.push_frame(TTSSpeakFrame(reply))
        if self.after:
            await self.push_frame(TTSSpeakFrame(self.after))

    def _start_timer(self) -> None:
        self._stop_timer()
        self._timer = self.create_task(self._no_answer(), name="consent-wait", interruptible=False)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
