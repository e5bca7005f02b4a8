"""TTSReply: one spoken reply between a TTS processor and its provider.

Text goes in sentence by sentence as it completes; the provider reads it with ``texts()`` and
hands back audio with ``push_audio`` (with character alignment or word timings when it has
them) and finally ``finish``. The TTS processor plays the reply's output in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from voxpipe.pipelines.clock import Clock
from voxpipe.processors.tts.words import CharAligner, TimedWord, proportional_words

__all__ = ["CharAlignment", "SpeechChunk", "TTSReply"]


@dataclass(slots=True)
class CharAlignment:
    """Per-character timings of one audio chunk, in ms from the chunk's start."""

    chars: Sequence[str]
    start_ms: Sequence[float]
    duration_ms: Sequence[float]


@dataclass(slots=True)
class SpeechChunk:
    """Audio of a reply, with the words completed up to it (times on the reply's audio)."""

    audio: bytes
    sample_rate: int
    encoding: str
    produced_at: float
    words: list[TimedWord] = field(default_factory=list)


class _Done:
    """End of a reply's output."""


DONE = _Done()


class TTSReply:
    """Text in, speech out, for one reply; the provider's side of the conversation."""

    def __init__(self, index: int, clock: Clock) -> None:
        self.index = index
        self.clock = clock
        self._texts: asyncio.Queue[str | None] = asyncio.Queue()
        self.out: asyncio.Queue[SpeechChunk | _Done] = asyncio.Queue()
        self.audio_seconds = 0.0  # audio produced so far
        self.first_text_at: float | None = None
        self.input_closed = False
        self.finished = False
        self.interrupted = False
        self.texts_taken: list[str] = []
        self._aligner = CharAligner()
        self._carry = b""  # an odd PCM16 byte waiting for its other half

    # ------------------------------------------------------------------ the TTS side

    def add_text(self, text: str) -> None:
        if text and not self.input_closed:
            self._texts.put_nowait(text)

    def end_input(self) -> None:
        if not self.input_closed:
            self.input_closed = True
            self._texts.put_nowait(None)

    # ------------------------------------------------------------------ the provider side

    async def texts(self) -> AsyncIterator[str]:
        """Each piece of text to speak (a sentence), as it comes, until the reply's text ends."""
        while True:
            text = await self.next_text()
            if text is None:
                return
            yield text

    async def next_text(self) -> str | None:
        """The next piece of text, or None once the reply's text has ended."""
        text = await self._texts.get()
        if text is None:
            self._texts.put_nowait(None)  # stays ended for every later reader
            return None
        if self.first_text_at is None:
            self.first_text_at = self.clock.now()
        self.texts_taken.append(text)
        return text

    def push_audio(
        self,
        audio: bytes,
        sample_rate: int,
        encoding: str = "pcm16",
        *,
        alignment: CharAlignment | None = None,
        words: Sequence[TimedWord] = (),
    ) -> int:
        """Hand over audio; ``alignment`` / ``words`` times are relative to this chunk's start.

        Returns how many whole words the alignment completed.
        """
        offset = self.audio_seconds
        done: list[TimedWord] = []
        if alignment is not None:
            done = self._aligner.add(
                alignment.chars, alignment.start_ms, alignment.duration_ms, offset
            )
        aligned = len(done)
        done += [TimedWord(w.word, w.start + offset, w.end + offset) for w in words]
        if encoding == "pcm16":
            audio = self._carry + audio
            self._carry = b""
            if len(audio) % 2:
                audio, self._carry = audio[:-1], audio[-1:]
            self.audio_seconds += len(audio) / (2 * sample_rate)
        else:
            self.audio_seconds += len(audio) / sample_rate
        if audio or done:
            self.out.put_nowait(
                SpeechChunk(audio, sample_rate, encoding, self.clock.now(), words=done)
            )
        return aligned

    def drop_partial_word(self) -> None:
        """Forget an aligned word cut short (its audio will come again another way)."""
        self._aligner.flush()

    def push_words(self, words: Sequence[TimedWord]) -> None:
        """Word timings on the reply's audio timeline (for audio already pushed)."""
        if words:
            self.out.put_nowait(SpeechChunk(b"", 0, "pcm16", self.clock.now(), list(words)))

    def push_proportional_words(self, text: str, start: float) -> None:
        """``text``'s words spread over the audio pushed since ``start`` (no real timings)."""
        self.push_words(proportional_words(text, start, self.audio_seconds))

    def finish(self) -> None:
        """No more output: the last unterminated aligned word goes out, then the end."""
        if self.finished:
            return
        self.finished = True
        tail = self._aligner.flush()
        if tail:
            self.push_words(tail)
        self.out.put_nowait(DONE)

    @property
    def aligned_chars(self) -> int:
        """Characters (spaces included) the provider has sent timings for."""
        return self._aligner.chars_seen
