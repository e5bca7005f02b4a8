"""Pre-rendered speech: lines a bot must be able to say when its TTS provider cannot speak.

An outage apology, a goodbye and the LLM's fallback line are rendered once per worker process
(at the first call's start) and kept here, keyed by the voice, the text and the audio format,
so that later calls play them without the provider — which is what makes them sayable while
the provider is down. A line the configured TTS cannot render (down at that moment) is
rendered offline with espeak-ng instead (``render_offline``), and the configured TTS is
asked again by the next call.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voxpipe.audio import pcm16_to_mulaw, resample_pcm16
from voxpipe.processors.tts.words import TimedWord, proportional_words

__all__ = [
    "SPEECH_CACHE",
    "CachedSpeech",
    "SpeechCache",
    "SpeechKey",
    "render_offline",
    "to_wire_format",
]


@dataclass(frozen=True, slots=True)
class SpeechKey:
    """What a rendering depends on: the voice (vendor, voice, model, language), the text, the
    audio format."""

    voice: str
    text: str
    encoding: str
    sample_rate: int


@dataclass(frozen=True, slots=True)
class CachedSpeech:
    """A rendered line: its audio in one format and its words' times on that audio."""

    audio: bytes
    sample_rate: int
    encoding: str
    words: tuple[TimedWord, ...]
    offline: bool = False  # rendered with espeak-ng, not the configured voice

    @property
    def duration(self) -> float:
        width = 2 if self.encoding == "pcm16" else 1
        return len(self.audio) / (width * self.sample_rate)


class SpeechCache:
    """Rendered lines of this process, rendered once each (concurrent asks share a render)."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._done: OrderedDict[SpeechKey, CachedSpeech] = OrderedDict()
        self._pending: dict[tuple[int, SpeechKey], asyncio.Future[CachedSpeech]] = {}
        self.renders = 0  # renders started (for operators and tests)

    def get(self, key: SpeechKey) -> CachedSpeech | None:
        speech = self._done.get(key)
        if speech is not None:
            self._done.move_to_end(key)
        return speech

    def put(self, key: SpeechKey, speech: CachedSpeech) -> None:
        self._done[key] = speech
        self._done.move_to_end(key)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)

    async def get_or_render(
        self, key: SpeechKey, render: Callable[[], Awaitable[CachedSpeech]]
    ) -> CachedSpeech:
        """The cached rendering of ``key``, rendered with ``render`` if nobody has yet.

        A render already running (for another call on this loop) is awaited rather than
        repeated; if it fails, this caller renders on its own.
        """
        speech = self.get(key)
        if speech is not None:
            return speech
        slot = (id(asyncio.get_running_loop()), key)
        pending = self._pending.get(slot)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not pending.cancelled() or (current is not None and current.cancelling()):
                    raise
                # That call ended mid-render: render with ours.
            except Exception:
                pass  # that call's render failed: try with ours
        future: asyncio.Future[CachedSpeech] = asyncio.get_running_loop().create_future()
        self._pending[slot] = future
        self.renders += 1
        try:
            speech = await render()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, render on their own
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            self.put(key, speech)
            future.set_result(speech)
            return speech
        finally:
            if self._pending.get(slot) is future:
                del self._pending[slot]

    def clear(self) -> None:
        self._done.clear()


SPEECH_CACHE = SpeechCache()


def to_wire_format(speech: CachedSpeech, encoding: str, sample_rate: int) -> CachedSpeech:
    """``speech`` in the wire's format: linear audio is resampled and mu-law encoded as needed.

    A TTS that renders 16-bit PCM (espeak-ng, say) can still pre-render lines for a mu-law
    phone line; only audio already in another compressed format is left for the caller to
    reject.
    """
    if speech.encoding != "pcm16" or (speech.encoding, speech.sample_rate) == (
        encoding,
        sample_rate,
    ):
        return speech
    pcm = resample_pcm16(speech.audio, speech.sample_rate, sample_rate)
    if encoding == "mulaw":
        audio = pcm16_to_mulaw(pcm)
    elif encoding == "pcm16":
        audio = pcm
    else:
        return speech
    return CachedSpeech(audio, sample_rate, encoding, speech.words, speech.offline)


def render_offline(text: str, voice: str, encoding: str, sample_rate: int) -> CachedSpeech:
    """Render ``text`` with espeak-ng (blocking: run it in a thread) in the given format."""
    from voxpipe.processors.tts.espeak import EspeakEngine, word_timings

    engine = EspeakEngine.get()
    if not engine.has_voice(voice):
        voice = "en-us"
    synthesis = engine.synthesize(text, voice, 175, None)
    pcm = resample_pcm16(synthesis.pcm, synthesis.sample_rate, sample_rate)
    duration = len(pcm) / (2 * sample_rate)
    try:
        words = word_timings(text, synthesis, duration)
    except ValueError:
        words = proportional_words(text, 0.0, duration)
    audio = pcm16_to_mulaw(pcm) if encoding == "mulaw" else pcm
    return CachedSpeech(audio, sample_rate, encoding, tuple(words), offline=True)
