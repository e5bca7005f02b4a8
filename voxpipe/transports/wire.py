"""The seam between transports and wire formats.

An output transport writes to a ``WireSink`` (one call's connection to the caller); a
telephony serializer turns wire messages into ``WireEvent``s for the input side and
builds the outbound messages. Transports know nothing of JSON; serializers nothing of frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class WireProtocolError(ValueError):
    """A message from the far end that breaks its protocol (logged and skipped, never fatal)."""


@dataclass(slots=True)
class AudioFormat:
    """How audio travels on a wire: ``mulaw`` or ``pcm16``, sample rate, channels."""

    encoding: str = "mulaw"
    sample_rate: int = 8000
    channels: int = 1

    @property
    def bytes_per_20ms(self) -> int:
        width = 1 if self.encoding == "mulaw" else 2
        return self.sample_rate // 50 * width * self.channels


@dataclass(slots=True)
class WireEvent:
    """Base of what a serializer parses out of one inbound message."""


@dataclass(slots=True)
class WireConnected(WireEvent):
    """The far end opened the stream (before any call metadata)."""


@dataclass(slots=True)
class WireStart(WireEvent):
    """The stream started: call ids, caller metadata and the audio format."""

    stream_id: str = ""
    call_id: str = ""
    caller: str = ""
    called: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    audio_format: AudioFormat = field(default_factory=AudioFormat)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class WireAudio(WireEvent):
    """Caller audio in the wire's format."""

    audio: bytes


@dataclass(slots=True)
class WireDTMF(WireEvent):
    """A keypad digit."""

    digit: str


@dataclass(slots=True)
class WireMark(WireEvent):
    """A mark echoed back: the audio sent before it has played (or was cleared)."""

    name: str


@dataclass(slots=True)
class WireCleared(WireEvent):
    """The far end confirmed a clear (Vonage)."""


@dataclass(slots=True)
class WireStop(WireEvent):
    """The far end ended the stream."""


@runtime_checkable
class WireSink(Protocol):
    """Where an output transport sends audio, flushes and marks for one call."""

    supports_marks: bool

    @property
    def audio_format(self) -> AudioFormat:
        """The codec and rate the wire carries."""
        ...

    async def send_audio(self, audio: bytes) -> None:
        """Send caller-bound audio already in ``audio_format``."""
        ...

    async def send_clear(self) -> None:
        """Discard audio the far end has buffered but not played (barge-in)."""
        ...

    async def send_mark(self, name: str) -> None:
        """Ask the far end to echo ``name`` once everything sent before it has played."""
        ...


class Serializer(Protocol):
    """One telephony wire format: parse inbound messages, build outbound ones."""

    audio_format: AudioFormat

    def parse(self, message: str | bytes) -> list[WireEvent]:
        """Events in one inbound message; raises WireProtocolError on a malformed one."""
        ...

    def audio(self, audio: bytes) -> str | bytes:
        """The outbound message carrying ``audio`` (in ``audio_format``)."""
        ...

    def clear(self) -> str | bytes:
        """The outbound flush message."""
        ...

    def mark(self, name: str) -> str | bytes:
        """The outbound mark message."""
        ...
