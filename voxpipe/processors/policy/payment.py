"""Payment details: card numbers never stored, recording and transcription paused around them.

``PaymentGuard`` sits right after STT, so everything downstream (the escalation policy, the
context and so the LLM provider, the session store, the transcript) only ever sees transcripts
with card numbers replaced by ``[card number]`` (see ``voxpipe.processors.policy.cards`` for what
counts as one).

A card number said across two final transcripts is caught too, whatever the timing of the
transcripts and the caller's turns: a final that ends in a run of digits (written or spoken;
``hold_min_digits`` or more, counting the run the previous final ended with) may be the first
part of a number, so it is held, and never released on its own, until a final that does not
end in a digit follows (the parts are checked as one), or the caller has been silent for
``hold_digits_s`` (or ``max_hold_s`` passed): the number was complete. A shorter run goes on
at once, and the rest of a card it begins is redacted from the next final. The end of the caller's
turn does not release it: an STT finalises what it heard after the VAD's "stopped" (Deepgram's
reply to Finalize), and a caller reading a card pauses between groups long enough to end a turn.
Should a caller pause mid-number for longer than that, the digits released last are
remembered (in memory only, until the next final) and a card number they start is redacted
from the next final: at most its first part is ever kept, never the whole number. Interim
transcripts hide every longer digit run, and every digit while a final is held.

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
    count_digits,
    mask_digit_runs,
    redact_card_numbers,
    redact_continued_card,
    trailing_run,
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
    # Caller silence after which a final ending in digits is released on its own: longer
    # than the pause between the digit groups of a card read out (about a second), short
    # enough that a reply to "my account is 1234 5678" is not much delayed.
    hold_digits_s: float = 2.0
    max_hold_s: float = 10.0  # however the caller's speech goes on
    # A final is held when the digit run it ends with (continuing the run the previous final
    # ended with) has this many digits. Fewer go on at once ("order four five six", no wait
    # for a reply) and the rest of a card they begin is redacted from the next final: PCI DSS
    # allows a card's first six digits to be shown, never the whole number.
    hold_min_digits: int = 7
    # A detected card number's pause reaches back to the start of the speech it was said in,
    # less this margin (the VAD reports speech a moment after it began), so a recorder that
    # still holds that audio silences the digits too.
    onset_margin_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("resume_after_s", "max_pause_s", "hold_digits_s", "max_hold_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PaymentGuardParams: {name} must be > 0")
        if self.hold_min_digits < 1:
            raise ValueError("PaymentGuardParams: hold_min_digits must be >= 1")


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
        self._tail = ""  # the digit run the last released final ended with (memory only)
        self._hold_timer: asyncio.Task[None] | None = None
        self._hold_max: asyncio.Task[None] | None = None
        self._user_speaking = False
        self._speech_at: float | None = None  # clock time the caller's current speech began
        self._held_since: float | None = None  # earliest speech of the held finals
        self._tail_since: float | None = None  # speech the remembered digit run began in
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

    async def pause(self, reason: str, since: float | None = None) -> None:
        """Pause recording and transcription (no-op while paused); ``since``: the clock time
        the paused span really began, for recorders that still hold audio from then."""
        if self.paused:
            return
        self.paused = True
        self.pause_reason = reason
        self.pauses += 1
        self.logger.info("recording and transcription paused: %s", reason)
        await self.push_frame(PauseRecordingFrame(reason=reason, since=since), UPSTREAM)
        await self.push_frame(PauseRecordingFrame(reason=reason, since=since), DOWNSTREAM)
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
            self._speech_at = self.clock.now()
            self._cancel_hold_timer()  # what is held may go on in what the caller says now
            if self.paused:
                self._cancel_quiet_timer()
        elif kind is UserStoppedSpeakingFrame and direction is DOWNSTREAM:
            self._user_speaking = False
            if self._held:
                self._restart_hold_timer()
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
            self._stop_hold_timers()
        await self.push_frame(frame, direction)

    async def _final(self, frame: TranscriptionFrame) -> None:
        began = self._speech_at if self._speech_at is not None else self.clock.now()
        self._held_since = began if self._held_since is None else min(self._held_since, began)
        self._held.append(frame)
        text = " ".join(f.text for f in self._held)
        run = trailing_run(f"{self._tail} {text}" if self._tail else text)
        if count_digits(run) < self.params.hold_min_digits:
            await self._flush()
            return
        # It may be the first part of a card number: wait for the rest, or for a silence.
        if self._hold_max is None:
            self._hold_max = self.create_task(
                self._release_after(self.params.max_hold_s),
                name="payment-hold-max",
                interruptible=False,
            )
        if not self._user_speaking:  # e.g. the STT's final after the caller's turn ended
            self._restart_hold_timer()

    async def _flush(self) -> None:
        self._stop_hold_timers()
        if not self._held:
            return
        held, self._held = self._held, []
        held_since, self._held_since = self._held_since, None
        tail_since = self._tail_since if self._tail else None
        out, found = self._redacted(held)
        # The run a next final may go on with (this one's, or the one before it continued).
        self._tail = trailing_run(f"{self._tail} {out.text}" if self._tail else out.text)
        if self._tail:
            continued = self._tail_since is not None and out.text.lstrip()[:1].isdigit()
            self._tail_since = tail_since if continued else held_since
        if found and self.params.pause_on_card:
            # Before the transcript: the turn it ends (and the reply it starts) is said during
            # the pause, so the recorder keeps none of it, whenever the turn ends. The pause
            # reaches back to the speech the number was said in (a run it continued included).
            starts = [t for t in (held_since, tail_since) if t is not None]
            since = min(starts) - self.params.onset_margin_s if starts else None
            await self.pause("card number spoken", since=since)
        await self.push_frame(out, DOWNSTREAM)

    async def _release_after(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        # This timer is finishing: the flush must not cancel the task it runs in.
        current = asyncio.current_task()
        if self._hold_timer is current:
            self._hold_timer = None
        if self._hold_max is current:
            self._hold_max = None
        await self._flush()

    def _restart_hold_timer(self) -> None:
        self._cancel_hold_timer()
        self._hold_timer = self.create_task(
            self._release_after(self.params.hold_digits_s),
            name="payment-hold",
            interruptible=False,
        )

    def _cancel_hold_timer(self) -> None:
        if self._hold_timer is not None and self._hold_timer is not asyncio.current_task():
            self._hold_timer.cancel()
        self._hold_timer = None

    def _stop_hold_timers(self) -> None:
        self._cancel_hold_timer()
        if self._hold_max is not None and self._hold_max is not asyncio.current_task():
            self._hold_max.cancel()
        self._hold_max = None

    def _interim(self, frame: TranscriptionFrame) -> TranscriptionFrame:
        # Shown, never kept: but a card may be half said, so a run as long as a card's first
        # group is hidden, and every digit while a final is held (they may go on with its number).
        min_digits = 1 if self._held or self._tail else 4
        text = mask_digit_runs(frame.text, self.params.placeholder, min_digits)
        if text == frame.text:
            return frame
        return dataclasses.replace(frame, text=text, words=[])

    def _redacted(self, frames: list[TranscriptionFrame]) -> tuple[TranscriptionFrame, int]:
        """One frame for ``frames`` with card numbers redacted, and how many there were."""
        text = " ".join(f.text.strip() for f in frames if f.text.strip())
        text, continued = redact_continued_card(self._tail, text, self.params.placeholder)
        clean, found = redact_card_numbers(text, self.params.placeholder)
        found += continued
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
