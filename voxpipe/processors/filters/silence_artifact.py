"""SilenceArtifactFilter: drops one-word transcripts heard right after the bot stopped speaking.

"Right after" is measured on the call's audio timeline, not by when the transcript arrives:
the word's start (``Word.call_start``, the STT's word time mapped to the call clock) against
the moment the bot's audio stopped playing (when ``BotStoppedSpeakingFrame`` comes up from the
output transport, which pushes it once its last chunk played, on its clock estimate or the
wire's mark echo). With Deepgram's endpointing and the network a transcript arrives 0.5-1 s after
the word was said, so comparing arrival times let most real artifacts through. A transcript
without word times (an STT that gives none) falls back to its arrival time.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
)
from voxpipe.processors.base import FrameProcessor

_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


def _normalise(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


class SilenceArtifactFilter(FrameProcessor):
    """Drops a final transcript of one short word said within ``window_s`` of the bot's audio
    stopping (on the call's audio timeline, see the module doc): the STT hearing the line's
    echo or the caller's breath ("Yeah.", "Mm-hmm."). A stop caused by the caller barging in
    opens no window: what they say then is a real turn.

    With ``words`` given, only those words are dropped; otherwise any single word of at most
    ``max_chars`` letters. Words in ``keep`` are never dropped (e.g. digits for an IVR menu).
    ``window_s`` defaults to the ``SILENCE_ARTIFACT_WINDOW_S`` setting (0.5 s); 0 disables.
    """

    def __init__(
        self,
        *,
        window_s: float | None = None,
        words: Collection[str] | None = None,
        max_chars: int = 8,
        keep: Collection[str] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if window_s is None:
            from voxpipe.config.settings import get_settings

            window_s = get_settings().silence_artifact_window_s
        self.window_s = window_s
        self.words = {_normalise(w) for w in words} if words is not None else None
        self.max_chars = max_chars
        self.keep = {_normalise(w) for w in keep}
        self._bot_stopped_at: float | None = None
        self._interrupted = False  # the bot's speech was cut by the caller, not finished
        self.dropped = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        # The output transport sends these both ways; this filter sits before it (upstream).
        if kind is BotStoppedSpeakingFrame:
            # Pushed straight up the moment the bot's audio stopped playing.
            self._bot_stopped_at = None if self._interrupted else self.clock.now()
            self._interrupted = False
        elif kind is BotStartedSpeakingFrame:
            self._bot_stopped_at = None
            self._interrupted = False
        elif kind is InterruptionFrame:
            self._interrupted = True
        elif (
            isinstance(frame, TranscriptionFrame)
            and not isinstance(frame, InterimTranscriptionFrame)
            and self._is_artifact(frame)
        ):
            self.dropped += 1
            self.logger.info(
                "dropped %r as a silence artifact (said %.0f ms after the bot stopped)",
                frame.text,
                self._said_after(frame) * 1000,
            )
            return
        await self.push_frame(frame, direction)

    def _said_after(self, frame: TranscriptionFrame) -> float:
        """Seconds from the bot's stop to the start of the transcript's speech (call clock)."""
        stopped = self._bot_stopped_at if self._bot_stopped_at is not None else 0.0
        start = frame.words[0].call_start if frame.words else None
        if start is None:  # no word times: when the transcript came is all there is
            start = self.clock.now()
        return start - stopped

    def _is_artifact(self, frame: TranscriptionFrame) -> bool:
        if self._bot_stopped_at is None or self.window_s <= 0:
            return False
        if self._said_after(frame) > self.window_s:
            return False
        found = _WORD.findall(frame.text)
        if len(found) != 1:
            return False
        word = _normalise(found[0])
        if not word or word in self.keep:
            return False
        if self.words is not None:
            return word in self.words
        return len(word) <= self.max_chars
