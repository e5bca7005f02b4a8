"""Payment details: card numbers never stored, recording and transcription paused around them.

``PaymentGuard`` sits right after STT, so everything downstream (the escalation policy, the
context and so the LLM provider, the session store, the transcript) only ever sees transcripts
with card numbers replaced by ``[card number]`` (see ``voxpipe.processors.policy.cards`` for what
counts as one). A card number said across two final transcripts of one turn is caught too: a
final that ends in digits is held until the caller's turn ends or a final without trailing
digits follows, and the two are checked as one.

Pausing: a ``PauseRecordingFrame`` goes upstream (the STT stops sending the caller's audio to
its provider) and downstream (the transcript recorder keeps nothing), and a
``ResumeRecordingFrame`` both ways ends it. Keypad digits (DTMF) pressed meanwhile go no
further. A pause starts

* when the LLM calls the ``start_payment`` tool, before the bot asks for payment details, so
  the card number, expiry date and security code are never transcribed at all;
* when a card number is detected anyway (the caller read it unprompted): it was redacted, and
  the pause keeps the expiry date and security code that usually follow out of the record.

It ends with the ``end_payment`` tool or, since the LLM hears nothing while transcription is
paused, once neither the caller nor the bot has spoken for ``resume_after_s`` (the caller has
finished giving the details), and at the latest after ``max_pause_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.cards import (
    CARD_PLACEHOLDER,
    ends_with_digits,
    mask_digit_runs,
    redact_card_numbers,
)

__all__ = ["END_PAYMENT_TOOL", "START_PAYMENT_TOOL", "PaymentGuard", "PaymentGuardParams"]

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM

START_PAYMENT_TOOL = {
    "type": "function",
    "function": {
        "name": "start_payment",
        "description": "Call this BEFORE the caller gives card or payment details: recording and "
        "transcription pause, so the details are never stored. You will not hear the caller "
        "until they have finished.",
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
}
END_PAYMENT_TOOL = {
    "type": "function",
    "function": {
        "name": "end_payment",
        "description": "Call this when the payment step is over: recording and transcription "
        "resume.",
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
}


@dataclass(slots=True)
class PaymentGuardParams:
    """How card numbers are redacted and how long a payment pause lasts."""

    placeholder: str = CARD_PLACEHOLDER
    pause_on_card: bool = True  # a detected card number starts a pause
    # Quiet (no caller or bot speech, no key pressed) that ends a pause; about the gap after the
    # last detail a caller reads out before they expect an answer, plus margin.
    resume_after_s: float = 6.0
    max_pause_s: float = 120.0

    def __post_init__(self) -> None:
        if self.resume_after_s <= 0 or self.max_pause_s <= 0:
            raise ValueError("PaymentGuardParams: resume_after_s and max_pause_s must be > 0")


class PaymentGuard(FrameProcessor):
    """Right after STT: redacts card numbers from every transcript and pauses recording and
    transcription around payment details (``start_payment`` / ``end_payment`` tools, or a card
    number detected), resuming after a quiet spell."""

    def __init__(
        self, params: PaymentGuardParams | None = None, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.params = params or PaymentGuardParams()
        self.paused = False
        self.pause_reason = ""
        self.redactions = 0  # card numbers removed in this call (counted, never logged)
        self.pauses = 0
        self._held: list[TranscriptionFrame] = []
        self._user_speaking = False
        self._quiet_timer: asyncio.Task[None] | None = None
        self._max_timer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ tools

    async def start_payment(self) -> dict[str, Any]:
        """The ``start_payment`` tool: pause recording and transcription for payment details."""
        await self.pause("payment started")
        return {
            "status": "recording_paused",
            "note": "Ask for the payment details now. You will not hear them; recording "
            f"resumes after {self.params.resume_after_s:g} s of silence.",
        }

    async def end_payment(self) -> dict[str, Any]:
        """The ``end_payment`` tool: resume recording and transcription."""
        await self.resume()
        return {"status": "recording_resumed"}

    # ------------------------------------------------------------------ pause / resume

    async def pause(self, reason: str) -> None:
        """Pause recording and transcription (no-op while paused)."""
        if self.paused:
            return
        self.paused = True
        self.pause_reason = reason
        self.pauses += 1
        self.logger.info("recording and transcription paused: %s", reason)
        await self.push_frame(PauseRecordingFrame(reason=reason), UPSTREAM)
        await self.push_frame(PauseRecordingFrame(reason=reason), DOWNSTREAM)
        self._max_timer = self.create_task(
            self._resume_after(self.params.max_pause_s, "longest pause reached"),
            name="payment-max",
            interruptible=False,
        )
        if not self._user_speaking:
            self._restart_quiet_timer()

    async def resume(self, why: str = "payment ended") -> None:
        """Resume recording and transcription (no-op unless paused)."""
        if not self.paused:
            return
        self.paused = False
        self._stop_timers()
        self.logger.info("recording and transcription resumed: %s", why)
        await self.push_frame(ResumeRecordingFrame(), UPSTREAM)
        await self.push_frame(ResumeRecordingFrame(), DOWNSTREAM)

    async def _resume_after(self, seconds: float, why: str) -> None:
        await self.clock.sleep(seconds)
        # This timer is finishing: resume must not cancel the task it runs in.
        current = asyncio.current_task()
        if self._max_timer is current:
            self._max_timer = None
        if self._quiet_timer is current:
            self._quiet_timer = None
        await self.resume(why)

    def _restart_quiet_timer(self) -> None:
        self._cancel_quiet_timer()
        self._quiet_timer = self.create_task(
            self._resume_after(self.params.resume_after_s, "quiet after the payment details"),
            name="payment-quiet",
            interruptible=False,
        )

    def _cancel_quiet_timer(self) -> None:
        if self._quiet_timer is not None and self._quiet_timer is not asyncio.current_task():
            self._quiet_timer.cancel()
        self._quiet_timer = None

    def _stop_timers(self) -> None:
        self._cancel_quiet_timer()
        if self._max_timer is not None and self._max_timer is not asyncio.current_task():
            self._max_timer.cancel()
        self._max_timer = None

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        if direction is DOWNSTREAM and isinstance(frame, TranscriptionFrame):
            if kind is InterimTranscriptionFrame:
                await self.push_frame(self._interim(frame), direction)
            else:
                await self._final(frame)
            return
        if kind is UserStartedSpeakingFrame and direction is DOWNSTREAM:
            self._user_speaking = True
            if self.paused:
                self._cancel_quiet_timer()
        elif kind is UserStoppedSpeakingFrame and direction is DOWNSTREAM:
            self._user_speaking = False
            await self._flush()  # the turn is over: what was held goes before the "stopped"
            if self.paused:
                self._restart_quiet_timer()
        elif kind is BotStartedSpeakingFrame and self.paused:
            self._cancel_quiet_timer()
        elif kind is BotStoppedSpeakingFrame and self.paused and not self._user_speaking:
            self._restart_quiet_timer()
        elif kind is DTMFFrame and direction is DOWNSTREAM and self.paused:
            # Keypad entry of payment details: goes no further, and counts as activity.
            self._restart_quiet_timer()
            return
        elif kind is EndFrame:
            await self._flush()
        elif kind is CancelFrame:
            self._held = []
        await self.push_frame(frame, direction)

    async def _final(self, frame: TranscriptionFrame) -> None:
        self._held.append(frame)
        if self._user_speaking and ends_with_digits(frame.text):
            return  # the number may go on in the next final of this turn
        await self._flush()

    async def _flush(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        out, found = self._redacted(held)
        await self.push_frame(out, DOWNSTREAM)
        if found and self.params.pause_on_card:
            await self.pause("card number spoken")

    def _interim(self, frame: TranscriptionFrame) -> TranscriptionFrame:
        # Shown, never kept: but a card may be half said, so every longer digit run is hidden.
        text = mask_digit_runs(frame.text, self.params.placeholder)
        if text == frame.text:
            return frame
        return dataclasses.replace(frame, text=text, words=[])

    def _redacted(self, frames: list[TranscriptionFrame]) -> tuple[TranscriptionFrame, int]:
        """One frame for ``frames`` with card numbers redacted, and how many there were."""
        text = " ".join(f.text.strip() for f in frames if f.text.strip())
        clean, found = redact_card_numbers(text, self.params.placeholder)
        last = frames[-1]
        if not found:
            if len(frames) == 1:
                return last, 0
            merged = [w for f in frames for w in f.words]
            return dataclasses.replace(last, text=text, words=merged), 0
        self.redactions += found
        self.logger.warning("redacted %d card number(s) from a transcript", found)
        # Word timings would spell the number out again: dropped with it.
        return dataclasses.replace(last, text=clean, words=[]), found
