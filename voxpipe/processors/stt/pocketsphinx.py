"""Offline speech recognition with PocketSphinx: no key, no network, English model in the wheel.

With a JSGF grammar (or a list of phrases) of what callers are expected to say, as in an IVR
menu, recognition is near exact and fast; a keyword list spots phrases in free speech; with
neither, the general English language model is used (it mis-hears much and is slower).

An utterance runs from the VAD's ``UserStartedSpeakingFrame`` (with a little audio from before
it, since the VAD reports speech a moment late) to its ``UserStoppedSpeakingFrame``; with
``endpointing="builtin"`` PocketSphinx's own endpointer finds utterances instead. Each is
decoded whole, in a worker thread, when it ends: decoding an utterance at once normalises it
by its own statistics, which keeps band-limited phone audio (8 kHz mu-law) recognisable where
the model's wide-band defaults would miss it.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from voxpipe.frames import EndFrame, InputAudioFrame, StartFrame, Word
from voxpipe.processors.stt.base import DEFAULT_CONFIDENCE_THRESHOLD, STTService
from voxpipe.processors.stt.convert import AudioConverter

try:
    import pocketsphinx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.processors.stt.pocketsphinx needs the 'offline' extra: "
        "pip install 'voxpipe[offline]'"
    ) from exc

__all__ = [
    "PocketSphinxSTTService",
    "default_keyword_threshold",
    "jsgf_from_phrases",
    "jsgf_words",
]

RATE = 16000  # the English model's rate; phone audio is resampled up to it
_BYTES_PER_SECOND = RATE * 2
_FRAMES_PER_SECOND = 100  # PocketSphinx's feature frame rate
_FILLERS = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")


def jsgf_from_phrases(phrases: Iterable[str], name: str = "phrases") -> str:
    """A JSGF grammar accepting exactly one of ``phrases`` (lower-cased, punctuation removed)."""
    cleaned = []
    for phrase in phrases:
        words = re.sub(r"[^\w' ]+", " ", phrase.lower()).split()
        if words:
            cleaned.append(" ".join(words))
    if not cleaned:
        raise ValueError("phrases: give at least one phrase with words in it")
    body = " | ".join(dict.fromkeys(cleaned))
    return f"#JSGF V1.0;\ngrammar {name};\npublic <{name}> = {body};\n"


def jsgf_words(grammar: str) -> set[str]:
    """The words a JSGF grammar uses (to check them against the pronunciation dictionary)."""
    words: set[str] = set()
    text = re.sub(r"//.*?$|/\*.*?\*/", " ", grammar, flags=re.S | re.M)  # comments
    for statement in text.split(";"):
        if "=" not in statement:
            continue  # header, grammar name, imports
        body = statement.split("=", 1)[1]
        body = re.sub(r"<[^>]*>|\{[^}]*\}|/[^/]*/", " ", body)  # rule refs, tags, weights
        for token in re.split(r"[\s|()\[\]*+]+", body):
            token = token.strip('"').lower()
            if token:
                words.add(token)
    return words


class PocketSphinxSTTService(STTService):
    """Recognises caller speech offline with PocketSphinx and pushes a final transcript per utterance.

    Give at most one of ``grammar`` (JSGF text or a ``.gram`` path), ``phrases`` (turned into a
    grammar) or ``keywords`` (phrases to spot, with optional detection thresholds). Words
    missing from the dictionary can be added with ``extra_words`` (word -> phones).
    Confidence is the mean posterior probability of the recognised words.
    """

    model_name = "pocketsphinx-en-us"

    def __init__(
        self,
        *,
        grammar: str | Path | None = None,
        phrases: Sequence[str] | None = None,
        keywords: Sequence[str] | Mapping[str, float] | None = None,
        keyword_threshold: float | None = None,
        extra_words: Mapping[str, str] | None = None,
        endpointing: Literal["vad", "builtin"] = "vad",
        preroll_seconds: float = 0.4,
        max_utterance_seconds: float = 30.0,
        decoder_options: Mapping[str, Any] | None = None,
        language: str = "en-US",
        confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
        audio_passthrough: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(
            confidence_threshold=confidence_threshold,
            language=language,
            audio_passthrough=audio_passthrough,
            name=name,
        )
        given = [x is not None for x in (grammar, phrases, keywords)]
        if sum(given) > 1:
            raise ValueError("give at most one of grammar, phrases or keywords")
        if endpointing not in ("vad", "builtin"):
            raise ValueError(f"endpointing must be 'vad' or 'builtin', got {endpointing!r}")
        self.grammar: str | None = None
        if grammar is not None:
            self.grammar = _read_grammar(grammar)
        elif phrases is not None:
            self.grammar = jsgf_from_phrases(phrases)
        self.keywords: dict[str, float] | None = None
        if keywords is not None:
            if isinstance(keywords, Mapping):
                self.keywords = {k.lower(): float(v) for k, v in keywords.items()}
            else:
                self.keywords = {
                    k.lower(): keyword_threshold or default_keyword_threshold(k) for k in keywords
                }
            if not self.keywords:
                raise ValueError("keywords: give at least one keyword")
        self.extra_words = dict(extra_words or {})
        self.endpointing = endpointing
        self.preroll_seconds = preroll_seconds
        self.max_utterance_seconds = max_utterance_seconds
        self.decoder_options = dict(decoder_options or {})

        self._decoder: Any = None
        self._converter = AudioConverter("pcm16", RATE)
        self._stream_pos = 0  # bytes of 16 kHz PCM taken in since the call started
        self._preroll = bytearray()
        self._utt: bytearray | None = None
        self._utt_start = 0  # stream position (bytes) where the current utterance starts
        self._endpointer: Any = None
        self._ep_base = 0  # stream position where the current endpointer's audio begins
        self._ep_pending = bytearray()
        self._jobs: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.utterances_decoded = 0

    # ------------------------------------------------------------------ decoder

    def build_decoder(self) -> Any:
        """Create and configure a decoder (blocking: runs in a worker thread)."""
        # Dither: digital silence and the empty band above 4 kHz of phone audio resampled to
        # 16 kHz give log-energies of zero, which derail recognition; a fixed seed keeps the
        # noise, and so the transcripts, the same on every run.
        options: dict[str, Any] = {"loglevel": "FATAL", "dither": True, "seed": 1}
        if self.grammar is not None or self.keywords is not None:
            options["lm"] = None  # no language model to load: a grammar or keywords replace it
        options.update(self.decoder_options)
        decoder = pocketsphinx.Decoder(pocketsphinx.Config(**options))
        for word, phones in self.extra_words.items():
            decoder.add_word(word.lower(), phones, True)
        if self.grammar is not None:
            _check_words(decoder, jsgf_words(self.grammar), "the grammar")
            decoder.add_jsgf_string("voxpipe", self.grammar)
            decoder.activate_search("voxpipe")
        elif self.keywords is not None:
            words = {w for phrase in self.keywords for w in phrase.split()}
            _check_words(decoder, words, "the keywords")
            fd, path = tempfile.mkstemp(suffix=".kws", text=True)
            try:
                with os.fdopen(fd, "w") as f:
                    for phrase, threshold in self.keywords.items():
                        f.write(f"{phrase} /{threshold:g}/\n")
                decoder.add_kws("voxpipe", path)
            finally:
                os.unlink(path)
            decoder.activate_search("voxpipe")
        return decoder

    def decode(self, pcm: bytes) -> tuple[str, float, list[Word]]:
        """Decode one whole utterance of 16 kHz PCM16 (blocking): text, confidence, words."""
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, False, True)
        d.end_utt()
        hyp = d.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return "", 0.0, []
        words = []
        for seg in d.seg() or ():
            if _FILLERS.match(seg.word):
                continue
            words.append(
                Word(
                    word=_ALT_PRONUNCIATION.sub("", seg.word.strip()),
                    start=seg.start_frame / _FRAMES_PER_SECOND,
                    end=(seg.end_frame + 1) / _FRAMES_PER_SECOND,
                    confidence=min(max(float(seg.prob), 0.0), 1.0),
                )
            )
        confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
        return " ".join(hyp.hypstr.split()), confidence, words

    # ------------------------------------------------------------------ life cycle

    async def on_start(self, frame: StartFrame) -> None:
        await super().on_start(frame)
        self._worker = self.create_task(self._work(), name="pocketsphinx", interruptible=False)
        if self.endpointing == "builtin":
            self._endpointer = pocketsphinx.Endpointer(sample_rate=RATE)

    async def on_end(self, frame: EndFrame) -> None:
        # The caller's last words count even if the VAD never saw them end.
        if self._endpointer is not None and self._endpointer.in_speech:
            tail = self._endpointer.end_stream(bytes(self._ep_pending))
            if tail and self._utt is not None:
                self._utt += tail
        self._finish_utterance()
        self._jobs.put_nowait(None)
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)

    # ------------------------------------------------------------------ audio in

    async def process_audio(self, frame: InputAudioFrame) -> None:
        pcm = self._converter.convert(frame.audio, frame.encoding, frame.sample_rate)
        if not pcm:
            return
        if self._endpointer is not None:
            self._endpoint(pcm)
        elif self._utt is not None:
            self._utt += pcm
            if len(self._utt) >= self.max_utterance_seconds * _BYTES_PER_SECOND:
                self._finish_utterance()
                self._begin_utterance(preroll=False)
        else:
            self._preroll += pcm
            keep = int(self.preroll_seconds * RATE) * 2
            if len(self._preroll) > keep:
                del self._preroll[: len(self._preroll) - keep]
        self._stream_pos += len(pcm)

    async def on_user_started_speaking(self) -> None:
        if self._endpointer is None and self._utt is None and not self.paused:
            self._begin_utterance(preroll=True)

    async def on_pause(self) -> None:
        # What was said before the pause is still recognised; nothing after it is kept.
        if self._endpointer is not None and self._endpointer.in_speech:
            tail = self._endpointer.end_stream(bytes(self._ep_pending))
            if tail and self._utt is not None:
                self._utt += tail
            self._endpointer = pocketsphinx.Endpointer(sample_rate=RATE)
            self._ep_base = self._stream_pos
        self._ep_pending.clear()
        self._finish_utterance()
        self._preroll.clear()

    async def on_user_stopped_speaking(self) -> None:
        if self._endpointer is None:
            self._finish_utterance()

    def _begin_utterance(self, *, preroll: bool) -> None:
        lead = bytes(self._preroll) if preroll else b""
        self._utt = bytearray(lead)
        self._utt_start = self._stream_pos - len(lead)
        self._preroll.clear()

    def _finish_utterance(self) -> None:
        utt, self._utt = self._utt, None
        if utt:
            self._jobs.put_nowait((bytes(utt), self._utt_start))

    def _endpoint(self, pcm: bytes) -> None:
        ep = self._endpointer
        self._ep_pending += pcm
        size = ep.frame_bytes
        offset = 0
        while len(self._ep_pending) - offset >= size:
            chunk = bytes(self._ep_pending[offset : offset + size])
            offset += size
            was_in_speech = ep.in_speech
            speech = ep.process(chunk)
            if speech is None:
                continue
            if not was_in_speech or self._utt is None:
                self._utt = bytearray()
                self._utt_start = self._ep_base + int(ep.speech_start * RATE) * 2
            self._utt += speech
            if not ep.in_speech:
                self._finish_utterance()
            elif len(self._utt) >= self.max_utterance_seconds * _BYTES_PER_SECOND:
                # Endless "speech" (noise): decode it in pieces, each right after the last.
                next_start = self._utt_start + len(self._utt)
                self._finish_utterance()
                self._utt = bytearray()
                self._utt_start = next_start
        del self._ep_pending[:offset]

    # ------------------------------------------------------------------ decoding

    async def _work(self) -> None:
        # Loading the model takes a fraction of a second: off the event loop, while the
        # first utterance is still being spoken.
        try:
            self._decoder = await self.run_blocking(self.build_decoder)
        except Exception as exc:
            await self.push_error(f"PocketSphinx could not start: {exc}", fatal=True, exc=exc)
            return
        while True:
            job = await self._jobs.get()
            if job is None:
                return
            pcm, start = job
            try:
                text, confidence, words = await self.run_blocking(self.decode, pcm)
            except Exception as exc:  # one bad utterance must not stop recognition
                await self.push_error(f"PocketSphinx failed on an utterance: {exc}", exc=exc)
                continue
            self.utterances_decoded += 1
            offset = start / _BYTES_PER_SECOND
            for w in words:
                w.start += offset
                w.end += offset
            await self.push_transcript(text, final=True, confidence=confidence, words=words)


def default_keyword_threshold(phrase: str) -> float:
    """A starting detection threshold for a key phrase: longer phrases need smaller ones.

    Measured on synthetic phone-band speech: one word about 1e-25, three words about 1e-55.
    Tune per phrase (``keywords={"phrase": threshold}``): larger misses more, smaller
    false-alarms more.
    """
    words = max(len(phrase.split()), 1)
    return float(10.0 ** -min(10 + 15 * words, 80))


def _read_grammar(grammar: str | Path) -> str:
    if isinstance(grammar, Path) or (
        not grammar.lstrip().startswith("#JSGF") and "=" not in grammar
    ):
        path = Path(grammar)
        if not path.is_file():
            raise FileNotFoundError(f"JSGF grammar file {path} does not exist")
        return path.read_text(encoding="utf-8")
    return grammar


def _check_words(decoder: Any, words: Iterable[str], where: str) -> None:
    missing = sorted(w for w in words if decoder.lookup_word(w) is None)
    if missing:
        raise ValueError(
            f"{where} uses words missing from the PocketSphinx dictionary: {', '.join(missing)}. "
            "Rephrase them, or add their pronunciations with "
            "extra_words={'word': 'W ER D'} (CMU phones)."
        )
