"""Transport base classes: one call's input and output processors, and the pair that links them.

A wire integration (websocket, file, test) builds a ``Transport`` around its ``WireSink``::

    transport = Transport(sink, TransportParams(audio_in=fmt, audio_out=fmt), batched_vad=vad)
    pipeline = Pipeline([transport.input(), stt, transport.guard(), user_agg, llm, tts,
                         transport.output(), assistant_agg])
    task = PipelineTask(pipeline, params=transport.params.task_params(metadata))
    ...
    for event in serializer.parse(message):
        await transport.handle_wire_event(event)   # audio, DTMF, marks, stop

and calls ``await transport.on_wire_closed()`` when the socket goes away.
"""

from __future__ import annotations

from typing import Any, ClassVar

from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.policy.guard import InterruptionGuard
from voxpipe.processors.vad.analyzer import VADAnalyzer
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.input import BaseInputTransport
from voxpipe.transports.output import BaseOutputTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import (
    WireAudio,
    WireCleared,
    WireConnected,
    WireDTMF,
    WireEvent,
    WireMark,
    WireSink,
    WireStart,
    WireStop,
)

__all__ = ["BaseInputTransport", "BaseOutputTransport", "Transport", "TransportParams"]


class Transport:
    """One call's transport: ``input()`` heads the pipeline, ``output()`` follows the TTS.

    Subclasses pick their processor classes with ``input_class``/``output_class``. The wire
    side feeds it with ``handle_wire_event`` (or ``push_wire_audio``/``push_dtmf``/
    ``mark_played`` directly) and reports a closed connection with ``on_wire_closed``.
    """

    input_class: ClassVar[type[BaseInputTransport]] = BaseInputTransport
    output_class: ClassVar[type[BaseOutputTransport]] = BaseOutputTransport

    def __init__(
        self,
        sink: WireSink | None = None,
        params: TransportParams | None = None,
        *,
        vad: VADAnalyzer | None = None,
        batched_vad: BatchedVAD | None = None,
        name: str = "transport",
    ) -> None:
        self.params = params if params is not None else TransportParams()
        self.name = name
        self._input = self._make_input(vad=vad, batched_vad=batched_vad)
        self._output = self._make_output(sink)
        self._input.pair(self._output)

    def _make_input(
        self, *, vad: VADAnalyzer | None, batched_vad: BatchedVAD | None
    ) -> BaseInputTransport:
        return self.input_class(
            self.params, vad=vad, batched_vad=batched_vad, name=f"{self.name}.input"
        )

    def _make_output(self, sink: WireSink | None) -> BaseOutputTransport:
        return self.output_class(sink, self.params, name=f"{self.name}.output")

    def input(self) -> BaseInputTransport:
        """The input processor (first in the pipeline)."""
        return self._input

    def output(self) -> BaseOutputTransport:
        """The output processor (after the TTS, before the assistant aggregator)."""
        return self._output

    def guard(self) -> InterruptionGuard:
        """A words guard using this transport's guard settings, to place right after STT."""
        return InterruptionGuard(self.params.guard, name=f"{self.name}.guard")

    def task_params(self, metadata: dict[str, Any] | None = None, **kwargs: Any) -> TaskParams:
        """TaskParams matching the wire (rates, encodings in the metadata)."""
        return self.params.task_params(metadata, **kwargs)

    @property
    def sink(self) -> WireSink | None:
        return self._output.sink

    def set_sink(self, sink: WireSink) -> None:
        """Attach the wire when it was not known at construction (before the call starts)."""
        self._output.set_sink(sink)

    # ------------------------------------------------------------------ the wire side

    async def push_wire_audio(self, audio: bytes) -> None:
        """Caller audio in the wire's format."""
        await self._input.push_wire_audio(audio)

    async def push_dtmf(self, digit: str) -> None:
        """A keypad digit from the caller."""
        await self._input.push_dtmf(digit)

    def mark_played(self, name: str) -> None:
        """The wire echoed a mark."""
        self._output.mark_played(name)

    async def on_wire_closed(self, reason: str = "caller hung up") -> None:
        """The connection is gone: stop output, end the call gracefully and boundedly."""
        await self._input.on_wire_closed(reason)

    async def handle_wire_event(self, event: WireEvent) -> None:
        """Dispatch one parsed wire event (``WireStart``/``WireConnected`` are the caller's to use)."""
        kind = type(event)
        if kind is WireAudio:
            assert isinstance(event, WireAudio)
            await self._input.push_wire_audio(event.audio)
        elif kind is WireMark:
            assert isinstance(event, WireMark)
            self._output.mark_played(event.name)
        elif kind is WireDTMF:
            assert isinstance(event, WireDTMF)
            await self._input.push_dtmf(event.digit)
        elif kind is WireStop:
            await self._input.on_wire_closed("caller hung up")
        elif kind in (WireCleared, WireConnected, WireStart):
            pass
        else:
            raise TypeError(f"unknown wire event {event!r}")
