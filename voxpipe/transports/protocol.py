"""The transport contract a bot sees as ``call.transport``, whatever carried the call.

Every carrier (Twilio, Telnyx, Vonage, WebRTC, SIP, a WAV file, a replay, a test) gives the bot
an object with this shape; ``voxpipe.transports.base.Transport`` is the implementation they all
share, and a custom wire may bring its own as long as it fits::

    async def bot(call: Call) -> Pipeline:
        return Pipeline([call.transport.input(), MyProcessor(), call.transport.output()])
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from voxpipe.processors.policy.guard import InterruptionGuard
from voxpipe.transports.input import BaseInputTransport
from voxpipe.transports.output import BaseOutputTransport
from voxpipe.transports.params import TransportParams

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """One call's transport as a bot uses it: the processors that start and end its pipeline."""

    @property
    def params(self) -> TransportParams:
        """The wire's audio formats, VAD and interruption settings."""
        ...

    def input(self) -> BaseInputTransport:
        """The input processor: caller audio in, VAD, barge-in (first in the pipeline)."""
        ...

    def output(self) -> BaseOutputTransport:
        """The output processor: paced audio out, flushed on barge-in (after the TTS)."""
        ...

    def guard(self) -> InterruptionGuard:
        """A words guard with this transport's guard settings, to place right after the STT."""
        ...
