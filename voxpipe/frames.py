"""Every frame type voxpipe moves through a pipeline, and nothing else.

Three kinds, and the kind decides delivery:

* ``SystemFrame`` is urgent: it never waits behind queued frames.
* ``DataFrame`` is ordered content (audio, transcriptions, text, LLM messages).
* ``ControlFrame`` is ordered control (end, response start/end, TTS start/stop).

Every frame carries a process-wide monotonic ``id`` and a ``timestamp`` read from
the clock of the pipeline task that created it (virtual time under a virtual clock).
"""

from __future__ import annotations

import itertools
from dataclasses import KW_ONLY, dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from voxpipe.pipelines.clock import loop_time


class FrameDirection(IntEnum):
    """Which way a frame travels: DOWNSTREAM is source to sink, UPSTREAM sink to source."""

    DOWNSTREAM = 1
    UPSTREAM = 2


_next_id = itertools.count(1).__next__


# The running loop's time is the call clock: monotonic time on a real loop, simulated time
# under a VirtualClock. No constructor needs a clock argument for that.
_now = loop_time


@dataclass(slots=True)
class Frame:
    """Base of every frame: a monotonic id and a timestamp in seconds on the pipeline clock."""

    _: KW_ONLY
    id: int = field(default_factory=_next_id, compare=False)
    timestamp: float = field(default_factory=_now, compare=False)
    # Lifecycle frames get extra handling in FrameProcessor; ordinary frames skip it in one check.
    lifecycle: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return f"{type(self).__name__}#{self.id}"


@dataclass(slots=True)
class SystemFrame(Frame):
    """Urgent frame: delivered at once, overtaking queued data and control frames."""


@dataclass(slots=True)
class DataFrame(Frame):
    """Ordered content frame."""


@dataclass(slots=True)
class ControlFrame(Frame):
    """Ordered control frame."""


# ---------------------------------------------------------------------------- lifecycle


@dataclass(slots=True)
class StartFrame(SystemFrame):
    """First frame of every call: carries the audio formats and call-wide switches."""

    audio_in_sample_rate: int = 16000
    audio_out_sample_rate: int = 16000
    allow_interruptions: bool = True
    enable_metrics: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    lifecycle: ClassVar[bool] = True


@dataclass(slots=True)
class EndFrame(ControlFrame):
    """Graceful end: processors drain what they hold, then the pipeline stops."""

    reason: str = ""
    lifecycle: ClassVar[bool] = True


@dataclass(slots=True)
class CancelFrame(SystemFrame):
    """Immediate stop: owned tasks are cancelled and nothing drains."""

    reason: str = ""
    lifecycle: ClassVar[bool] = True


@dataclass(slots=True)
class EndTaskFrame(SystemFrame):
    """Pushed upstream by a processor (a bot hanging up) to ask the task for a graceful end."""

    reason: str = ""


@dataclass(slots=True)
class CancelTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to cancel the call now."""

    reason: str = ""


@dataclass(slots=True)
class ErrorFrame(SystemFrame):
    """An error, travelling upstream; a fatal one cancels the call."""

    error: str
    fatal: bool = False
    processor: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------------------- interruptions


@dataclass(slots=True)
class InterruptionFrame(SystemFrame):
    """The sweep: every processor drops queued output and cancels its in-flight work."""

    lifecycle: ClassVar[bool] = True


@dataclass(slots=True)
class InterruptionRequestFrame(SystemFrame):
    """Pushed upstream by any processor; the task's source turns it into the sweep."""

    reason: str = ""


@dataclass(slots=True)
class UserStartedSpeakingFrame(SystemFrame):
    """The caller started speaking (from the VAD, or emulated)."""


@dataclass(slots=True)
class UserStoppedSpeakingFrame(SystemFrame):
    """The caller stopped speaking."""


@dataclass(slots=True)
class BotStartedSpeakingFrame(SystemFrame):
    """The first chunk of a bot utterance reached the wire."""


@dataclass(slots=True)
class BotStoppedSpeakingFrame(SystemFrame):
    """The last chunk of a bot utterance has played (or was flushed)."""


@dataclass(slots=True)
class VADProbabilityFrame(SystemFrame):
    """Speech probability of one VAD window (emitted only when asked, for tests and tuning)."""

    probability: float
    volume: float = 0.0


@dataclass(slots=True)
class DisableInterruptionsFrame(ControlFrame):
    """From here in the output stream until ``EnableInterruptionsFrame`` the caller cannot interrupt."""

    reason: str = ""


@dataclass(slots=True)
class EnableInterruptionsFrame(ControlFrame):
    """Ends a span started by ``DisableInterruptionsFrame`` (applied once its audio has played)."""


@dataclass(slots=True)
class InterruptionsAllowedFrame(SystemFrame):
    """Pushed upstream by the output transport when a non-interruptible span starts or ends."""

    allowed: bool = True
    reason: str = ""


@dataclass(slots=True)
class SmartInterruptionsFrame(SystemFrame):
    """Pushed upstream at start by an interruption arbiter (``processors/turn/backchannel.py``).

    The input transport then leaves caller speech over the bot to the arbiter (backchannel or
    barge-in, from the words) and interrupts on its own only once that speech has lasted
    ``max_speech_secs``.
    """

    max_speech_secs: float = 0.8


@dataclass(slots=True)
class PauseBotOutputFrame(SystemFrame):
    """The output transport stops sending the bot's audio, keeping the rest to resume it.

    What was already sent plays out (the far end's short lead), so the caller's heard position
    is the end of what was sent; after ``timeout_secs`` the output resumes by itself.
    """

    reason: str = ""
    timeout_secs: float = 3.0


@dataclass(slots=True)
class ResumeBotOutputFrame(SystemFrame):
    """The output transport sends the paused audio again, from the first byte not sent."""

    reason: str = ""


@dataclass(slots=True)
class BackchannelFrame(SystemFrame):
    """Caller speech over the bot was judged a backchannel (or a noise): the bot went on.

    ``text``: the caller's words (only backchannel words, or empty for a noise);
    ``speech_secs``: from the caller's onset to the decision; ``paused``: the output had been
    asked to pause the bot's audio (it does when audio is left to send) and was asked to resume.
    """

    text: str = ""
    speech_secs: float = 0.0
    paused: bool = False


# ---------------------------------------------------------------------------- audio


@dataclass(slots=True)
class AudioFrame(DataFrame):
    """Raw audio: interleaved samples in ``encoding`` (``pcm16`` little-endian or ``mulaw``)."""

    audio: bytes = field(repr=False)
    sample_rate: int
    num_channels: int = 1
    encoding: str = "pcm16"

    @property
    def num_samples(self) -> int:
        width = 2 if self.encoding == "pcm16" else 1
        return len(self.audio) // (width * self.num_channels)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(slots=True)
class InputAudioFrame(AudioFrame):
    """Audio from the caller."""


@dataclass(slots=True)
class OutputAudioFrame(AudioFrame):
    """Audio for the caller (bot speech)."""


# ---------------------------------------------------------------------------- text


@dataclass(slots=True)
class Word:
    """One recognised word with its timing (seconds from stream start) and confidence.

    ``call_start`` / ``call_end``: the same instants on the call's (pipeline's) clock, on
    which the bot's audio is played too, filled in by the STT from the arrival of the audio
    it transcribed; None where unknown."""

    word: str
    start: float = 0.0
    end: float = 0.0
    confidence: float = 1.0
    call_start: float | None = None
    call_end: float | None = None


@dataclass(slots=True)
class TranscriptionFrame(DataFrame):
    """A final transcript of a span of caller speech."""

    text: str
    user_id: str = ""
    confidence: float = 1.0
    language: str | None = None
    words: list[Word] = field(default_factory=list)
    final: bool = True


@dataclass(slots=True)
class InterimTranscriptionFrame(TranscriptionFrame):
    """A partial transcript that may still change (shown, not sent to the LLM)."""

    final: bool = False


@dataclass(slots=True)
class TextFrame(DataFrame):
    """A piece of text."""

    text: str


@dataclass(slots=True)
class LLMTextFrame(TextFrame):
    """A text fragment streamed by the LLM."""


@dataclass(slots=True)
class TTSSpeakFrame(TextFrame):
    """Text to speak as is (greetings, fallback lines), bypassing the LLM."""


@dataclass(slots=True)
class TTSTextFrame(TextFrame):
    """Text whose audio precedes it in the stream: it passes the output once that audio played."""


@dataclass(slots=True)
class DTMFFrame(DataFrame):
    """A keypad digit pressed by the caller."""

    digit: str


# ---------------------------------------------------------------------------- LLM


@dataclass(slots=True)
class LLMMessagesFrame(DataFrame):
    """A full message list (OpenAI chat format) for the LLM to answer. ``max_messages``: the
    context window's cap on conversation messages, kept by the follow-up requests of a tool
    round too (None: no cap)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    max_messages: int | None = None


@dataclass(slots=True)
class LLMResponseStartFrame(ControlFrame):
    """The LLM began a response."""


@dataclass(slots=True)
class LLMResponseEndFrame(ControlFrame):
    """The LLM finished a response."""


@dataclass(slots=True)
class FunctionCallInProgressFrame(ControlFrame):
    """The LLM asked for a tool call that is now running."""

    tool_call_id: str
    function_name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FunctionCallResultFrame(DataFrame):
    """The result of a tool call."""

    tool_call_id: str
    function_name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    result: Any = None


# ---------------------------------------------------------------------------- TTS


@dataclass(slots=True)
class TTSStartedFrame(ControlFrame):
    """Speech synthesis of a reply started."""


@dataclass(slots=True)
class TTSStoppedFrame(ControlFrame):
    """Speech synthesis of a reply finished."""


# ---------------------------------------------------------------------------- compliance


@dataclass(slots=True)
class PauseRecordingFrame(ControlFrame):
    """Stop recording and transcription retention (e.g. while card details are spoken)."""

    reason: str = ""
    # Clock time the paused span began, when earlier than now: a card number is detected in a
    # transcript after it was spoken, so a recorder that still holds that audio silences it.
    since: float | None = None


@dataclass(slots=True)
class ResumeRecordingFrame(ControlFrame):
    """Resume recording and transcription retention."""


@dataclass(slots=True)
class RetentionConsentFrame(ControlFrame):
    """The caller's choice on keeping this call: with ``granted`` False (declined, or no answer)
    nothing of the call is stored; a recorder built to wait for consent keeps nothing before
    ``granted`` True. ``source`` says how it was decided: ``dtmf``, ``speech``, ``stored``,
    ``no_answer``, ``notice``, ``none``, or ``withdrawn`` (the caller withdrew mid-call: what was
    stored of the call is deleted)."""

    granted: bool
    source: str = ""


# ---------------------------------------------------------------------------- provider outages


@dataclass(slots=True)
class ProviderOutageFrame(SystemFrame):
    """A provider service's reachability changed: ``state`` is ``down`` (unreachable, retrying),
    ``up`` (working again after ``duration_s``) or ``gave_up`` (down longer than the grace: the
    call is being ended). ``service`` is ``stt``, ``llm`` or ``tts``; ``provider`` its vendor."""

    service: str
    provider: str
    state: str
    duration_s: float = 0.0
    reason: str = ""


# ---------------------------------------------------------------------------- escalation (issue 10)


@dataclass(slots=True)
class EscalationStartedFrame(SystemFrame):
    """A hand-over of the call to a human started: from now on no transcript of the caller
    starts an LLM reply, until an ``EscalationEndedFrame`` says the hand-over failed. A system
    frame, so that an interruption sweep never drops it."""

    reason: str = ""


@dataclass(slots=True)
class EscalationEndedFrame(SystemFrame):
    """The hand-over is over: ``transferred`` True (a person has the call; the bot stays
    quiet) or False (it failed: the bot answers the caller again). ``detail`` says why."""

    transferred: bool = False
    detail: str = ""


# ---------------------------------------------------------------------------- metrics


@dataclass(slots=True)
class MetricsFrame(SystemFrame):
    """One measurement by one processor: ``metric`` is e.g. ``ttfb`` or ``processing`` (seconds)."""

    processor: str
    metric: str
    value: float
    model: str | None = None


@dataclass(slots=True)
class TransportMessageFrame(DataFrame):
    """An application message for the transport's far end (e.g. a transcript for a browser)."""

    message: dict[str, Any]


def frame_types() -> dict[str, type[Frame]]:
    """Every frame class defined here, by class name (for serialization and replay)."""
    out: dict[str, type[Frame]] = {}
    stack: list[type[Frame]] = [Frame]
    while stack:
        cls = stack.pop()
        out[cls.__name__] = cls
        stack.extend(cls.__subclasses__())
    return out
