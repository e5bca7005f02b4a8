"""TTSService: what every text-to-speech processor shares.

LLM text (``LLMTextFrame``) is gathered into sentences and each sentence goes to the provider
as soon as it is complete; a ``TTSSpeakFrame`` is spoken as is. A reply (from
``LLMResponseStartFrame`` to ``LLMResponseEndFrame``, or one ``TTSSpeakFrame``) comes out as
``TTSStartedFrame``, ``OutputAudioFrame`` chunks with a ``TTSTextFrame`` per word placed right
after the audio that speaks it, and ``TTSStoppedFrame``. Ordered frames keep their place
relative to the audio: output is held in one queue and drained by an owned task, so an
interruption drops it all (and the provider's stream is stopped) and nothing generated
before the interruption comes out after it.

A provider subclass implements ``synthesize`` (one sentence at a time) or, for a streaming
provider, ``synthesize_reply`` (a whole reply's text as it arrives).

Lines named with ``prerender`` (an outage apology, a goodbye, the LLM's fallback line) are
rendered at the call's start, once per worker process (``tts/cache.py``), with this TTS or,
when it cannot, offline with espeak-ng; a ``TTSSpeakFrame`` of such a line plays the cached
audio, so it is heard even while the provider is down. A provider that reports itself down
(``provider_failed``) is probed with backoff (``probe``) until it answers again or
``outage_grace_s`` runs out, when the call is ended gracefully (see ``processors/outage.py``).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from voxpipe.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioFrame,
    StartFrame,
    SystemFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.outage import DEFAULT_OUTAGE_GRACE_S, Backoff, OutageTracker
from voxpipe.processors.tts.cache import (
    SPEECH_CACHE,
    CachedSpeech,
    SpeechCache,
    SpeechKey,
    render_offline,
    to_wire_format,
)
from voxpipe.processors.tts.reply import DONE, SpeechChunk, TTSReply
from voxpipe.processors.tts.sentences import SentenceSplitter
from voxpipe.processors.tts.words import TimedWord

T = TypeVar("T")

__all__ = ["TTSService"]

DOWNSTREAM = FrameDirection.DOWNSTREAM
_EPS = 0.005  # seconds: a word ending this close after the audio played counts as played

_QueueItem = Frame | TTSReply | asyncio.Event


class TTSService(FrameProcessor):
    """Base of the text-to-speech processors: text in, speech and word timings out, in order."""

    model_name: str | None = None
    provider_name = "tts"  # the vendor, as outage reports and metrics name it
    offline_voice = "en-us"  # espeak-ng voice for lines this TTS cannot render

    def __init__(
        self,
        *,
        max_sentence_chars: int = 250,
        outage_grace_s: float = DEFAULT_OUTAGE_GRACE_S,
        probe_backoff: Backoff | None = None,
        speech_cache: SpeechCache | None = None,
        render_timeout_s: float = 10.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.audio_out_sample_rate = 16000
        self.audio_out_encoding = "pcm16"
        self._splitter = SentenceSplitter(max_chars=max_sentence_chars)
        self._queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._reply: TTSReply | None = None  # the reply text is going into
        self._reply_explicit = False  # opened by LLMResponseStartFrame
        self._live: set[TTSReply] = set()  # replies whose provider work is not finished
        self._reply_count = 0
        self.outage = OutageTracker(
            self, service="tts", provider=self.provider_name, grace_s=outage_grace_s
        )
        self.probe_backoff = probe_backoff or Backoff(base_s=0.25, cap_s=2.0)
        self._probe_task: asyncio.Task[None] | None = None
        self.speech_cache = speech_cache or SPEECH_CACHE
        self.render_timeout_s = render_timeout_s
        self._prerender: list[str] = []
        self._lines: dict[str, asyncio.Task[CachedSpeech | None]] = {}
        self.lines_played = 0  # pre-rendered lines played from the cache

    # ------------------------------------------------------------------ for subclasses

    async def synthesize(self, text: str, reply: TTSReply) -> None:
        """Speak one sentence: ``reply.push_audio(...)`` as audio arrives."""
        raise NotImplementedError

    async def synthesize_reply(self, reply: TTSReply) -> None:
        """Speak a whole reply as its text arrives (default: sentence by sentence, in order)."""
        async for text in reply.texts():
            await self.synthesize(text, reply)

    async def on_reply_interrupted(self, reply: TTSReply) -> None:
        """An interruption stopped ``reply``: stop the provider's work on it (must not block)."""

    async def probe(self) -> None:
        """Check that the provider answers again (raise if not); called while it is down."""

    def voice_key(self) -> str:
        """What this TTS's audio depends on besides text and format (vendor, voice, model)."""
        return f"{type(self).__name__}/{self.model_name}"

    async def render_line(self, text: str) -> CachedSpeech:
        """Render ``text`` whole for the cache, with this TTS (default: ``synthesize_reply``)."""
        reply = TTSReply(0, self.clock)
        reply.add_text(text)
        reply.end_input()
        await self.synthesize_reply(reply)
        reply.finish()
        return speech_of(reply)

    # ------------------------------------------------------------------ outages and lines

    def prerender(self, *texts: str) -> None:
        """Lines to render at the call's start and play from the cache (call before start)."""
        for text in texts:
            text = text.strip()
            if text and text not in self._prerender:
                self._prerender.append(text)

    async def provider_failed(self, reason: str) -> None:
        """The provider cannot speak: report the outage and probe it until it is back."""
        await self.outage.failed(reason)
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = self.create_task(
                self._probe_loop(), name="tts-probe", interruptible=False
            )

    async def provider_works(self) -> None:
        """The provider spoke: an outage is over."""
        if self.outage.down:
            await self.outage.recovered()

    async def _probe_loop(self) -> None:
        attempt = 0
        while self.outage.down and not self.outage.gave_up:
            remaining = max(self.outage.grace_s - self.outage.elapsed, 0.0)
            await self.clock.sleep(min(self.probe_backoff.delay(attempt), remaining))
            attempt += 1
            if not self.outage.down:
                return  # a reply got through meanwhile
            try:
                await self.probe()
            except Exception as exc:
                if self.outage.expired:
                    await self.outage.give_up(
                        f"{self.provider_name} cannot speak for {self.outage.elapsed:.0f} s "
                        f"({exc!r})"
                    )
                    return
                continue
            await self.outage.recovered()

    def _key(self, text: str) -> SpeechKey:
        return SpeechKey(
            self.voice_key(), text, self.audio_out_encoding, self.audio_out_sample_rate
        )

    async def _render_cached(self, text: str) -> CachedSpeech | None:
        """The line from the cache, rendered by this TTS, or offline when this TTS cannot."""
        try:
            return await self.speech_cache.get_or_render(
                self._key(text), lambda: self._render_checked(text)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.logger.warning("could not pre-render %r with %s: %r", text, self.name, exc)
        key = SpeechKey(
            f"espeak-ng/{self.offline_voice}",
            text,
            self.audio_out_encoding,
            self.audio_out_sample_rate,
        )
        enc, rate = self.audio_out_encoding, self.audio_out_sample_rate
        try:
            return await self.speech_cache.get_or_render(
                key,
                lambda: self.run_blocking(render_offline, text, self.offline_voice, enc, rate),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.logger.error("could not pre-render %r offline either: %r", text, exc)
            return None

    async def _render_checked(self, text: str) -> CachedSpeech:
        async with asyncio.timeout(self.render_timeout_s):
            speech = await self.render_line(text)
        if not speech.audio:
            raise RuntimeError("the TTS produced no audio")
        speech = to_wire_format(speech, self.audio_out_encoding, self.audio_out_sample_rate)
        if (speech.encoding, speech.sample_rate) != (
            self.audio_out_encoding,
            self.audio_out_sample_rate,
        ):
            raise RuntimeError(
                f"rendered {speech.encoding} {speech.sample_rate} Hz, the wire takes "
                f"{self.audio_out_encoding} {self.audio_out_sample_rate} Hz"
            )
        return speech

    # ------------------------------------------------------------------ life cycle

    async def on_start(self, frame: StartFrame) -> None:
        self.audio_out_sample_rate = frame.audio_out_sample_rate
        meta = frame.metadata or {}
        self.audio_out_encoding = str(meta.get("audio_out_encoding") or "pcm16")
        self._drain_task = self.create_task(self._drain(), name="tts-drain")
        for text in self._prerender:
            # Not interruptible: the render is shared with later calls through the cache.
            self._lines[text] = self.create_task(
                self._render_cached(text), name="tts-prerender", interruptible=False
            )

    async def on_interruption(self) -> None:
        # The drain and provider tasks (interruptible) are already cancelled.
        for reply in list(self._live):
            reply.interrupted = True
            try:
                await self.on_reply_interrupted(reply)
            except Exception as exc:
                self.logger.warning("stopping reply %d failed: %r", reply.index, exc)
        self._live.clear()
        self._reply = None
        self._reply_explicit = False
        self._splitter.reset()
        self._queue = asyncio.Queue()
        self._draining = False
        self._drain_task = self.create_task(self._drain(), name="tts-drain")

    async def on_end(self, frame: EndFrame) -> None:
        # Everything received before the end is spoken before the end passes on.
        self._close_reply()
        if self._drain_task is None or self._drain_task.done():
            return
        drained = asyncio.Event()
        self._queue.put_nowait(drained)
        await drained.wait()

    # ------------------------------------------------------------------ frame flow

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is not DOWNSTREAM or isinstance(frame, SystemFrame | EndFrame):
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, LLMTextFrame):
            reply = self._reply or self._open_reply(explicit=False)
            for sentence in self._splitter.push(frame.text):
                reply.add_text(sentence)
        elif isinstance(frame, TTSSpeakFrame):
            await self._speak(frame.text)
        elif isinstance(frame, LLMResponseStartFrame):
            self._close_reply()
            self._queue.put_nowait(frame)
            self._open_reply(explicit=True)
        elif isinstance(frame, LLMResponseEndFrame):
            self._close_reply()
            self._queue.put_nowait(frame)
        else:
            if self._reply is not None and not self._reply_explicit:
                self._close_reply()  # text with no response frames ends at the next frame
            if self._idle():
                await self.push_frame(frame, direction)
            else:
                self._queue.put_nowait(frame)

    async def _speak(self, text: str) -> None:
        line = self._lines.get(text.strip())
        if line is not None:
            # A pre-rendered line is its own reply, played from the cache.
            self._close_reply()
            reply = self._new_reply()
            self._queue.put_nowait(reply)
            self.create_task(self._play_line(reply, line, text), name="tts-line")
            return
        # Inside an open reply (an LLM's fallback line) it is part of that reply.
        standalone = self._reply is None
        reply = self._reply or self._open_reply(explicit=False)
        rest = self._splitter.flush()
        if rest:
            reply.add_text(rest)
        for sentence in self._splitter.push(text):
            reply.add_text(sentence)
        rest = self._splitter.flush()
        if rest:
            reply.add_text(rest)
        if standalone:
            self._close_reply()

    def _idle(self) -> bool:
        return self._reply is None and not self._draining and self._queue.empty()

    def _new_reply(self) -> TTSReply:
        self._reply_count += 1
        return TTSReply(self._reply_count, self.clock)

    async def _play_line(
        self, reply: TTSReply, line: asyncio.Task[CachedSpeech | None], text: str
    ) -> None:
        try:
            speech = await asyncio.shield(line)
        except asyncio.CancelledError:
            reply.finish()
            raise
        except Exception:
            speech = None
        # The configured voice's rendering always; the offline one only while the provider is
        # down (otherwise the provider speaks it in the call's own voice).
        if speech is not None and (not speech.offline or self.outage.down):
            self.lines_played += 1
            reply.push_audio(speech.audio, speech.sample_rate, speech.encoding, words=speech.words)
            reply.finish()
            return
        reply.add_text(text)
        reply.end_input()
        self._live.add(reply)
        await self._produce(reply)

    def _open_reply(self, *, explicit: bool) -> TTSReply:
        reply = self._new_reply()
        self._reply = reply
        self._reply_explicit = explicit
        self._live.add(reply)
        self._queue.put_nowait(reply)
        self.create_task(self._produce(reply), name=f"tts-reply-{reply.index}")
        return reply

    def _close_reply(self) -> None:
        reply = self._reply
        if reply is None:
            return
        rest = self._splitter.flush()
        if rest:
            reply.add_text(rest)
        reply.end_input()
        self._reply = None
        self._reply_explicit = False

    async def _produce(self, reply: TTSReply) -> None:
        try:
            await self.synthesize_reply(reply)
        except Exception as exc:
            self.logger.error("speech synthesis failed: %r", exc, exc_info=exc)
            await self.push_error(f"{self.name}: speech synthesis failed: {exc}", exc=exc)
        finally:
            self._live.discard(reply)
            reply.finish()

    # ------------------------------------------------------------------ output

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            self._draining = True
            if isinstance(item, TTSReply):
                await self._play(item)
            elif isinstance(item, asyncio.Event):
                item.set()
            else:
                await self.push_frame(item)
            self._draining = False

    async def _play(self, reply: TTSReply) -> None:
        started = False
        played = 0.0
        pending: list[TimedWord] = []
        while True:
            item = await reply.out.get()
            if item is DONE:
                break
            assert isinstance(item, SpeechChunk)
            pending.extend(item.words)
            played_words = 0
            while played_words < len(pending) and pending[played_words].end <= played + _EPS:
                played_words += 1
            await self._push_words(pending[:played_words])
            del pending[:played_words]
            if not item.audio:
                continue
            first = not started
            if first:
                started = True
                await self.push_frame(TTSStartedFrame())
            played = await self._push_audio(item, played, pending)
            if first:  # after the audio: the metric is not on the way to the wire
                await self._first_audio_metrics(reply, item)
        # Words heard at least in part are said; words whose audio never came are not.
        await self._push_words([w for w in pending if w.start < played - _EPS])
        if started:
            await self.push_frame(TTSStoppedFrame())

    async def _push_audio(
        self, chunk: SpeechChunk, played: float, pending: list[TimedWord]
    ) -> float:
        """Push a chunk's audio, cut where words end, each word's text right after its audio."""
        width = 1 if chunk.encoding == "mulaw" else 2
        rate = chunk.sample_rate
        audio = chunk.audio
        chunk_start = played
        chunk_end = played + len(audio) / (width * rate)
        pos = 0
        while pending and pending[0].end <= chunk_end + _EPS:
            word = pending.pop(0)
            cut = min(max(round((word.end - chunk_start) * rate) * width, pos), len(audio))
            if cut > pos:
                await self._push_audio_frame(audio[pos:cut], chunk)
                pos = cut
            await self.push_frame(TTSTextFrame(word.word))
        if pos < len(audio):
            await self._push_audio_frame(audio[pos:], chunk)
        return chunk_end

    async def _push_audio_frame(self, audio: bytes, chunk: SpeechChunk) -> None:
        await self.push_frame(
            OutputAudioFrame(audio, sample_rate=chunk.sample_rate, encoding=chunk.encoding)
        )

    async def _push_words(self, words: list[TimedWord]) -> None:
        for word in words:
            await self.push_frame(TTSTextFrame(word.word))

    async def _first_audio_metrics(self, reply: TTSReply, chunk: SpeechChunk) -> None:
        # Time to first audio: from the reply's first text reaching the provider.
        if not self.metrics_enabled or reply.first_text_at is None:
            return
        value = max(chunk.produced_at - reply.first_text_at, 0.0)
        await self.push_frame(MetricsFrame(self.name, "ttfb", value, model=self.model_name))


def speech_of(reply: TTSReply) -> CachedSpeech:
    """The audio and words a finished reply produced, as one cached line."""
    audio = bytearray()
    words: list[TimedWord] = []
    rate, encoding = 0, "pcm16"
    while not reply.out.empty():
        item = reply.out.get_nowait()
        if not isinstance(item, SpeechChunk):
            continue
        words.extend(item.words)
        if item.audio:
            if rate and (item.sample_rate, item.encoding) != (rate, encoding):
                raise RuntimeError("the TTS changed its audio format within one line")
            rate, encoding = item.sample_rate, item.encoding
            audio += item.audio
    return CachedSpeech(bytes(audio), rate or 1, encoding, tuple(words))
