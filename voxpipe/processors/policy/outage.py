"""OutagePolicy: what the bot says while a provider is down, so the caller is never left in silence.

The provider services report their outages (``ProviderOutageFrame``: ``down``, ``up``,
``gave_up``; see ``processors/outage.py``), keep retrying with backoff and keep the caller's
audio. This policy, placed before the LLM, turns the reports into speech:

* the STT is down and the caller has just spoken (their words cannot be heard yet): the
  apology ("I'm having trouble hearing you, one moment"), again if they speak again after
  ``repeat_after_s``. Their words are not lost: the STT sends the audio kept meanwhile once it
  reconnects, so the question is answered right after the recovery;
* the TTS is down (a reply could not be spoken): the apology at once;
* a provider gave up (down longer than ``PROVIDER_OUTAGE_GRACE_S``): the goodbye, once. The
  provider asks the task to end the call right after its report, so the goodbye is said before
  the end passes and the call then ends through its ordinary path (transcript, hang-up).

The lines are ``TTSSpeakFrame``s; when the TTS pre-rendered them (``TTSService.prerender``),
they play from its cache and are heard even while the TTS provider is down. Their wording is
the bot's (per language), not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxpipe.frames import (
    Frame,
    FrameDirection,
    ProviderOutageFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.base import FrameProcessor

__all__ = ["OutageLines", "OutagePolicy"]

DOWNSTREAM = FrameDirection.DOWNSTREAM


@dataclass(frozen=True, slots=True)
class OutageLines:
    """What the bot says about an outage, in the call's language."""

    apology: str
    goodbye: str

    def all(self) -> tuple[str, ...]:
        """Every line, for the TTS to pre-render."""
        return tuple(t for t in (self.apology, self.goodbye) if t)


class OutagePolicy(FrameProcessor):
    """Speaks the apology and the goodbye for provider outages (place it before the LLM)."""

    def __init__(
        self,
        lines: OutageLines,
        *,
        repeat_after_s: float = 10.0,
        recent_speech_s: float = 3.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.lines = lines
        self.repeat_after_s = repeat_after_s
        self.recent_speech_s = recent_speech_s
        self.down: dict[str, ProviderOutageFrame] = {}  # service -> its ``down`` report
        self.apologies = 0
        self.said_goodbye = False
        self._last_apology: float | None = None
        self._speaking = False
        self._last_stop: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, ProviderOutageFrame):
            await self._on_outage(frame)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._speaking = True
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._speaking = False
            self._last_stop = self.clock.now()
            if "stt" in self.down:
                await self._apologize()

    async def _on_outage(self, frame: ProviderOutageFrame) -> None:
        if frame.state == "down":
            self.down[frame.service] = frame
            if frame.service == "tts":
                await self._apologize()
            elif frame.service == "stt" and self._spoke_recently():
                await self._apologize()
        elif frame.state == "up":
            self.down.pop(frame.service, None)
        elif frame.state == "gave_up" and not self.said_goodbye:
            self.said_goodbye = True
            if self.lines.goodbye:
                await self.push_frame(TTSSpeakFrame(self.lines.goodbye), DOWNSTREAM)

    def _spoke_recently(self) -> bool:
        """The caller is speaking, or stopped just before the outage was known."""
        if self._speaking:
            return False  # the apology comes when they stop
        last = self._last_stop
        return last is not None and self.clock.now() - last <= self.recent_speech_s

    async def _apologize(self) -> None:
        if self.said_goodbye or not self.lines.apology:
            return
        now = self.clock.now()
        if self._last_apology is not None and now - self._last_apology < self.repeat_after_s:
            return
        self._last_apology = now
        self.apologies += 1
        await self.push_frame(TTSSpeakFrame(self.lines.apology), DOWNSTREAM)
