"""SilenceArtifactFilter: drops one-word transcripts heard right after the bot stopped speaking."""

from __future__ import annotations

import re
from collections.abc import Collection

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    TranscriptionFrame,
)
from voxpipe.processors.base import FrameProcessor

_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


def _normalise(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


class SilenceArtifactFilter(FrameProcessor):
    """Drops a final transcript of one short word arriving within ``window_s`` of the bot
    stopping: the STT hearing the line's echo or the caller's breath ("Yeah.", "Mm-hmm.").

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
        self.dropped = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        kind = type(frame)
        # The output transport sends these both ways; this filter sits before it (upstream).
        if kind is BotStoppedSpeakingFrame:
            self._bot_stopped_at = self.clock.now()
        elif kind is BotStartedSpeakingFrame:
            self._bot_stopped_at = None
        elif (
            isinstance(frame, TranscriptionFrame)
            and not isinstance(frame, InterimTranscriptionFrame)
            and self._is_artifact(frame.text)
        ):
            self.dropped += 1
            self.logger.info(
                "dropped %r as a silence artifact (%.0f ms after the bot stopped)",
                frame.text,
                (self.clock.now() - (self._bot_stopped_at or 0.0)) * 1000,
            )
            return
        await self.push_frame(frame, direction)

    def _is_artifact(self, text: str) -> bool:
        if self._bot_stopped_at is None or self.window_s <= 0:
            return False
        if self.clock.now() - self._bot_stopped_at > self.window_s:
            return False
        found = _WORD.findall(text)
        if len(found) != 1:
            return False
        word = _normalise(found[0])
        if not word or word in self.keep:
            return False
        if self.words is not None:
            return word in self.words
        return len(word) <= self.max_chars
