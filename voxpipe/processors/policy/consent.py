"""Consent before retention, by jurisdiction: asked (``ivr``), told (``notice``), or neither.

``ConsentGate`` sits after STT, before anything that keeps or answers the caller's words. Its
``policy`` comes from the caller's locale row (``Call.consent_policy``):

* ``ivr`` — at the start of a call it looks the caller up in the ``ConsentStore``: a caller whose
  choice is stored (and younger than ``ttl_s``) is not asked again. Otherwise it speaks the
  prompt (a legal notice: the caller's speech does not cut it off) and waits for a key, 1 or 2,
  or a spoken yes / no in the caller's language (``ConsentPrompts.yes_words`` / ``no_words``).
  Until the choice is made the conversation does not start: the caller's other transcripts go no
  further and the greeting (``after``) is said once the choice is made. No answer after the
  prompt and one reminder, or a hang-up, keeps nothing; only a key press or a spoken answer is
  stored as the caller's choice.
* ``notice`` — a one-sentence recording notice, then the greeting at once; continuing is
  consent (granted as soon as the caller is known not to have withdrawn on an earlier call).
  The caller is answered without pressing anything.
* ``none`` — the greeting, and the call is retained.

At any time after that the caller may withdraw ("stop recording", "don't record this", in
their language, ``withdraw_phrases``): the gate sends a ``RetentionConsentFrame`` with
``granted`` False and ``source`` ``"withdrawn"`` (the ``TranscriptRecorder`` stops and deletes
what it stored of the call), stores the refusal for the caller, and says so.

Every decision reaches the recorder as a ``RetentionConsentFrame`` whose ``source`` says how it
was made: ``dtmf``, ``speech``, ``stored``, ``no_answer``, ``notice``, ``none``, ``withdrawn``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.config.locales import ConsentPolicy
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
from voxpipe.processors.policy.phrases import PhraseMatcher, yes_or_no
from voxpipe.state.consent import ConsentRecord, ConsentStore

__all__ = ["ConsentGate", "ConsentPrompts"]

DOWNSTREAM = FrameDirection.DOWNSTREAM


def _en(key: str) -> Callable[[], str]:
    return lambda: LocaleTexts.for_locale("en").text(key)


def _en_phrases(key: str) -> Callable[[], tuple[str, ...]]:
    return lambda: LocaleTexts.for_locale("en").phrases(key)


@dataclass(slots=True)
class ConsentPrompts:
    """What the consent flow says and listens for; ``for_locale`` reads a language's wording
    from the locale data (the defaults are the English wording)."""

    prompt: str = field(default_factory=_en("consent.ivr.prompt"))
    reminder: str = field(default_factory=_en("consent.ivr.reminder"))
    agreed: str = field(default_factory=_en("consent.agreed"))
    declined: str = field(default_factory=_en("consent.declined"))
    no_answer: str = field(default_factory=_en("consent.no_answer"))
    notice: str = field(default_factory=_en("consent.notice"))
    withdrawn: str = field(default_factory=_en("consent.withdrawn"))
    yes_words: tuple[str, ...] = field(default_factory=_en_phrases("consent.yes_words"))
    no_words: tuple[str, ...] = field(default_factory=_en_phrases("consent.no_words"))
    withdraw_phrases: tuple[str, ...] = field(
        default_factory=_en_phrases("consent.withdraw_phrases")
    )

    @classmethod
    def for_locale(cls, locale: str) -> ConsentPrompts:
        """The wording of ``locale``'s language; spoken answers are accepted in that language
        and in English (callers often answer a recorded prompt in English)."""
        texts, english = LocaleTexts.for_locale(locale), LocaleTexts.for_locale("en")

        def both(key: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(texts.phrases(key) + english.phrases(key)))

        return cls(
            prompt=texts.text("consent.ivr.prompt"),
            reminder=texts.text("consent.ivr.reminder"),
            agreed=texts.text("consent.agreed"),
            declined=texts.text("consent.declined"),
            no_answer=texts.text("consent.no_answer"),
            notice=texts.text("consent.notice"),
            withdrawn=texts.text("consent.withdrawn"),
            yes_words=both("consent.yes_words"),
            no_words=both("consent.no_words"),
            withdraw_phrases=both("consent.withdraw_phrases"),
        )


class ConsentGate(FrameProcessor):
    """Applies the caller's consent policy (ivr / notice / none), stores their choice per caller
    id, holds the conversation back until an IVR choice is made, and handles withdrawal."""

    def __init__(
        self,
        store: ConsentStore,
        *,
        caller: str,
        call_id: str = "",
        prompts: ConsentPrompts | None = None,
        after: str = "",
        policy: ConsentPolicy = "ivr",
        answer_timeout_s: float = 8.0,
        reminders: int = 1,
        ttl_s: float | None = None,
        wall_clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if policy not in ("ivr", "notice", "none"):
            raise ValueError(f"consent policy must be ivr, notice or none, not {policy!r}")
        self.store = store
        self.caller = caller
        self.consent_call_id = call_id
        self.prompts = prompts or ConsentPrompts()
        self.after = after
        self.policy = policy
        self.answer_timeout_s = answer_timeout_s
        self.reminders = reminders
        self.ttl_s = ttl_s  # a stored choice older than this is asked again (None: never)
        self.wall_clock = wall_clock  # epoch seconds, as stored choices are dated
        self.granted: bool | None = None  # the decision for this call, once made
        self.source = ""  # see the module docstring
        self.asking = False
        self._reminded = 0
        self._timer: asyncio.Task[None] | None = None
        self._yes = PhraseMatcher(self.prompts.yes_words)
        self._no = PhraseMatcher(self.prompts.no_words)
        self._withdraw = PhraseMatcher(self.prompts.withdraw_phrases)

    @property
    def decided(self) -> bool:
        return self.granted is not None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._open()
            return
        if direction is DOWNSTREAM and isinstance(frame, DTMFFrame | TranscriptionFrame):
            if await self._caller_input(frame):
                return  # consumed: the conversation does not see it
        if self.asking:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._stop_timer()  # the wait for an answer starts once the prompt has played
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._start_timer()
        await self.push_frame(frame, direction)

    async def _open(self) -> None:
        if self.policy == "none":
            await self._say(self.after)
            await self._decide(True, "none", store=False)
            return
        if self.policy == "notice":
            # Told before anything else is said; the caller is answered without pressing a key.
            for f in uninterruptible(TTSSpeakFrame(self.prompts.notice), reason="recording notice"):
                await self.push_frame(f)
            await self._say(self.after)
        # The lookup may wait on the database: it must not hold up the call's start.
        self.create_task(self._look_up(), name="consent-lookup", interruptible=False)

    async def _caller_input(self, frame: DTMFFrame | TranscriptionFrame) -> bool:
        """Handle a key or a transcript; True when it was consumed."""
        if isinstance(frame, DTMFFrame):
            if self.policy == "ivr" and not self.decided:
                await self._key(frame.digit)
                return True
            return False
        if self.policy == "ivr" and not self.decided:
            if self.asking and frame.final:
                answer = yes_or_no(frame.text, self._yes, self._no)
                if answer is not None:
                    await self._decide(answer, "speech")
            return True  # the conversation has not started: speech over the prompt is dropped
        if frame.final and self._withdraw.search(frame.text):
            await self._withdrawn()
            return True
        return False

    async def _look_up(self) -> None:
        try:
            record = await self.store.get(self.caller)
        except Exception as exc:  # a store outage asks again rather than assume either way
            self.logger.warning("consent store unavailable: %s", exc)
            record = None
        record = self._current(record)
        if self.decided:
            return  # the caller answered (or withdrew) before the lookup came back
        if self.policy == "notice":
            # An earlier withdrawal or refusal still holds; otherwise continuing is consent.
            if record is not None and not record.granted:
                await self._decide(False, "stored", store=False)
            else:
                await self._decide(True, "notice", store=False)
            return
        if record is not None:
            await self._decide(record.granted, "stored", store=False)
            return
        self.asking = True
        for f in uninterruptible(TTSSpeakFrame(self.prompts.prompt), reason="consent notice"):
            await self.push_frame(f)
        self._start_timer()  # also covers a pipeline with no audio output to say it played

    def _current(self, record: ConsentRecord | None) -> ConsentRecord | None:
        """``record``, or None when it is older than ``ttl_s`` (the caller is asked again)."""
        if record is None or self.ttl_s is None:
            return record
        age = self.wall_clock() - record.decided_at
        if age > self.ttl_s:
            self.logger.info("stored consent choice expired (%.0f days old)", age / 86400)
            return None
        return record

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
            await self._store(granted)
        if was_asking:
            if source == "no_answer":
                reply = self.prompts.no_answer
            else:
                reply = self.prompts.agreed if granted else self.prompts.declined
            await self.push_frame(TTSSpeakFrame(reply))
            await self._say(self.after)
        elif self.policy == "ivr":
            await self._say(self.after)  # a known caller: greeted at once

    async def _withdrawn(self) -> None:
        """The caller withdrew: stop keeping the call, delete what was kept, remember it."""
        if self.granted is False:
            await self.push_frame(TTSSpeakFrame(self.prompts.no_answer))  # nothing is kept
            return
        self.granted, self.source = False, "withdrawn"
        self.logger.info("retention consent withdrawn by the caller")
        await self.push_frame(RetentionConsentFrame(granted=False, source="withdrawn"))
        await self._store(False)
        await self.push_frame(TTSSpeakFrame(self.prompts.withdrawn))

    async def _store(self, granted: bool) -> None:
        try:
            stored = await self.store.record(
                self.caller, granted, call_id=self.consent_call_id or self.call_id
            )
            if not stored:
                self.logger.info("caller id withheld: the choice applies to this call only")
        except Exception as exc:  # the choice still applies to this call
            self.logger.error("consent could not be stored: %s", exc)

    async def _say(self, text: str) -> None:
        if text:
            await self.push_frame(TTSSpeakFrame(text))

    def _start_timer(self) -> None:
        self._stop_timer()
        self._timer = self.create_task(self._no_answer(), name="consent-wait", interruptible=False)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
