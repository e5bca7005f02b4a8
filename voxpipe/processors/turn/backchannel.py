"""Backchannel or barge-in: what the caller's speech over the bot means, judged from its words.

While the bot speaks, "uh-huh", "okay", "right", a cough or a short noise must not stop it;
"wait", "no", "that's wrong" or any real sentence must. ``InterruptionArbiter`` sits right
after the STT (it reads interim and final transcripts) and works with both transports:

1. at start it announces itself upstream (``SmartInterruptionsFrame``): the input transport
   then interrupts on its own only when speech over the bot lasts ``max_speech_secs`` (a long
   utterance is a turn whatever its words), and ends such speech at the VAD's stop;
2. when the caller starts speaking over the bot, it pauses the bot's audio
   (``PauseBotOutputFrame``): the output stops sending, what was sent plays out, so the caller
   has heard exactly what was sent; the caller's transcripts are held back meanwhile;
3. a stop phrase, or ``min_words`` words that are not backchannels, interrupts at once (the
   sweep flushes the wire, cancels the LLM and TTS, and the context keeps what was heard),
   and the held transcripts go on as the caller's turn;
4. when the caller stops, words that are only backchannels (or no words within
   ``final_wait_secs``: a noise) resume the bot from where it paused
   (``ResumeBotOutputFrame``), the transcripts are dropped and a ``BackchannelFrame`` tells
   observers; a final transcript that arrives later and turns out to be a real turn still
   interrupts. Any other word after the caller stopped ("what?") interrupts.

The word lists are locale data: ``interruption.backchannels`` and ``interruption.stop_phrases``
in ``voxpipe/config/texts/<lang>.json`` (matched as whole words, case and accents ignored).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from voxpipe.config.locale_texts import LocaleTexts
from voxpipe.frames import (
    BackchannelFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    InterruptionFrame,
    PauseBotOutputFrame,
    ResumeBotOutputFrame,
    SmartInterruptionsFrame,
    StartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.policy.frames import InterruptionsAllowedFrame
from voxpipe.processors.policy.phrases import PhraseMatcher, normalize_speech

if TYPE_CHECKING:
    from voxpipe.config.settings import VoxpipeSettings

__all__ = [
    "BackchannelWords",
    "InterruptionArbiter",
    "InterruptionParams",
    "Verdict",
    "interruption_params",
]

DOWNSTREAM = FrameDirection.DOWNSTREAM
UPSTREAM = FrameDirection.UPSTREAM

BACKCHANNELS_KEY = "interruption.backchannels"
STOP_PHRASES_KEY = "interruption.stop_phrases"


@dataclass(slots=True, frozen=True)
class InterruptionParams:
    """How caller speech over the bot is judged.

    ``mode``: ``smart`` (pause, judge the words, resume on a backchannel) or ``immediate``
    (the arbiter stands aside: the input transport's VAD guard alone interrupts).
    ``max_speech_secs``: speech over the bot this long (from its onset, counted while the
    caller is speaking) interrupts whatever its words; the default 0.8 s is longer than a
    backchannel ("uh-huh", "mm-hmm, right") and bounds how long the bot waits paused.
    ``min_words``: words that are not backchannels which interrupt while the caller is still
    speaking (after they stop, one is enough). ``final_wait_secs``: once the caller stopped,
    how long the STT's final transcript is awaited when no word came (then: a noise).
    ``max_pause_secs``: the output resumes by itself after this long paused (a safety net).
    """

    mode: Literal["smart", "immediate"] = "smart"
    max_speech_secs: float = 0.8
    min_words: int = 2
    final_wait_secs: float = 0.5
    max_pause_secs: float = 3.0

    def __post_init__(self) -> None:
        if self.mode not in ("smart", "immediate"):
            raise ValueError(
                f"InterruptionParams.mode must be smart or immediate, not {self.mode!r}"
            )
        if self.max_speech_secs <= 0 or self.final_wait_secs < 0 or self.max_pause_secs <= 0:
            raise ValueError("InterruptionParams: durations must be positive")
        if self.min_words < 1:
            raise ValueError(f"InterruptionParams.min_words must be >= 1, got {self.min_words}")


def interruption_params(settings: VoxpipeSettings) -> InterruptionParams:
    """The interruption parameters a call runs with under ``settings``."""
    return InterruptionParams(
        mode=settings.interruption_mode,
        max_speech_secs=settings.backchannel_max_s,
        min_words=settings.backchannel_min_words,
    )


@dataclass(slots=True, frozen=True)
class Verdict:
    """What an utterance says: a stop phrase in it, and its words that are not backchannels."""

    stop: str | None
    words: int
    empty: bool  # no word at all (a noise, or nothing recognised)


class BackchannelWords:
    """A locale's backchannels ("uh-huh", "okay") and stop phrases ("wait", "that's wrong")."""

    def __init__(self, backchannels: tuple[str, ...], stop_phrases: tuple[str, ...]) -> None:
        self.backchannels = PhraseMatcher(backchannels)
        self.stops = PhraseMatcher(stop_phrases)

    @classmethod
    def for_locale(cls, locale: str) -> BackchannelWords:
        """The lists of ``locale`` from the locale data (English where not translated)."""
        texts = LocaleTexts.for_locale(locale)
        return cls(texts.phrases(BACKCHANNELS_KEY), texts.phrases(STOP_PHRASES_KEY))

    def judge(self, text: str) -> Verdict:
        """The verdict on ``text`` (case, punctuation and accents ignored)."""
        plain = normalize_speech(text)
        if not plain:
            return Verdict(None, 0, True)
        stops = self.stops.spans(text)
        if stops:
            a, b = stops[0]
            return Verdict(plain[a:b], 0, False)
        rest = plain
        for a, b in reversed(self.backchannels.spans(text)):
            rest = rest[:a] + " " + rest[b:]
        words = [w for w in rest.split() if w.strip("'")]
        return Verdict(None, len(words), False)


class InterruptionArbiter(FrameProcessor):
    """After STT: pauses the bot when the caller talks over it, then resumes or interrupts.

    See the module's docstring. Counters: ``backchannels`` (resumed), ``interruptions``
    (asked for), ``dropped`` (transcripts of backchannels kept from the conversation).
    """

    def __init__(
        self,
        params: InterruptionParams | None = None,
        *,
        words: BackchannelWords | None = None,
        locale: str = "en",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.params = params if params is not None else InterruptionParams()
        self.words = words if words is not None else BackchannelWords.for_locale(locale)
        self.bot_speaking = False
        self.span_allowed = True
        self.user_speaking = False
        self.judging = False  # caller speech over the bot, undecided, bot paused
        self._late = False  # judged a backchannel: its late transcripts are still read
        self._onset = 0.0
        self._finals: list[TranscriptionFrame] = []
        self._interim: InterimTranscriptionFrame | None = None  # newer than the last final
        self._timer: asyncio.Task[None] | None = None
        self._swept = False
        # Counters for tests, metrics and benchmarks.
        self.backchannels = 0
        self.interruptions = 0
        self.dropped = 0
        self.last_reason = ""

    @property
    def smart(self) -> bool:
        return self.params.mode == "smart"

    @property
    def allowed(self) -> bool:
        return self.smart and self.interruptions_allowed and self.span_allowed

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        if kind is StartFrame:
            await self.push_frame(frame, direction)
            if self.smart:
                announce = SmartInterruptionsFrame(max_speech_secs=self.params.max_speech_secs)
                await self.push_frame(announce, UPSTREAM)
            return
        if kind is BotStartedSpeakingFrame:
            self.bot_speaking = True
        elif kind is BotStoppedSpeakingFrame:
            self.bot_speaking = False
            self._late = False
            if self.judging:
                # The bot finished meanwhile: what the caller says is a turn of its own.
                await self.push_frame(frame, direction)
                await self._release()
                return
        elif kind is InterruptionsAllowedFrame:
            assert isinstance(frame, InterruptionsAllowedFrame)
            self.span_allowed = frame.allowed
        elif kind is InterruptionFrame:
            self._swept = True
            self._late = False
            if self.judging:  # interrupted by other means (the VAD's limit, DTMF)
                await self.push_frame(frame, direction)
                await self._release()
                return
        elif direction is DOWNSTREAM:
            if kind is UserStartedSpeakingFrame:
                await self._user_started(frame)
                return
            if kind is UserStoppedSpeakingFrame:
                self.user_speaking = False
                await self.push_frame(frame, direction)
                if self.judging:
                    await self._judge()
                return
            if isinstance(frame, TranscriptionFrame) and (self.judging or self._late):
                await self._transcript(frame)
                return
        await self.push_frame(frame, direction)

    async def _user_started(self, frame: Frame) -> None:
        self.user_speaking = True
        if self._late:
            self._late = False
            self._finals, self._interim = [], None
        self._stop_timer()
        if self.judging:
            # The caller goes on after a short pause: the same speech, still paused.
            await self.push_frame(frame, DOWNSTREAM)
            return
        if self.bot_speaking and self.allowed:
            self.judging = True
            self._onset = self.clock.now()
            self._finals = []
            self._interim = None
            # Pause first: the far end's buffer is what the caller still hears.
            timeout = self.params.max_pause_secs
            await self.push_frame(PauseBotOutputFrame(reason="caller speech", timeout_secs=timeout))
        await self.push_frame(frame, DOWNSTREAM)

    async def _transcript(self, frame: TranscriptionFrame) -> None:
        if isinstance(frame, InterimTranscriptionFrame):
            self._interim = frame
        else:
            self._finals.append(frame)
            self._interim = None
        if self.judging:
            await self._judge()
            return
        # A late transcript of speech already judged a backchannel (the bot went on).
        verdict = self.words.judge(self._text())
        if (verdict.stop or verdict.words) and self.bot_speaking and self.span_allowed:
            self._late = False
            await self._interrupt(self._reason(verdict))
        elif not isinstance(frame, InterimTranscriptionFrame):
            self.dropped += 1

    def _text(self) -> str:
        parts = [f.text for f in self._finals]
        if self._interim is not None:
            parts.append(self._interim.text)
        return " ".join(parts)

    def _reason(self, verdict: Verdict) -> str:
        if verdict.stop:
            return f"caller said {verdict.stop!r}"
        return f"caller said {verdict.words} word(s) over the bot"

    async def _judge(self) -> None:
        """Decide on what was heard so far, or wait for more."""
        verdict = self.words.judge(self._text())
        if verdict.stop or verdict.words >= self.params.min_words:
            await self._interrupt(self._reason(verdict))
            return
        if self.user_speaking:
            return  # more may come: the VAD's limit interrupts a long one
        if verdict.words:
            await self._interrupt(self._reason(verdict))  # "what?", a name: a turn
        elif not verdict.empty:
            # Only backchannels. On an interim the bot goes on now; the final may still differ.
            await self._backchannel()
        elif self._timer is None:
            coro = self._await_final()
            self._timer = self.create_task(coro, name="await-final")
            # Cancelled before it ran (the final came at once): no "never awaited" warning.
            self._timer.add_done_callback(lambda _: coro.close())

    async def _await_final(self) -> None:
        await self.clock.sleep(self.params.final_wait_secs)
        self._timer = None
        if self.judging and not self.user_speaking:
            await self._backchannel()  # no word came: a cough, a noise

    # ------------------------------------------------------------------ decisions

    async def _interrupt(self, reason: str) -> None:
        self.judging = False
        self._stop_timer()
        self.interruptions += 1
        self.last_reason = reason
        self.logger.debug("interrupting the bot: %s", reason)
        self._swept = False
        await self.request_interruption(reason)
        if not self._swept:
            # Refused (e.g. a span began): the bot goes on, the caller's words too.
            await self.push_frame(ResumeBotOutputFrame(reason="interruption refused"))
        await self._release_held()

    async def _backchannel(self) -> None:
        self.judging = False
        self._stop_timer()
        self._late = True
        self.backchannels += 1
        text = self._text()
        self.last_reason = "backchannel" if text.strip() else "noise"
        speech = self.clock.now() - self._onset
        self.logger.debug("caller said %r over the bot: the bot goes on", text)
        await self.push_frame(ResumeBotOutputFrame(reason=self.last_reason))
        await self.push_frame(BackchannelFrame(text=text, speech_secs=speech, paused=True))
        self.dropped += len(self._finals)
        self._finals = []
        self._interim = None

    async def _release(self) -> None:
        """Stop judging: the bot stopped or was interrupted; held words are the caller's turn."""
        self.judging = False
        self._stop_timer()
        await self._release_held()

    async def _release_held(self) -> None:
        finals, interim = self._finals, self._interim
        self._finals, self._interim = [], None
        for f in finals:
            await self.push_frame(f, DOWNSTREAM)
        if interim is not None:
            await self.push_frame(interim, DOWNSTREAM)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
