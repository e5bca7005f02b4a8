"""What happened in a call, as plain data: speech turns, transcripts, replies, tool calls,
interruptions, latencies and a digest of the bot's audio.

``CallSummarizer`` is a hop observer: it sees every frame once (the first time it moves
between two processors) with the call-clock time, so it catches transcripts and replies even
when an aggregator consumes them. The summary of a call on the virtual clock is
deterministic, which is what golden files for ``voxpipe replay`` compare.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.observer import Observer
from voxpipe.processors.base import FrameProcessor

__all__ = ["CallSummarizer", "audio_digest", "compare_summaries"]

_DIGITS = 3  # times in ms: finer than any decision the engine makes
_AUDIO = (InputAudioFrame, OutputAudioFrame)
_BOTH_WAYS = (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)


def _t(x: float) -> float:
    return round(x, _DIGITS)


def audio_digest(audio: bytes, bytes_per_second: float) -> dict[str, Any]:
    """Length and SHA-256 of audio, so two runs can be compared byte for byte."""
    return {
        "seconds": _t(len(audio) / bytes_per_second) if bytes_per_second else 0.0,
        "sha256": hashlib.sha256(audio).hexdigest(),
    }


class CallSummarizer(Observer):
    """Collects a call's events from the frames crossing its processors (see module docstring)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or Clock()
        self._t0: float | None = None
        self._seen: set[int] = set()
        self.events: list[dict[str, Any]] = []
        self._reply: list[str] | None = None
        self._reply_t = 0.0
        self.metrics: list[dict[str, Any]] = []

    def start(self, t0: float) -> None:
        """Times are reported from ``t0`` on the call clock (default: the first frame seen)."""
        self._t0 = t0

    def _now(self) -> float:
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = now
        return _t(now - self._t0)

    def _add(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": self._now(), "type": kind, **fields})

    def on_push(
        self, src: FrameProcessor, dst: FrameProcessor, frame: Frame, direction: FrameDirection
    ) -> None:
        kind = type(frame)
        if kind in _AUDIO:
            return  # the bulk of the traffic, and nothing a summary shows
        if kind in _BOTH_WAYS and direction is FrameDirection.UPSTREAM:
            return  # the output pushes a twin upstream: count the downstream one only
        fid = frame.id
        if fid in self._seen:
            return
        self._seen.add(fid)
        self.record(frame)

    def record(self, frame: Frame) -> None:
        """Note one frame (called once per frame by ``on_push``)."""
        kind = type(frame)
        if kind is UserStartedSpeakingFrame:
            self._add("user_started_speaking")
        elif kind is UserStoppedSpeakingFrame:
            self._add("user_stopped_speaking")
        elif kind is BotStartedSpeakingFrame:
            self._add("bot_started_speaking")
        elif kind is BotStoppedSpeakingFrame:
            self._add("bot_stopped_speaking")
        elif kind is InterruptionFrame:
            self._add("interruption")
        elif kind is TranscriptionFrame:
            assert isinstance(frame, TranscriptionFrame)
            self._add("transcription", text=frame.text, confidence=_t(frame.confidence))
        elif kind is InterimTranscriptionFrame:
            pass  # interim results are noise for a summary
        elif kind is DTMFFrame:
            self._add("dtmf", digit=getattr(frame, "digit", ""))
        elif kind is LLMResponseStartFrame:
            self._reply, self._reply_t = [], self._now()
        elif kind is LLMTextFrame:
            if self._reply is not None:
                self._reply.append(getattr(frame, "text", ""))
        elif kind is LLMResponseEndFrame:
            if self._reply is not None:
                text = "".join(self._reply).strip()
                self.events.append({"t": self._reply_t, "type": "llm_reply", "text": text})
            self._reply = None
        elif kind is TTSSpeakFrame:
            self._add("bot_says", text=getattr(frame, "text", ""))
        elif kind is TTSTextFrame:
            self._add("bot_text", text=getattr(frame, "text", ""))
        elif kind is FunctionCallInProgressFrame:
            assert isinstance(frame, FunctionCallInProgressFrame)
            self._add("tool_call", name=frame.function_name, arguments=_jsonable(frame.arguments))
        elif kind is FunctionCallResultFrame:
            assert isinstance(frame, FunctionCallResultFrame)
            self._add("tool_result", name=frame.function_name, result=_jsonable(frame.result))
        elif kind is MetricsFrame:
            assert isinstance(frame, MetricsFrame)
            self.metrics.append(
                {
                    "t": self._now(),
                    "stage": frame.processor.split("#")[0],
                    "metric": frame.metric,
                    "value": _t(frame.value),
                }
            )

    def summary(self) -> dict[str, Any]:
        """Transcripts, replies, tool calls, interruptions, turns and latencies."""
        ev = self.events
        user_stops = [e["t"] for e in ev if e["type"] == "user_stopped_speaking"]
        bot_starts = [e["t"] for e in ev if e["type"] == "bot_started_speaking"]
        # Response latency: from the caller's end of speech to the bot's next first audio.
        latencies = []
        for stop in user_stops:
            nxt = next((b for b in bot_starts if b >= stop), None)
            if nxt is not None:
                latencies.append(_t(nxt - stop))
        return {
            "transcripts": [e["text"] for e in ev if e["type"] == "transcription"],
            "replies": [e["text"] for e in ev if e["type"] in ("llm_reply", "bot_says")],
            "heard": " ".join(e["text"] for e in ev if e["type"] == "bot_text").strip(),
            "tool_calls": [
                {"name": e["name"], "arguments": e["arguments"]}
                for e in ev
                if e["type"] == "tool_call"
            ],
            "interruptions": [e["t"] for e in ev if e["type"] == "interruption"],
            "user_turns": len(user_stops),
            "bot_turns": len(bot_starts),
            "latencies": {"response_s": latencies},
            "events": ev,
        }


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=repr, sort_keys=True))
    except (TypeError, ValueError):
        return repr(value)


def compare_summaries(
    expected: Any, actual: Any, *, tolerance_s: float = 0.002, path: str = "$"
) -> list[str]:
    """Differences between two summaries (numbers equal within ``tolerance_s``), as messages."""
    diffs: list[str] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                diffs.append(f"{path}.{key}: missing (expected {_short(expected[key])})")
            elif key not in expected:
                diffs.append(f"{path}.{key}: unexpected {_short(actual[key])}")
            else:
                diffs += compare_summaries(
                    expected[key], actual[key], tolerance_s=tolerance_s, path=f"{path}.{key}"
                )
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            diffs.append(f"{path}: {len(actual)} items, expected {len(expected)}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            diffs += compare_summaries(e, a, tolerance_s=tolerance_s, path=f"{path}[{i}]")
    elif (
        isinstance(expected, int | float)
        and isinstance(actual, int | float)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        if not math.isclose(expected, actual, abs_tol=tolerance_s):
            diffs.append(f"{path}: {actual!r}, expected {expected!r}")
    elif expected != actual:
        diffs.append(f"{path}: {_short(actual)}, expected {_short(expected)}")
    return diffs


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."
