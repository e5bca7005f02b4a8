"""Service tapes: what each provider returned during a recorded call, played back in its place.

While a call is recorded (``voxpipe serve --record``), ``attach_tape`` wraps the call's
speech-to-text, LLM and text-to-speech services and writes what they returned into the
recording, as ``"$service"`` lines beside the frames:

* STT ``transcript``: each interim and final transcript with its words (times on the call
  clock), confidence and language, at the time it was recognised — card numbers redacted as
  the payment guard redacts them (a recording never holds one; such a transcript keeps no
  words);
* LLM ``chunk`` / ``error``: every streamed chunk (text, tool-call fragments, finish reason,
  token counts) of each request, with its delay from the request; ``summary``: each summary;
* TTS ``reply`` and ``audio``: each reply, and the length, rate and encoding of each of its
  audio chunks with their alignment or word times and delay from the reply's start (never
  the audio itself).

``play_tape`` puts a recording's tape in place of the providers for ``voxpipe replay
--offline``: no key, no network, the same transcripts, replies, tool calls and speech timing
(the bot's audio is silence of the recorded length). Services are matched by kind and order
in the pipeline (the first STT, the second TTS...), requests and replies by their order.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

from voxpipe.frames import Word
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.llm.base import ChatChunk, LLMService, ToolCallDelta
from voxpipe.processors.policy.cards import (
    mask_digit_runs,
    redact_card_numbers,
    redact_continued_card,
    trailing_run,
)
from voxpipe.processors.stt.base import STTService
from voxpipe.processors.tts.base import TTSService
from voxpipe.processors.tts.reply import CharAlignment, TTSReply
from voxpipe.processors.tts.words import TimedWord
from voxpipe.testing.recording import SERVICE, ServiceRecord

__all__ = ["TapeMissing", "TapePlayer", "attach_tape", "has_services", "play_tape"]

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


class TapeMissing(RuntimeError):
    """The replayed bot asked a provider for more than the recording holds (it diverged)."""


def has_services(processors: Iterable[FrameProcessor]) -> bool:
    """True when a provider service (STT, LLM, TTS) is among ``processors``."""
    return bool(_slots(processors))


def _slots(processors: Iterable[FrameProcessor]) -> list[tuple[str, int, FrameProcessor]]:
    counts: dict[str, int] = defaultdict(int)
    out = []
    for p in processors:
        kind = (
            "stt"
            if isinstance(p, STTService)
            else "llm"
            if isinstance(p, LLMService)
            else "tts"
            if isinstance(p, TTSService)
            else None
        )
        if kind is not None:
            out.append((kind, counts[kind], p))
            counts[kind] += 1
    return out


# ---------------------------------------------------------------------------- recording


def attach_tape(processors: Iterable[FrameProcessor], emit: Emit) -> int:
    """Wrap the services among ``processors`` so what they return goes to ``emit`` (a record
    without its time: the recorder stamps it). Returns how many services were wrapped."""
    slots = _slots(processors)
    for kind, slot, proc in slots:
        if kind == "stt":
            _tape_stt(proc, slot, emit)  # type: ignore[arg-type]
        elif kind == "llm":
            _tape_llm(proc, slot, emit)  # type: ignore[arg-type]
        else:
            _tape_tts(proc, slot, emit)  # type: ignore[arg-type]
    return len(slots)


def _rec(service: str, slot: int, op: str, **data: Any) -> dict[str, Any]:
    return {"type": SERVICE, "service": service, "slot": slot, "op": op, "data": data}


class _CardScrub:
    """Card numbers out of the tape's transcripts, as the payment guard takes them out of the
    pipeline's: a recording must never hold one (the STT hears it before the guard)."""

    def __init__(self) -> None:
        self._tail = ""  # the digit run the last final ended with: a number may go on

    def final(self, text: str) -> tuple[str, bool]:
        text, continued = redact_continued_card(self._tail, text)
        clean, found = redact_card_numbers(text)
        self._tail = trailing_run(clean)
        return clean, bool(continued or found)

    @staticmethod
    def interim(text: str) -> tuple[str, bool]:
        masked = mask_digit_runs(text)  # half a number cannot be checked yet
        return masked, masked != text


def _tape_stt(stt: STTService, slot: int, emit: Emit) -> None:
    original = stt.push_transcript
    scrub = _CardScrub()

    async def push_transcript(
        text: str,
        *,
        final: bool,
        confidence: float = 1.0,
        words: Sequence[Word] = (),
        language: str | None = None,
    ) -> bool:
        # Word times on the call clock too, as the base class would add them now.
        timed = [
            [
                w.word,
                w.start,
                w.end,
                w.confidence,
                w.call_start if w.call_start is not None else stt.timeline.call_time(w.start),
                w.call_end if w.call_end is not None else stt.timeline.call_time(w.end),
            ]
            for w in words
        ]
        kept, redacted = scrub.final(text) if final else scrub.interim(text)
        if redacted:
            timed = []  # which words were digits is itself part of the number
        emit(
            _rec(
                "stt",
                slot,
                "transcript",
                text=kept,
                final=final,
                confidence=confidence,
                words=timed,
                language=language,
            )
        )
        return await original(
            text, final=final, confidence=confidence, words=words, language=language
        )

    stt.push_transcript = push_transcript  # type: ignore[method-assign]


def _chunk_data(chunk: ChatChunk) -> dict[str, Any]:
    return {
        "text": chunk.text,
        "tool_calls": [[d.index, d.id, d.name, d.arguments] for d in chunk.tool_calls],
        "finish_reason": chunk.finish_reason,
        "prompt_tokens": chunk.prompt_tokens,
        "completion_tokens": chunk.completion_tokens,
    }


def request_key(messages: Sequence[dict[str, Any]]) -> str:
    """What tells one LLM request from another on a tape: the number of messages and the
    last one, hashed (no words on the tape). Preemptive replies make requests that timing
    decides (one discarded when the caller goes on), so a replay matches requests by this,
    not by their order."""
    last = messages[-1] if messages else {}
    raw = json.dumps([len(messages), last.get("role"), last.get("content")], default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _tape_llm(llm: LLMService, slot: int, emit: Emit) -> None:
    stream_chat = llm.stream_chat
    summarize = getattr(llm, "summarize", None)  # the services that summarize old turns
    requests = iter(range(1 << 62))
    summaries = iter(range(1 << 62))

    async def taped_stream(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        n = next(requests)
        key = request_key(messages)
        start = llm.clock.now()
        try:
            async for chunk in stream_chat(messages, tools):
                dt = llm.clock.now() - start
                emit(_rec("llm", slot, "chunk", request=n, key=key, dt=dt, **_chunk_data(chunk)))
                yield chunk
        except Exception as exc:
            dt = llm.clock.now() - start
            name = type(exc).__name__
            emit(_rec("llm", slot, "error", request=n, key=key, dt=dt, message=name))
            raise

    async def taped_summarize(messages: Sequence[dict[str, Any]], previous: str | None) -> str:
        n = next(summaries)
        start = llm.clock.now()
        assert summarize is not None
        text = str(await summarize(messages, previous))
        emit(_rec("llm", slot, "summary", n=n, dt=llm.clock.now() - start, text=text))
        return text

    llm.stream_chat = taped_stream  # type: ignore[method-assign]
    if summarize is not None:
        target: Any = llm  # not every LLMService summarizes: set on the instance
        target.summarize = taped_summarize


def _tape_tts(tts: TTSService, slot: int, emit: Emit) -> None:
    synthesize_reply = tts.synthesize_reply
    seen: dict[int, int] = defaultdict(int)  # reply index -> replies with it (pre-renders: 0)

    async def taped(reply: TTSReply) -> None:
        key = f"{reply.index}.{seen[reply.index]}"
        seen[reply.index] += 1
        start = tts.clock.now()
        emit(_rec("tts", slot, "reply", reply=key))  # known, even if no audio comes
        push_audio = reply.push_audio

        def push(
            audio: bytes,
            sample_rate: int,
            encoding: str = "pcm16",
            *,
            alignment: CharAlignment | None = None,
            words: Sequence[TimedWord] = (),
        ) -> int:
            emit(
                _rec(
                    "tts",
                    slot,
                    "audio",
                    reply=key,
                    dt=tts.clock.now() - start,
                    bytes=len(audio),
                    sample_rate=sample_rate,
                    encoding=encoding,
                    alignment=None
                    if alignment is None
                    else [
                        list(alignment.chars),
                        list(alignment.start_ms),
                        list(alignment.duration_ms),
                    ],
                    words=[[w.word, w.start, w.end] for w in words],
                )
            )
            return push_audio(audio, sample_rate, encoding, alignment=alignment, words=words)

        reply.push_audio = push  # type: ignore[method-assign]
        await synthesize_reply(reply)

    tts.synthesize_reply = taped  # type: ignore[method-assign]


# ---------------------------------------------------------------------------- playback


class TapePlayer:
    """The providers of a replayed call, played from a tape: ``begin(t0)`` when the recorded
    frames start being fed (tape times count from there, as the recorder's do)."""

    def __init__(self) -> None:
        self._feeds: list[Callable[[float], None]] = []
        self.services = 0

    def begin(self, t0: float) -> None:
        for feed in self._feeds:
            feed(t0)


def play_tape(processors: Iterable[FrameProcessor], tape: Sequence[ServiceRecord]) -> TapePlayer:
    """Replace each service's provider among ``processors`` with its part of ``tape`` (from
    ``read_recording``); call ``begin`` on the result as the replay starts."""
    by_slot: dict[tuple[str, int], list[ServiceRecord]] = defaultdict(list)
    for r in tape:
        by_slot[(r.service, r.slot)].append(r)
    player = TapePlayer()
    for kind, slot, proc in _slots(processors):
        records = by_slot.get((kind, slot), [])
        player.services += 1
        if kind == "stt":
            player._feeds.append(_play_stt(proc, records))  # type: ignore[arg-type]
        elif kind == "llm":
            _play_llm(proc, records)  # type: ignore[arg-type]
        else:
            _play_tts(proc, records)  # type: ignore[arg-type]
    return player


def _play_stt(stt: STTService, records: list[ServiceRecord]) -> Callable[[float], None]:
    transcripts = [r for r in records if r.op == "transcript"]

    async def no_audio(frame: Any) -> None:
        return None  # the recognised words come from the tape

    async def feed(t0: float) -> None:
        for r in transcripts:
            await stt.clock.sleep_until(t0 + r.t)
            d = r.data
            words = [
                Word(w[0], float(w[1]), float(w[2]), float(w[3]), w[4], w[5])
                for w in d.get("words") or []
            ]
            await stt.push_transcript(
                str(d["text"]),
                final=bool(d["final"]),
                confidence=float(d.get("confidence", 1.0)),
                words=words,
                language=d.get("language"),
            )

    def begin(t0: float) -> None:
        # Not interruptible: the caller talking over the bot does not stop their own words.
        stt.create_task(feed(t0), name="stt-tape", interruptible=False)

    stt.process_audio = no_audio  # type: ignore[method-assign]
    return begin


def _play_llm(llm: LLMService, records: list[ServiceRecord]) -> None:
    chunks: dict[int, list[ServiceRecord]] = defaultdict(list)
    for r in records:
        if r.op in ("chunk", "error"):
            chunks[int(r.data["request"])].append(r)
    summaries = deque(r for r in records if r.op == "summary")
    requests = iter(range(1 << 62))
    # Requests by what they asked (tapes made before keys were recorded: by their order).
    by_key: dict[str, deque[int]] = defaultdict(deque)
    for n in sorted(chunks):
        key = chunks[n][0].data.get("key")
        if key is not None:
            by_key[str(key)].append(n)

    async def stream_chat(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        if by_key:
            same = by_key.get(request_key(messages))
            n = same.popleft() if same else -1
        else:
            n = next(requests)
        if n not in chunks:
            raise TapeMissing(f"LLM request {n + 1} is not in the recording (the bot diverged)")
        start = llm.clock.now()
        for r in chunks[n]:
            await llm.clock.sleep_until(start + float(r.data["dt"]))
            d = r.data
            if r.op == "error":
                raise TapeMissing(f"the recorded LLM request {n + 1} failed: {d['message']}")
            yield ChatChunk(
                text=d.get("text") or "",
                tool_calls=[
                    ToolCallDelta(i, cid, name, args) for i, cid, name, args in d["tool_calls"]
                ],
                finish_reason=d.get("finish_reason"),
                prompt_tokens=d.get("prompt_tokens"),
                completion_tokens=d.get("completion_tokens"),
            )

    async def summarize(messages: Sequence[dict[str, Any]], previous: str | None) -> str:
        if not summaries:
            raise TapeMissing("a summary the recording does not hold (the bot diverged)")
        r = summaries.popleft()
        await llm.clock.sleep(float(r.data["dt"]))
        return str(r.data["text"])

    llm.stream_chat = stream_chat  # type: ignore[method-assign]
    if hasattr(llm, "summarize"):
        target: Any = llm
        target.summarize = summarize


def _play_tts(tts: TTSService, records: list[ServiceRecord]) -> None:
    by_reply: dict[str, list[ServiceRecord]] = defaultdict(list)
    for r in records:
        if r.op == "reply":
            by_reply.setdefault(str(r.data["reply"]), [])
        elif r.op == "audio":
            by_reply[str(r.data["reply"])].append(r)
    seen: dict[int, int] = defaultdict(int)

    own = tts.synthesize_reply  # the replay's own (offline) voice

    async def synthesize_reply(reply: TTSReply) -> None:
        key = f"{reply.index}.{seen[reply.index]}"
        seen[reply.index] += 1
        if key not in by_reply:
            # Not in the recording (a line the live call took from the speech cache, or a bot
            # that diverged): said by the replay's own voice rather than not at all.
            await own(reply)
            return
        start = tts.clock.now()
        # The text must still be taken (the reply's input ends with it), audio or not.
        drain = asyncio.ensure_future(_drain(reply))
        try:
            for r in by_reply[key]:
                d = r.data
                await tts.clock.sleep_until(start + float(d["dt"]))
                width = 2 if d["encoding"] == "pcm16" else 1
                silence = (b"\xff" if d["encoding"] == "mulaw" else b"\x00") * (
                    int(d["bytes"]) // width * width
                )
                al = d.get("alignment")
                reply.push_audio(
                    silence,
                    int(d["sample_rate"]),
                    str(d["encoding"]),
                    alignment=CharAlignment(al[0], al[1], al[2]) if al else None,
                    words=[TimedWord(w[0], float(w[1]), float(w[2])) for w in d.get("words") or []],
                )
            await drain
        finally:
            drain.cancel()

    tts.synthesize_reply = synthesize_reply  # type: ignore[method-assign]


async def _drain(reply: TTSReply) -> None:
    async for _ in reply.texts():
        pass
