"""Interruption guard: how much the caller must say before the bot stops talking.

Two checks, both configured by ``InterruptionGuardParams``:

* duration, in the input transport: the caller's speech must have lasted ``min_speech_secs``
  since its onset before the VAD interrupts the bot (a click or a cough does not);
* words, in ``InterruptionGuard`` placed right after STT: with ``min_words`` set, only a
  transcript of that many words (fillers such as "mm-hmm" not counted) interrupts the bot,
  and what the caller said over the bot without reaching it is dropped, so the bot neither
  stops nor answers a backchannel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.frames import InterruptionsAllowedFrame

__all__ = ["DEFAULT_FILLERS", "InterruptionGuard", "InterruptionGuardParams", "count_words"]

DOWNSTREAM = FrameDirection.DOWNSTREAM

# Backchannels and hesitations: said over a speaker to show attention, not to take the turn.
DEFAULT_FILLERS = frozenset(
    {
        "mm",
        "mmm",
        "hm",
        "hmm",
        "mhm",
        "mm-hmm",
        "uh-huh",
        "uh",
        "um",
        "umm",
        "er",
        "erm",
        "ah",
        "oh",
    }
)

_WORD = re.compile(r"[\w'-]+")


def count_words(text: str, fillers: frozenset[str] = DEFAULT_FILLERS) -> int:
    """Words in ``text`` that are not fillers (case and punctuation ignored)."""
    return sum(1 for w in _WORD.findall(text.lower()) if w.strip("'-") and w not in fillers)


@dataclass(slots=True)
class InterruptionGuardParams:
    """How much caller speech may interrupt the bot.

    ``min_speech_secs``: seconds of speech since its onset (VAD) before the input transport
    interrupts; the VAD's own ``start_secs`` (0.2 s) already passes before "started", so
    values at or below it interrupt at "started". The default 0.4 s keeps coughs, clicks and
    most backchannels from cutting the bot off while still stopping it within about half a
    second, about a person's own reaction time to being talked over.

    ``min_words``: when above 0 the VAD alone never interrupts; an ``InterruptionGuard`` after
    STT must be in the pipeline and interrupts once the caller's transcript (interim or
    final) reaches this many words while the bot speaks. Words in ``fillers`` do not count.
    """

    min_speech_secs: float = 0.4
    min_words: int = 0
    fillers: frozenset[str] = field(default=DEFAULT_FILLERS)

    def __post_init__(self) -> None:
        if self.min_speech_secs < 0:
            raise ValueError(
                f"InterruptionGuardParams.min_speech_secs must be >= 0, got {self.min_speech_secs}"
            )
        if self.min_words < 0:
            raise ValueError(
                f"InterruptionGuardParams.min_words must be >= 0, got {self.min_words}"
            )


class InterruptionGuard(FrameProcessor):
    """After STT: while the bot speaks, only ``min_words`` words from the caller interrupt it.

    A caller turn that starts while the bot speaks (and interruptions are allowed) is
    *guarded*: interim transcripts are held back and final ones kept aside until the turn's
    words reach ``min_words``; then it requests the interruption and releases what it kept.
    If the bot stops speaking while the caller is still talking, the turn is released as is
    (an answer overlapping the bot's last words is not lost); a turn that ended over the bot
    without reaching the count (a backchannel) is dropped, late transcripts included, when
    the next caller turn starts. With ``min_words`` 0 it passes everything.
    """

    def __init__(
        self, params: InterruptionGuardParams | None = None, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.params = params if params is not None else InterruptionGuardParams()
        self.bot_speaking = False
        self.span_allowed = True  # False inside a non-interruptible span
        self.guarded = False
        self.user_speaking = False
        self._final_words = 0
        self._held: list[TranscriptionFrame] = []
        # Counters for tests and logs.
        self.interruptions = 0
        self.dropped = 0

    @property
    def allowed(self) -> bool:
        return self.interruptions_allowed and self.span_allowed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        if kind is BotStartedSpeakingFrame:
            self.bot_speaking = True
        elif kind is BotStoppedSpeakingFrame:
            self.bot_speaking = False
            if self.guarded and self.user_speaking:
                await self.push_frame(frame, direction)
                await self._release()
                return
        elif kind is InterruptionsAllowedFrame:
            assert isinstance(frame, InterruptionsAllowedFrame)
            self.span_allowed = frame.allowed
        elif kind is InterruptionFrame:
            # Interrupted by other means (VAD, DTMF): what the caller says is a real turn.
            if self.guarded:
                await self.push_frame(frame, direction)
                await self._release()
                return
        elif kind is UserStartedSpeakingFrame and direction is DOWNSTREAM:
            self.user_speaking = True
            self._drop_held()
            self.guarded = self.params.min_words > 0 and self.bot_speaking and self.allowed
            self._final_words = 0
        elif kind is UserStoppedSpeakingFrame and direction is DOWNSTREAM:
            self.user_speaking = False
        elif self.guarded and direction is DOWNSTREAM and isinstance(frame, TranscriptionFrame):
            await self._guarded_transcript(frame)
            return
        await self.push_frame(frame, direction)

    async def _guarded_transcript(self, frame: TranscriptionFrame) -> None:
        words = count_words(frame.text, self.params.fillers)
        interim = isinstance(frame, InterimTranscriptionFrame)
        total = self._final_words + words
        if not interim:
            self._final_words = total
            self._held.append(frame)
        if total < self.params.min_words:
            return
        if not self.allowed or not self.bot_speaking:
            # The bot stopped (or a span started) since the turn began: nothing to interrupt.
            await self._release(extra=frame if interim else None)
            return
        self.interruptions += 1
        self.logger.debug("caller said %d words over the bot: interrupting", total)
        await self.request_interruption(f"caller said {total} words")
        # The sweep passed through here and released the held frames already, unless the
        # request was refused (e.g. the input transport is inside a non-interruptible span).
        await self._release(extra=frame if interim else None)

    async def _release(self, extra: TranscriptionFrame | None = None) -> None:
        self.guarded = False
        held, self._held = self._held, []
        for f in held:
            await self.push_frame(f, DOWNSTREAM)
        if extra is not None:
            await self.push_frame(extra, DOWNSTREAM)

    def _drop_held(self) -> None:
        if self._held:
            self.dropped += len(self._held)
            self.logger.debug(
                "dropping %d transcript(s) said over the bot: fewer than %d words",
                len(self._held),
                self.params.min_words,
            )
        self._held = []
        self.guarded = False
