"""`voxpipe bench latency`: voice-to-voice latency of whole phone calls on the provider fakes.

One call, real clock, real sockets on 127.0.0.1: the real pipeline ::

    MemoryTransport input (Silero VAD) -> DeepgramSTTService -> UserContextAggregator
    -> OpenAILLMService -> ElevenLabsTTSService -> MemoryTransport output
    -> AssistantContextAggregator

against ``FakeDeepgram`` / ``FakeOpenAI`` / ``FakeElevenLabs`` with fixed latencies (final
transcript 150 ms after ``Finalize``, first token 200 ms after the request with the rest of
the reply right after it, first audio 150 ms after a sentence). The wire is a phone line:
8 kHz mu-law both ways, the TTS asked for ``ulaw_8000`` and passed through untouched.

The caller speaks the utterances of ``tests/data/speech_16k.wav`` (resampled to 8 kHz
mu-law) in real-time-paced 20 ms chunks, with line silence between turns. The timeline is
fixed in advance (the fake Deepgram is scripted by audio time): each turn starts a fixed gap
after the previous one's speech, long enough for the bot's reply to have played out.

The rig keeps its own timing out of the figures: the caller pushes chunk ``i`` at
``t0 + i * 20 ms`` and the fakes answer at their configured latencies on the precise timers
of ``voxpipe.testing.timing`` (about 0.1 ms late, where the event loop's own timers are up to
a millisecond off), and the report shows what the fakes and the caller actually took. Run
from the command line, the call runs as ``voxpipe serve`` runs one: on uvloop when it is
installed (``loop``) and with the garbage collector tuned by ``tune_gc`` (``gc``).

Measured per turn with ``time.perf_counter``, from the caller's end of speech (the moment the
wire chunk holding the end of the VAD's last speech window was pushed in) to the first bot
audio chunk reaching the wire. The call is built as ``voxpipe serve`` builds one: the
settings it reads (or ``settings=``), a ``Call`` that gives the transport the served turn
detection (``turn_taking``: by default Smart Turn after 0.2 s of VAD silence), and a
batched VAD. ``turn_wait`` is end of speech to turn decided (the VAD's stop plus the model's
verdict, or its wait when it judged the turn incomplete). With ``PREEMPTIVE_REPLIES`` (the
default) the STT is asked for its final when the caller goes quiet, the reply is asked for
from it at once and held by the LLM service until the turn is decided on the same words
(``preemptive_discarded``: replies prepared and thrown away, at pauses inside a sentence).
The engine's part is the total minus when a zero-cost engine could have had the reply on the
wire with these providers: for a held reply max(turn wait, its transcript + LLM) + TTS, for
one asked after the decision max(turn wait, the STT's final) + LLM + TTS. Per-stage stamps
(the fakes stamp what they receive and send) break the engine's part down along the chain
that led to the reply heard, to show where time goes. The fakes run in the same event
loop as the call: what they take beyond their settings (timer wake-up, a busy loop) counts in
the engine figure, and ``engine_excl_fake_overrun_*`` takes it out.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.audio.mulaw import pcm16_to_mulaw
from voxpipe.audio.resample import resample_pcm16
from voxpipe.audio.wav import read_wav
from voxpipe.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    LLMMessagesFrame,
    LLMTextFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.observer import Observer
from voxpipe.pipelines.pipeline import Pipeline
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.aggregators import (
    AssistantContextAggregator,
    LLMContext,
    UserContextAggregator,
)
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.turn.frames import (
    PreemptiveLLMMessagesFrame,
    PreemptiveReplyFrame,
    UserSilenceStartedFrame,
)
from voxpipe.processors.turn.params import transport_turn_kwargs
from voxpipe.processors.vad.analyzer import VADAnalyzer, VADEvent
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.testing import timing
from voxpipe.transports.input import BaseInputTransport
from voxpipe.transports.memory import MemoryTransport, silence
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

__all__ = ["LOOPS", "REPLY", "STAGES", "loop_factory", "run_latency", "run_latency_bench"]

_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
PHONE = AudioFormat("mulaw", 8000)
CHUNK_SECS = 0.02
API_KEY = "bench-key"

# Two sentences: the first is complete (and goes to the TTS) as soon as the token after it
# arrives, which the fake streams right behind the first token.
REPLY = "Got it. Next?"
SUMMARY = "The caller asked for help with an order and gave a number."

# Stamps along one turn's path, in the order they happen.
STAGES = (
    "silence_start",  # the input transport pushes UserSilenceStartedFrame (turn not decided)
    "finalize_received",  # FakeDeepgram received Finalize
    "final_sent",  # FakeDeepgram sent the final transcript
    "transcript",  # the STT pushes the TranscriptionFrame
    "preempt_request",  # the user aggregator asks for a held (preemptive) reply
    "vad_stop",  # the input transport pushes UserStoppedSpeakingFrame: the turn is decided
    "llm_request",  # the user aggregator pushes an LLMMessagesFrame (a reply not preempted)
    "released",  # the user aggregator releases the held reply
    "llm_received",  # FakeOpenAI received the streaming request
    "first_token_sent",  # FakeOpenAI sent the first token
    "first_token",  # the LLM pushes its first LLMTextFrame
    "tts_text_received",  # FakeElevenLabs received the first sentence
    "tts_audio_sent",  # FakeElevenLabs sent the first audio
    "tts_audio",  # the TTS pushes its first OutputAudioFrame
    "wire",  # the first bot audio chunk reaches the wire
)


# ---------------------------------------------------------------------------- stamps


class _Stamps:
    """Named ``perf_counter`` instants, in the order they were taken."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str]] = []

    def add(self, stage: str) -> None:
        self.items.append((time.perf_counter(), stage))

    def first(self, stage: str, after: float, before: float) -> float | None:
        for t, name in self.items:
            if name == stage and after <= t < before:
                return t
        return None

    def last(self, stage: str, after: float, before: float) -> float | None:
        found = None
        for t, name in self.items:
            if name == stage and after <= t < before:
                found = t
        return found


class _StageObserver(Observer):
    """Stamps the first frames of a turn as processors push them (a dict lookup per hop)."""

    def __init__(self, stamps: _Stamps) -> None:
        self.stamps = stamps
        self.watch: dict[tuple[int, type], str] = {}

    def stage(self, src: FrameProcessor, kind: type, name: str) -> None:
        self.watch[(id(src), kind)] = name

    def on_push(
        self, src: FrameProcessor, dst: FrameProcessor, frame: Frame, direction: FrameDirection
    ) -> None:
        name = self.watch.get((id(src), type(frame)))
        if isinstance(frame, PreemptiveReplyFrame) and not frame.release:
            return  # a discard: only the release is a stage
        if name is not None and direction is FrameDirection.DOWNSTREAM:
            self.stamps.add(name)


class _TimedInput(BaseInputTransport):
    """The input transport, keeping when each wire chunk came in and where the VAD heard speech end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_perf: list[float] = []  # perf_counter when chunk i was pushed in
        self.chunk_end: list[float] = []  # stream seconds at the end of chunk i
        self.speech_ends: list[float] = []  # VAD "stopped": end of the last speech window
        self._fed = 0

    async def push_wire_audio(self, audio: bytes) -> None:
        if self.started and not self.closed:
            self.chunk_perf.append(time.perf_counter())
            self._fed += len(audio)
            self.chunk_end.append(self._fed / (self.params.audio_in.sample_rate))
        await super().push_wire_audio(audio)

    async def _analyze(self, vad: VADAnalyzer, pcm: bytes) -> list[VADEvent]:
        events = await super()._analyze(vad, pcm)
        for event in events:
            if event.kind == "stopped":
                self.speech_ends.append(event.speech_time)
        return events

    def pushed_at(self, stream_time: float) -> float | None:
        """perf_counter when the chunk holding ``stream_time`` (its end) was pushed in."""
        i = int(np.searchsorted(np.asarray(self.chunk_end), stream_time - 1e-9))
        return self.chunk_perf[i] if i < len(self.chunk_perf) else None


class _BenchTransport(MemoryTransport):
    input_class = _TimedInput


# ---------------------------------------------------------------------------- the fakes


def _timed_fakes(stamps: _Stamps) -> tuple[type, type]:
    """FakeDeepgram and FakeElevenLabs subclasses stamping what they receive and send."""
    from voxpipe.testing.fakes import FakeDeepgram, FakeElevenLabs

    class TimedDeepgram(FakeDeepgram):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._seen: dict[int, int] = {}

        async def _on_text(self, stream: Any, text: str) -> None:
            if '"Finalize"' in text:
                stamps.add("finalize_received")
            await super()._on_text(stream, text)

        def _notify(self) -> None:
            # Called right after each message goes out (among other things): look for finals.
            for conn in self.connections:
                seen = self._seen.get(conn.index, 0)
                for message in conn.sent[seen:]:
                    if message.get("type") == "Results":
                        alt = message["channel"]["alternatives"][0]
                        if alt.get("transcript"):
                            stamps.add("final_sent" if message.get("is_final") else "interim_sent")
                self._seen[conn.index] = len(conn.sent)
            super()._notify()

    class TimedElevenLabs(FakeElevenLabs):
        async def _on_message(self, sock: Any, raw: str) -> None:
            try:
                text = json.loads(raw).get("text")
            except (ValueError, AttributeError):
                text = None
            if isinstance(text, str) and text.strip():
                stamps.add("tts_text_received")
            await super()._on_message(sock, raw)

        async def _send_audio(self, sock: Any, prepared: Any) -> None:
            await super()._send_audio(sock, prepared)
            stamps.add("tts_audio_sent")

    return TimedDeepgram, TimedElevenLabs


def _reply_source(reply: str) -> Callable[[dict[str, Any]], str]:
    def source(body: dict[str, Any]) -> str:
        if body.get("stream"):
            return reply
        return SUMMARY  # the context's summary of older turns (non-streaming, off the path)

    return source


def _stamp_llm(stamps: _Stamps, requests: list[Any]) -> None:
    """FakeOpenAI's own record of each streaming request: when it came in, its first token out."""
    for r in requests:
        if r.json.get("stream") and r.first_sent_at is not None:
            stamps.items.append((r.received_at, "llm_received"))
            stamps.items.append((r.first_sent_at, "first_token_sent"))
    stamps.items.sort()


# ---------------------------------------------------------------------------- the caller


@dataclass(slots=True)
class _Turn:
    """One caller turn on the call's audio timeline (seconds from the first chunk)."""

    text: str
    start: float  # speech start per the truth file
    end: float  # speech end per the truth file


def _utterances(path: Path, pad: float) -> list[tuple[bytes, float, float, str]]:
    """(8 kHz mu-law clip, speech start, speech end within the clip, text) per utterance."""
    truth = json.loads(path.with_suffix(".json").read_text())
    audio = read_wav(path)
    pcm = np.frombuffer(resample_pcm16(audio.pcm, audio.sample_rate, 8000), dtype="<i2")
    step = round(CHUNK_SECS * 8000)
    out = []
    for (onset, end), text in zip(truth["segments"]["8000"], truth["texts"], strict=True):
        a = max(0, round((onset - pad) * 8000))
        b = min(len(pcm), round((end + pad) * 8000))
        clip = pcm[a:b]
        clip = np.pad(clip, (0, -len(clip) % step))  # whole 20 ms chunks
        out.append((pcm16_to_mulaw(clip.tobytes()), onset - a / 8000, end - a / 8000, text))
    return out


def _timeline(
    clips: list[tuple[bytes, float, float, str]], n: int, lead: float, gap: float
) -> tuple[bytes, list[_Turn]]:
    """The caller's whole side of the call: ``n`` utterances, ``gap`` s of silence after each."""
    parts: list[bytes] = [silence(PHONE, lead)]
    t = lead
    turns = []
    for k in range(n):
        clip, s0, s1, text = clips[k % len(clips)]
        turns.append(_Turn(text, t + s0, t + s1))
        parts.append(clip)
        parts.append(silence(PHONE, gap))
        t += len(clip) / PHONE.sample_rate + gap
    return b"".join(parts), turns


# ---------------------------------------------------------------------------- numbers


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _r(x: float) -> float:
    return round(x, 2) if math.isfinite(x) else x


def _spread(values: list[float]) -> dict[str, float]:
    return {"p50": _r(_pct(values, 50)), "p95": _r(_pct(values, 95)), "max": _r(max(values))}


# ---------------------------------------------------------------------------- the loop

LOOPS = ("auto", "asyncio", "uvloop")
GC_TUNED = "tuned as voxpipe serve"
GC_DEFAULT = "python default"


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run the call on: uvloop (what ``voxpipe serve`` runs on when it is
    installed: uvicorn's loop="auto"), or asyncio's default loop."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise ValueError(
                    "uvloop is not installed: pip install uvloop, or choose the asyncio loop"
                ) from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run_latency(
    turns: int = 20, *, loop: str = "auto", tune_gc: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """Run ``run_latency_bench`` as ``voxpipe serve`` would run the call, and return its report.

    ``loop``: "auto" (uvloop when installed), "uvloop" or "asyncio". ``tune_gc``: apply the
    server's garbage-collector settings first (process-wide, for the rest of the process).
    Other keyword arguments go to ``run_latency_bench``.
    """
    factory = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_latency_bench(turns, tune_gc=tune_gc, **kwargs))


# ---------------------------------------------------------------------------- the bench


async def run_latency_bench(
    turns: int = 20,
    *,
    warmup_turns: int = 1,
    stt_latency: float = 0.15,
    llm_first_token: float = 0.2,
    tts_first_audio: float = 0.15,
    settings: Any = None,
    ms_per_char: float = 60.0,
    reply: str = REPLY,
    speech_wav: str | Path | None = None,
    tune_gc: bool = False,
) -> dict[str, Any]:
    """Run one phone call of ``turns`` measured caller turns on the fakes; report v2v latency.

    Keys: ``v2v_p50_ms``/``v2v_p95_ms`` (caller's end of speech to the first bot audio on the
    wire), ``engine_p50_ms``/``engine_p95_ms`` (that minus the configured provider latencies
    and ``vad_stop_ms``), ``engine_excl_fake_overrun_*`` (also minus what the fakes took
    beyond their settings), ``turns`` (measured), the configured latencies,
    ``fake_latency_ms`` (what each fake took, measured: p50/p95/max per turn),
    ``caller_chunk_late_ms`` (how late the caller pushed its chunks), ``stage_ms_p50`` (each
    stage in ``STAGES``, ms after the end of speech), ``engine_breakdown_ms_p50``/``_p95``
    (time between stages beyond what the fakes and the VAD were set to take),
    ``failed_turns``, ``barge_ins`` (0: the caller never talks over the bot), ``loop`` (the
    event loop it ran on), ``gc``, ``v2v_ms`` (per turn) and ``wall_seconds``.
    ``warmup_turns`` run first and are not measured (the first request opens connections).
    ``tune_gc``: apply ``voxpipe serve``'s garbage-collector settings before the call
    (process-wide). About 4 s of call per turn.
    """
    if turns < 1:
        raise ValueError(f"turns must be at least 1, got {turns}")
    from voxpipe.config.settings import get_settings
    from voxpipe.processors.turn.params import turn_taking

    # The served defaults: the settings `voxpipe serve` reads (environment, .env) unless given,
    # turned into the call's turn detection by the same function every served call uses.
    settings = settings if settings is not None else get_settings()
    vad_params, turn_cfg = turn_taking(settings)
    vad_stop_secs = vad_params.stop_secs
    path = Path(speech_wav) if speech_wav is not None else _DATA / "speech_16k.wav"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"speech recording {path} (with its .json truth) not found: run from a voxpipe "
            "checkout or pass speech_wav= a 16 kHz WAV with a .json truth beside it"
        )
    wall0 = time.perf_counter()
    configured_ms = 1000.0 * (stt_latency + llm_first_token + tts_first_audio)
    vad_stop_ms = 1000.0 * vad_stop_secs
    # The longest a turn can take to be decided: the VAD's stop, or Smart Turn's limit.
    decide_secs = max(vad_stop_secs, turn_cfg.max_wait_secs if turn_cfg.mode == "smart" else 0)
    # The reply plays out well before the caller's next turn (chars the fake speaks: the
    # sentences and the space sent after each), so the caller never talks over the bot.
    reply_secs = (len(reply) + 2) * ms_per_char / 1000.0
    gap = decide_secs + configured_ms / 1000.0 + reply_secs + 0.3
    gap = math.ceil(gap / CHUNK_SECS) * CHUNK_SECS
    n = warmup_turns + turns
    audio, timeline = _timeline(_utterances(path, pad=0.1), n, lead=0.6, gap=gap)

    stamps = _Stamps()
    cfg = _Config(
        stt_latency, llm_first_token, tts_first_audio, vad_stop_secs, ms_per_char, reply, settings
    )
    call = await _call(cfg, audio, timeline, stamps, tune_gc=tune_gc)
    inp = call.input
    measured = _measure(inp, timeline, call.wire_perf, stamps, gap)[warmup_turns:]
    ok = [m for m in measured if m is not None]
    if not ok:
        raise RuntimeError(
            "no turn reached the wire: the bot never answered (see the log for provider or "
            "pipeline errors)"
        )
    v2v = [m["wire"] for m in ok]
    # Silence -> turn decided (the VAD's stop, plus Smart Turn's verdict or its wait), measured.
    turn_wait = [m.get("vad_stop", vad_stop_ms) for m in ok]
    # The engine's part: the first audio on the wire minus when an engine that took no time
    # could have had it with these providers (_ideal_wire).
    engine = [
        m["wire"] - _ideal_wire(m, w, stt_latency, llm_first_token, tts_first_audio)
        for m, w in zip(ok, turn_wait, strict=True)
    ]
    # What the fakes took beyond their settings (their own timers and work): not the
    # engine's, though the definition above counts it.
    overrun = [_fake_overrun(m, stt_latency, llm_first_token, tts_first_audio) for m in ok]
    engine_net = [e - o for e, o in zip(engine, overrun, strict=True) if o is not None]
    stage_p50 = {s: _r(_pct([m[s] for m in ok if s in m], 50)) for s in STAGES}
    segments = _segments(ok, stt_latency, llm_first_token, tts_first_audio)
    fakes = {
        name: {"configured": round(1000 * configured, 3), **_spread(values)}
        for name, configured, values in (
            ("stt_final", stt_latency, _span(ok, "finalize_received", "final_sent")),
            ("llm_first_token", llm_first_token, _span(ok, "llm_received", "first_token_sent")),
            ("tts_first_audio", tts_first_audio, _span(ok, "tts_text_received", "tts_audio_sent")),
        )
        if values
    }
    return {
        "v2v_p50_ms": _r(_pct(v2v, 50)),
        "v2v_p95_ms": _r(_pct(v2v, 95)),
        "v2v_max_ms": _r(max(v2v)),
        "engine_p50_ms": _r(_pct(engine, 50)),
        "engine_p95_ms": _r(_pct(engine, 95)),
        "engine_max_ms": _r(max(engine)),
        "engine_target_p95_ms": 5.0,
        "engine_excl_fake_overrun_p50_ms": _r(_pct(engine_net, 50)),
        "engine_excl_fake_overrun_p95_ms": _r(_pct(engine_net, 95)),
        "turns": len(ok),
        "failed_turns": len(measured) - len(ok),
        "warmup_turns": warmup_turns,
        "stt_latency_ms": round(1000 * stt_latency, 3),
        "llm_first_token_ms": round(1000 * llm_first_token, 3),
        "tts_first_audio_ms": round(1000 * tts_first_audio, 3),
        "configured_latency_ms": round(configured_ms, 3),
        "vad_stop_ms": round(vad_stop_ms, 3),
        "turn_detection": turn_cfg.mode,
        "turn_wait_p50_ms": _r(_pct(turn_wait, 50)),
        "turn_wait_p95_ms": _r(_pct(turn_wait, 95)),
        "turn_wait_max_ms": _r(max(turn_wait)),
        # Preemptive replies (PREEMPTIVE_REPLIES): asked for before the turn was decided,
        # released as the reply, or discarded unheard (an LLM request spent for nothing).
        "preemptive_replies": settings.preemptive_replies,
        "preemptive_started": call.preemptive[0],
        "preemptive_used": call.preemptive[1],
        "preemptive_discarded": call.preemptive[2],
        "preemptive_turns": sum(1 for m in ok if m.get("preemptive")),
        "smart_turn_decisions": inp.turn_gate.decisions if inp.turn_gate is not None else 0,
        "smart_turn_incomplete": inp.turn_gate.incomplete if inp.turn_gate is not None else 0,
        "vad_note": (
            f"served turn detection: {turn_cfg.mode}, VAD stop {vad_stop_secs:g} s"
            + (
                f", then Smart Turn (incomplete waits up to {turn_cfg.max_wait_secs:g} s)"
                if turn_cfg.mode == "smart"
                else ""
            )
            + f"; Deepgram endpointing {cfg.endpointing_ms} ms; engine = v2v - when a "
            "zero-cost engine could have played the reply with these providers: max(turn "
            "wait, the used request's transcript source + LLM) + TTS (source: when the STT "
            "sent that transcript, or the silence if it came earlier; a reply not preempted: "
            "max(turn wait, the final) + LLM + TTS) "
            "(the model's inference counts in the turn wait)"
        ),
        "fake_latency_ms": fakes,
        "caller_chunk_late_ms": _spread(call.chunk_late_ms),
        "stage_ms_p50": stage_p50,
        "engine_breakdown_ms_p50": {k: _r(_pct(v, 50)) for k, v in segments.items()},
        "engine_breakdown_ms_p95": {k: _r(_pct(v, 95)) for k, v in segments.items()},
        "vad_end_minus_truth_ms_p50": _r(_pct([m["vad_vs_truth"] for m in ok], 50)),
        "v2v_ms": [_r(x) for x in v2v],
        "llm_requests": call.llm_requests,
        "barge_ins": inp.interruptions,
        "loop": call.loop,
        "gc": GC_TUNED if tune_gc else GC_DEFAULT,
        "wall_seconds": round(time.perf_counter() - wall0, 2),
    }


@dataclass(slots=True, frozen=True)
class _Config:
    """What the fakes are told to take, and the VAD's stop."""

    stt_latency: float
    llm_first_token: float
    tts_first_audio: float
    vad_stop_secs: float
    ms_per_char: float
    reply: str
    settings: Any

    @property
    def endpointing_ms(self) -> int:
        # Longer than the VAD's stop: each turn is finalized by the VAD's Finalize (the fake
        # answers stt_latency after it), the chain this bench measures.
        return round(1000 * self.vad_stop_secs) + 500


@dataclass(slots=True)
class _CallResult:
    input: _TimedInput
    wire_perf: list[float]  # perf_counter of every bot audio chunk sent to the wire
    llm_requests: int  # streaming chat requests the fake OpenAI answered
    preemptive: tuple[int, int, int]  # the user aggregator's (started, used, discarded)
    chunk_late_ms: list[float]  # how late the caller pushed each chunk
    loop: str  # the event loop the call ran on
    transport: MemoryTransport | None = None  # the call's transport (its sink: the wire)


async def _feed(transport: MemoryTransport, audio: bytes, late_ms: list[float]) -> None:
    """The caller: wire chunk ``i`` pushed at ``t0 + i * chunk`` on the precise timer."""
    size = transport.input_chunk_bytes
    step = transport.params.chunk_ms / 1000
    t0 = timing.now()
    for k, i in enumerate(range(0, len(audio), size)):
        due = t0 + k * step
        await timing.sleep_until(due)
        late_ms.append(1000.0 * (timing.now() - due))
        await transport.push_wire_audio(audio[i : i + size])


async def _call(
    cfg: _Config,
    audio: bytes,
    timeline: list[_Turn],
    stamps: _Stamps,
    *,
    tune_gc: bool,
    transport_class: type[_BenchTransport] | None = None,
    replies: Callable[[dict[str, Any]], str] | None = None,
    after_stt: Callable[[], list[FrameProcessor]] | None = None,
) -> _CallResult:
    """Run the whole call: fakes up, pipeline built, the caller's audio fed, the call ended.

    ``transport_class`` (a ``_BenchTransport`` subclass), ``replies`` (the fake LLM's
    answer to each request body) and ``after_stt`` (processors to place right after the STT)
    let other benches run the same call (`bench turns`)."""
    from voxpipe.processors.llm.openai import OpenAILLMService
    from voxpipe.processors.stt.deepgram import DeepgramSTTService
    from voxpipe.processors.tts.elevenlabs import ElevenLabsTTSService
    from voxpipe.testing.fakes import DeepgramUtterance, FakeOpenAI

    if tune_gc:
        from voxpipe.server.run import tune_gc as tune

        tune()  # as the server does at start-up, once the service modules are imported
    TimedDeepgram, TimedElevenLabs = _timed_fakes(stamps)
    utterances = [DeepgramUtterance(t.text, start=t.start, end=t.end) for t in timeline]
    async with (
        TimedDeepgram(api_key=API_KEY, utterances=utterances, latency=cfg.stt_latency) as dg,
        FakeOpenAI(
            api_key=API_KEY,
            replies=replies if replies is not None else _reply_source(cfg.reply),
            first_token_delay=cfg.llm_first_token,
            chunk_delay=0.0,
        ) as oai,
        TimedElevenLabs(
            api_key=API_KEY, ms_per_char=cfg.ms_per_char, first_audio_latency=cfg.tts_first_audio
        ) as el,
    ):
        settings = cfg.settings
        # As voxpipe serve builds a call: the served turn-taking (the one function every
        # call uses) and the worker's batched VAD.
        params = TransportParams(
            audio_in=PHONE,
            audio_out=PHONE,
            allow_interruptions=settings.allow_interruptions,
            **transport_turn_kwargs(settings),
        )
        transport = (transport_class or _BenchTransport)(params, batched_vad=BatchedVAD())
        inp = transport.input()
        assert isinstance(inp, _TimedInput)
        stt = DeepgramSTTService(
            api_key=API_KEY, base_url=dg.url, endpointing_ms=cfg.endpointing_ms
        )
        llm = OpenAILLMService(api_key=API_KEY, base_url=oai.base_url, model="gpt-4o-mini")
        context = LLMContext("You are a helpful phone agent. Answer briefly.", summarizer=llm)
        user = UserContextAggregator(context)
        tts = ElevenLabsTTSService(api_key=API_KEY, voice_id="bench-voice", base_url=el.url)
        observer = _StageObserver(stamps)
        observer.stage(inp, UserSilenceStartedFrame, "silence_start")
        observer.stage(inp, UserStoppedSpeakingFrame, "vad_stop")
        observer.stage(stt, TranscriptionFrame, "transcript")
        observer.stage(user, PreemptiveLLMMessagesFrame, "preempt_request")
        observer.stage(user, LLMMessagesFrame, "llm_request")
        observer.stage(user, PreemptiveReplyFrame, "released")
        observer.stage(llm, LLMTextFrame, "first_token")
        observer.stage(tts, OutputAudioFrame, "tts_audio")
        pipeline = Pipeline(
            [
                inp,
                stt,
                *(after_stt() if after_stt is not None else []),
                user,
                llm,
                tts,
                transport.output(),
                AssistantContextAggregator(context),
            ]
        )
        task = PipelineTask(
            pipeline, params=transport.task_params(), observers=[observer], end_timeout=10.0
        )
        loop = asyncio.get_running_loop()
        runner = loop.create_task(task.run(), name="latency-bench-call")
        feed: asyncio.Task[None] | None = None
        late_ms: list[float] = []
        try:
            # The call starts in milliseconds; if it fails instead, the runner ends first.
            started = loop.create_task(task.wait_started())
            await asyncio.wait({started, runner}, timeout=10.0, return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                started.cancel()
                if not runner.done():
                    raise RuntimeError("the call did not start within 10 s")
            # Deepgram's socket and the TTS's warm socket are up before the caller speaks.
            await dg.wait_for(lambda: dg.connection_count >= 1, timeout=10.0)
            await el.wait_for(lambda: len(el.connections) >= 1, timeout=10.0)
            feed = loop.create_task(_feed(transport, audio, late_ms), name="latency-bench-caller")
            await asyncio.wait({feed, runner}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                error = None if runner.cancelled() else runner.exception()
                raise RuntimeError(
                    "the call ended before the caller finished "
                    f"({error!r} {task.end_reason}): see the log for provider or pipeline errors"
                ) from error
            # The last reply has played (the timeline's last gap covers it): end the call.
            await task.queue_frame(EndFrame())
            async with asyncio.timeout(15.0):
                await runner
        finally:
            for t in (feed, runner):
                if t is not None and not t.done():
                    t.cancel()
                    await asyncio.gather(t, return_exceptions=True)
        llm_requests = sum(1 for r in oai.requests if r.json.get("stream"))
        _stamp_llm(stamps, oai.requests)
    wire_perf = [e.perf for e in transport.memory_sink.audio_events]
    counts = (user.preemptive_started, user.preemptive_used, user.preemptive_discarded)
    return _CallResult(inp, wire_perf, llm_requests, counts, late_ms, _loop_name(loop), transport)


def _measure(
    inp: _TimedInput, timeline: list[_Turn], wire: list[float], stamps: _Stamps, gap: float
) -> list[dict[str, float] | None]:
    """Per turn: ms from the end of speech to each stage, or None if the bot did not answer."""
    out: list[dict[str, float] | None] = []
    ends = inp.speech_ends
    for k, turn in enumerate(timeline):
        upto = timeline[k + 1].start if k + 1 < len(timeline) else math.inf
        # The VAD's end of this turn's speech: the last "stopped" within the utterance.
        mine = [e for e in ends if turn.start < e < min(turn.end + gap, upto)]
        t0 = inp.pushed_at(mine[-1]) if mine else None
        if t0 is None:
            out.append(None)
            continue
        limit = t0 + gap  # the answer must come long before the next turn
        first_wire = next((p for p in wire if p >= t0), None)
        if first_wire is None or first_wire >= limit:
            out.append(None)
            continue
        m = {"wire": 1000.0 * (first_wire - t0), "vad_vs_truth": 1000.0 * (mine[-1] - turn.end)}
        for stage in STAGES[:-1]:
            # The STT's answer to this turn's Finalize (a final still coming from a pause
            # inside the sentence can arrive after the end of speech too).
            after = t0 + m.get(_AFTER.get(stage, ""), 0.0) / 1000.0
            t = stamps.first(stage, after, first_wire + 1e-9)
            if t is not None:
                m[stage] = 1000.0 * (t - t0)
        _used_request(m, stamps, t0, first_wire)
        out.append(m)
    return out


_AFTER = {"final_sent": "finalize_received", "transcript": "final_sent"}


def _used_request(m: dict[str, float], stamps: _Stamps, t0: float, wire: float) -> None:
    """Which request the heard reply came from: held (``preemptive``), and its transcript's
    source (``source``: when the STT sent the transcript it was asked from, interim or final;
    the silence when the STT had sent it before the end of speech)."""
    held = stamps.last("preempt_request", t0, wire)
    plain = stamps.last("llm_request", t0, wire)
    used = max((t for t in (held, plain) if t is not None), default=None)
    if used is not None:
        m["request"] = 1000.0 * (used - t0)
    received = stamps.last("llm_received", t0, wire)
    if received is not None:
        m["used_llm_received"] = 1000.0 * (received - t0)
        sent = stamps.first("first_token_sent", received, wire)
        if sent is not None:
            m["used_first_token_sent"] = 1000.0 * (sent - t0)
    if held is None or (plain is not None and plain > held):
        return
    m["preemptive"] = 1.0
    # The transcript it was made from: the newest the STT sent before it (an interim, or a
    # final), else one it had before the end of speech (then the silence is when it could go).
    heard = [stamps.last(k, t0, held) for k in ("final_sent", "interim_sent")]
    silence = stamps.first("silence_start", t0, held + 1e-9)
    latest = max((t for t in heard if t is not None), default=None)
    if latest is not None:
        m["source"] = 1000.0 * (latest - t0)
    elif silence is not None:
        m["source"] = 1000.0 * (silence - t0)


def _ideal_wire(m: dict[str, float], wait: float, stt: float, llm: float, tts: float) -> float:
    """ms after the end of speech a zero-cost engine would put the reply on the wire.

    A held reply: its request could start at its transcript's source (when the STT sent it,
    or the silence when it was there before) and is heard once the turn is decided: max(decision, source +
    LLM) + TTS. A reply asked after the decision: max(decision, the final) + LLM + TTS (the
    final by the fake's stamp, else the decision + STT latency)."""
    llm_ms, tts_ms = 1000.0 * llm, 1000.0 * tts
    if m.get("preemptive") and "source" in m:
        return max(wait, m["source"] + llm_ms) + tts_ms
    final = m.get("final_sent", wait + 1000.0 * stt)
    return max(wait, final) + llm_ms + tts_ms


def _fake_overrun(m: dict[str, float], stt: float, llm: float, tts: float) -> float | None:
    """ms the fakes took beyond their configured latencies in one turn."""
    spans: tuple[tuple[str, str, float], ...] = (
        ("finalize_received", "final_sent", stt),
        ("llm_received", "first_token_sent", llm),
        ("tts_text_received", "tts_audio_sent", tts),
    )
    if not all(a in m and b in m for a, b, _ in spans):
        return None
    if m["final_sent"] < m["finalize_received"]:
        # The STT's own endpointing answered before the turn was decided (a turn Smart Turn
        # held): the STT was not in the chain, only the LLM and TTS fakes' overrun counts.
        spans = spans[1:]
    return sum(m[b] - m[a] - 1000 * configured for a, b, configured in spans)


def _span(measured: list[dict[str, float]], a: str, b: str) -> list[float]:
    """ms from stage ``a`` to stage ``b`` in each turn that has both, in that order (a turn
    Smart Turn held can have its STT final, by the STT's own endpointing, before Finalize)."""
    return [m[b] - m[a] for m in measured if a in m and b in m and m[b] >= m[a]]


def _segments(
    measured: list[dict[str, float]],
    stt: float,
    llm: float,
    tts: float,
) -> dict[str, list[float]]:
    """Time between consecutive stages of the chain that led to the heard reply, minus what
    the fakes took (a span is left out of a turn where it was not on that chain)."""
    spans = [
        ("stt_send_finalize", "silence_start", "finalize_received", 0.0),
        ("stt_fake", "finalize_received", "final_sent", 1000 * stt),
        ("stt_receive", "final_sent", "transcript", 0.0),
        ("user_aggregator", "transcript", "request", 0.0),
        ("llm_send", "request", "used_llm_received", 0.0),
        ("llm_fake", "used_llm_received", "used_first_token_sent", 1000 * llm),
        ("llm_receive", "llm_ready", "first_token", 0.0),
        ("tts_send_sentence", "first_token", "tts_text_received", 0.0),
        ("tts_fake", "tts_text_received", "tts_audio_sent", 1000 * tts),
        ("tts_receive", "tts_audio_sent", "tts_audio", 0.0),
        ("output_transport", "tts_audio", "wire", 0.0),
    ]
    out: dict[str, list[float]] = {}
    for name, a, b, configured in spans:
        values = []
        for m in measured:
            if a == "llm_ready":
                # The first token goes on once it is in, and (a held reply) released.
                ready = [m[k] for k in ("used_first_token_sent", "released") if k in m]
                start = max(ready) if ready else None
            else:
                start = m.get(a)
            end = m.get(b)
            if start is not None and end is not None and end >= start:
                values.append(end - start - configured)
        out[name] = values
    return out


if __name__ == "__main__":  # pragma: no cover - manual run
    print(json.dumps(run_latency(), indent=2))
