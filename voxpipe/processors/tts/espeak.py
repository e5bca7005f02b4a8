"""Offline text-to-speech with espeak-ng, in-process: no key, no network.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its voice data; the library is driven
through ``ctypes`` in synchronous mode. Each sentence is synthesized in a worker thread (the
event loop is never blocked), at espeak's native rate, then resampled to the wire's rate.
Word timings come from espeak's own word events, so each ``TTSTextFrame`` follows the audio
of its word. libespeak-ng keeps one global state per process, so one lock serializes its use
across all calls.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxpipe.audio import resample_pcm16
from voxpipe.processors.tts.base import TTSService
from voxpipe.processors.tts.reply import TTSReply
from voxpipe.processors.tts.words import TimedWord

try:
    import espeakng_loader
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.processors.tts.espeak needs the 'offline' extra: pip install 'voxpipe[offline]'"
    ) from exc

__all__ = ["EspeakEngine", "EspeakTTSService", "Synthesis"]

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3


class _Event(ctypes.Structure):
    """espeak_EVENT (the ``id`` union is 8 bytes wide)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_byte * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(slots=True)
class Synthesis:
    """One synthesized text: PCM16 at ``sample_rate`` and the start of each word event."""

    pcm: bytes
    sample_rate: int
    word_starts: list[tuple[int, float]]  # (0-based character position, seconds)


class EspeakEngine:
    """The process-wide libespeak-ng: loaded once, used by one thread at a time."""

    _instance: EspeakEngine | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # espeak wants the directory that contains espeak-ng-data.
        data_dir = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir, 0)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with its data in {data_dir!r}")
        self.sample_rate = rate
        self._lib = lib
        self._lock = threading.Lock()
        self._voice: str | None = None
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, int, int]] = []  # (type, text position, sample)
        # Kept on the instance: the C library holds this pointer for the life of the process.
        self._callback = _Callback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> EspeakEngine:
        """The shared engine (created on first use)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            self._events.append((ev.type, ev.text_position, ev.sample))
            i += 1
        return 0  # 0: continue synthesis

    def has_voice(self, voice: str) -> bool:
        """Whether espeak-ng has a voice by this name (``en-us``, ``de``, ...)."""
        with self._lock:
            self._voice = None  # whatever it selects now, the next synthesis sets its own
            return bool(self._lib.espeak_SetVoiceByName(voice.encode()) == 0)

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int | None) -> Synthesis:
        """Speak ``text`` (blocking) and return its audio and word start times."""
        raw = text.encode("utf-8") + b"\0"
        with self._lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(
                        f"espeak-ng has no voice {voice!r}: use a language code such as "
                        "'en-us', 'en-gb', 'es', 'fr' or 'de'"
                    )
                self._voice = voice
            self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
            if pitch is not None:
                self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            self._chunks, self._events = [], []
            status = self._lib.espeak_Synth(
                raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != 0:
                raise RuntimeError(f"espeak-ng could not synthesize (error {status})")
            pcm = b"".join(self._chunks)
            events = self._events
        starts = [
            (pos - 1, sample / self.sample_rate)
            for kind, pos, sample in events
            if kind == _EVENT_WORD
        ]
        return Synthesis(pcm, self.sample_rate, starts)


def word_timings(text: str, synthesis: Synthesis, duration: float) -> list[TimedWord]:
    """The whitespace-separated words of ``text`` with times from espeak's word events."""
    tokens: list[tuple[str, int, int]] = []  # (word, first char, end char)
    pos = 0
    for token in text.split():
        pos = text.index(token, pos)
        tokens.append((token, pos, pos + len(token)))
        pos += len(token)
    starts: list[float | None] = []
    for _, first, end in tokens:
        inside = [t for p, t in synthesis.word_starts if first <= p < end]
        starts.append(min(inside) if inside else None)
    # A token espeak gave no event for (a dash, say) is silent: it starts where the next
    # spoken one does, so the word before it keeps its whole sound.
    filled = [0.0] * len(tokens)
    following = duration
    for i in range(len(tokens) - 1, -1, -1):
        start = starts[i]
        if start is not None:
            following = start
        filled[i] = following
    for i in range(1, len(filled)):
        filled[i] = max(filled[i], filled[i - 1])
    out = []
    for i, (token, _, _) in enumerate(tokens):
        stop = filled[i + 1] if i + 1 < len(tokens) else duration
        out.append(TimedWord(token, filled[i], max(stop, filled[i])))
    return out


class EspeakTTSService(TTSService):
    """Speaks replies with espeak-ng, in-process and offline, at the wire's sample rate."""

    model_name = "espeak-ng"

    def __init__(
        self,
        *,
        voice: str = "en-us",
        rate_wpm: int = 175,
        pitch: int | None = None,
        sample_rate: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        self.sample_rate = sample_rate  # None: the wire's output rate

    async def synthesize(self, text: str, reply: TTSReply) -> None:
        rate = self.sample_rate or self.audio_out_sample_rate
        pcm, words = await self.run_blocking(self._render, text, rate)
        reply.push_audio(pcm, rate, "pcm16", words=words)

    def _render(self, text: str, rate: int) -> tuple[bytes, list[TimedWord]]:
        synthesis = EspeakEngine.get().synthesize(text, self.voice, self.rate_wpm, self.pitch)
        pcm = resample_pcm16(synthesis.pcm, synthesis.sample_rate, rate)
        duration = len(pcm) / (2 * rate)
        return pcm, word_timings(text, synthesis, duration)
