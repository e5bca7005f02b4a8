"""Telephony over a websocket: a WireSink that writes a serializer's messages, and the per-call
receive loop that polices inbound messages and hands their events to the transports.

The websocket is an ASGI/Starlette ``WebSocket`` (``receive()``, ``send_text``, ``send_bytes``,
``close``). Bad input never ends the server or another call: a malformed, unknown or
out-of-order message is logged with the call id and skipped; a call that keeps sending them,
floods, or sends nothing is closed with a close reason that says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from voxpipe.logs import security_event
from voxpipe.transports.wire import (
    AudioFormat,
    Serializer,
    WireAudio,
    WireCleared,
    WireConnected,
    WireDTMF,
    WireEvent,
    WireMark,
    WireProtocolError,
    WireStart,
    WireStop,
)

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "WebSocketWireSink",
    "WireClosed",
    "WireLimits",
    "WireReceiver",
    "WireRefused",
]

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # refused: bad token, flood, too many malformed messages
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


class ASGIWebSocket(Protocol):
    """The part of Starlette's WebSocket the telephony transports use."""

    async def receive(self) -> Any: ...

    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(slots=True)
class WireLimits:
    """What one call's websocket may send before it is refused.

    Messages beyond ``burst_messages`` plus ``rate_per_s`` a second are a flood (a phone line
    sends 50 a second; a simulator blasting a WAV file as fast as possible stays within the
    burst). ``max_bad_messages`` malformed or out-of-order messages are tolerated (each is
    logged and skipped), then the call is closed.
    """

    max_message_bytes: int = 64 * 1024
    max_bad_messages: int = 50
    rate_per_s: float = 1000.0
    burst_messages: int = 6000
    start_timeout_s: float = 10.0
    # Caller audio, in audio seconds, may arrive at most ``audio_rate`` times as fast as the
    # wall clock since the start, plus ``audio_burst_s`` (a carrier catching up after a network
    # stall; a test caller sending its first utterance at once): providers bill audio seconds,
    # and a stream sending 20 minutes in 20 seconds is abuse, not a phone call.
    audio_rate: float = 1.5
    audio_burst_s: float = 5.0


class WireRefused(Exception):
    """The stream must be closed: ``code`` and ``reason`` go in the close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WireClosed(Exception):
    """The far end went away (disconnect) before the stream started."""


class WireStats(Protocol):
    """Counters a receiver and sink bump (voxpipe.server.metrics provides them)."""

    def wire_message(self, carrier: str, inbound: bool) -> None: ...

    def wire_error(self, carrier: str) -> None: ...


class WebSocketWireSink:
    """WireSink that sends one call's audio, flushes and marks through a serializer.

    A send on a socket that has gone raises ``ConnectionError`` (the output transport then
    stops sending); the receive loop reports how the call ended.
    """

    supports_marks = True

    def __init__(
        self,
        websocket: ASGIWebSocket,
        serializer: Serializer,
        *,
        on_send: Callable[[], None] | None = None,
        label: str = "",
    ) -> None:
        self._ws = websocket
        self._serializer = serializer
        self._on_send = on_send
        self.label = label
        self._frame_exact = bool(getattr(serializer, "frame_exact", False))
        self.closed = False
        self.sent_audio_bytes = 0
        self.sent_messages = 0

    @property
    def audio_format(self) -> AudioFormat:
        return self._serializer.audio_format

    async def _send(self, message: str | bytes) -> None:
        if self.closed:
            raise ConnectionError("the websocket is closed")
        try:
            if isinstance(message, str):
                await self._ws.send_text(message)
            else:
                await self._ws.send_bytes(message)
        except Exception as exc:  # closed underneath us (disconnect, close sent): call is over
            self.closed = True
            logger.debug("send on a closed websocket: %s", exc, extra={"call_id": self.label})
            raise ConnectionError(f"the websocket is gone: {exc}") from exc
        self.sent_messages += 1
        if self._on_send is not None:
            self._on_send()

    async def send_audio(self, audio: bytes) -> None:
        if not audio:
            return
        self.sent_audio_bytes += len(audio)
        if self._frame_exact:
            # The wire plays whole 20 ms frames only: one message per frame.
            step = self._serializer.audio_format.bytes_per_20ms
            for i in range(0, len(audio), step):
                await self._send(self._serializer.audio(audio[i : i + step]))
            return
        await self._send(self._serializer.audio(audio))

    async def send_clear(self) -> None:
        await self._send(self._serializer.clear())

    async def send_mark(self, name: str) -> None:
        await self._send(self._serializer.mark(name))

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the websocket (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            await self._ws.close(code=code, reason=reason[:120])
        except Exception as exc:
            logger.debug("close of a gone websocket: %s", exc, extra={"call_id": self.label})


class WireTarget(Protocol):
    """Where a started call's events go: a ``voxpipe.transports.base.Transport``."""

    async def handle_wire_event(self, event: WireEvent) -> None: ...

    async def on_wire_closed(self, reason: str = ...) -> None: ...


class WireReceiver:
    """Reads one call's websocket: waits for the start, then hands events on until the end.

    Every inbound message passes the size, rate and sanity checks here; the serializer turns
    it into events. ``label`` (the call id, once known) is in every log line.
    """

    def __init__(
        self,
        websocket: ASGIWebSocket,
        serializer: Serializer,
        *,
        carrier: str,
        limits: WireLimits | None = None,
        stats: WireStats | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._ws = websocket
        self.serializer = serializer
        self.carrier = carrier
        self.limits = limits or WireLimits()
        self._stats = stats
        # The loop's own clock, bound once: the receiver lives on the loop that built it (its
        # socket belongs to that loop), and get_running_loop costs a getpid() call on 3.11.
        self._clock = clock or asyncio.get_running_loop().time
        self.label = "-"
        self.bad_messages = 0
        self.messages = 0
        self.last_message_at = self._clock()
        self._tokens = float(self.limits.burst_messages)
        self._tokens_at = self.last_message_at
        self.start: WireStart | None = None
        self.started_at = self.last_message_at
        self.audio_seconds = 0.0  # caller audio received since the start
        self.stopped = False
        self.end_reason = ""
        self._pending: list[WireEvent] = []
        self._rate_fmt: AudioFormat | None = None
        self._bytes_per_s = 0

    @property
    def client(self) -> str | None:
        """The peer's address (for log lines), when the websocket knows it."""
        return getattr(getattr(self._ws, "client", None), "host", None)

    # ------------------------------------------------------------------ policing

    def _bad(self, why: str) -> None:
        self.bad_messages += 1
        if self._stats is not None:
            self._stats.wire_error(self.carrier)
        if self.bad_messages <= 5 or self.bad_messages % 100 == 0:
            logger.warning(
                "%s: skipped bad message #%d: %s",
                self.carrier,
                self.bad_messages,
                why,
                extra={"call_id": self.label},
            )
        if self.bad_messages > self.limits.max_bad_messages:
            raise WireRefused(
                CLOSE_POLICY,
                f"too many malformed or out-of-order messages ({self.bad_messages})",
            )

    def _admit(self) -> None:
        """Token bucket over message arrivals: a flood closes the stream."""
        now = self._clock()
        self.last_message_at = now
        lim = self.limits
        self._tokens = min(
            float(lim.burst_messages), self._tokens + (now - self._tokens_at) * lim.rate_per_s
        )
        self._tokens_at = now
        self._tokens -= 1.0
        if self._tokens < 0:
            raise WireRefused(
                CLOSE_POLICY,
                f"message flood: more than {lim.rate_per_s:.0f} messages/s "
                f"(burst {lim.burst_messages})",
            )

    async def _next_events(self) -> list[WireEvent] | None:
        """Events of the next acceptable message; None when the socket is gone."""
        while True:
            msg = await self._ws.receive()
            kind = msg.get("type")
            if kind == "websocket.disconnect":
                self.end_reason = self.end_reason or f"disconnected (code {msg.get('code')})"
                return None
            if kind != "websocket.receive":
                continue
            self.messages += 1
            if self._stats is not None:
                self._stats.wire_message(self.carrier, True)
            self._admit()
            data: str | bytes | None = msg.get("text")
            if data is None:
                data = msg.get("bytes")
            if data is None:
                self._bad("message with neither text nor bytes")
                continue
            if len(data) > self.limits.max_message_bytes:
                self._bad(f"message of {len(data)} bytes exceeds {self.limits.max_message_bytes}")
                continue
            try:
                return self.serializer.parse(data)
            except WireProtocolError as exc:
                self._bad(str(exc))
            except Exception as exc:  # a serializer bug must not take the call down
                logger.exception(
                    "%s serializer failed", self.carrier, extra={"call_id": self.label}
                )
                self._bad(f"serializer error {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ phases

    async def wait_for_start(self) -> WireStart:
        """Read until the stream's start; raises WireRefused on timeout, WireClosed if gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.start_timeout_s
        while True:
            # A deadline checked around each read, not a cancelling timeout: the handful of
            # messages before a start are worth a task each, and nothing races a cancel.
            reading = loop.create_task(self._next_events())
            await asyncio.wait({reading}, timeout=max(0.0, deadline - loop.time()))
            if not reading.done():
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                raise WireRefused(
                    CLOSE_POLICY, f"no start message within {self.limits.start_timeout_s:g} s"
                )
            events = reading.result()
            if events is None:
                raise WireClosed(self.end_reason)
            for i, event in enumerate(events):
                if isinstance(event, WireStart):
                    self.start = event
                    self.started_at = self._clock()
                    self.label = event.call_id or event.stream_id or "-"
                    # Events after the start in the same message (none today) are kept.
                    self._pending = events[i + 1 :]
                    return event
                if isinstance(event, WireConnected):
                    continue
                if isinstance(event, WireStop):
                    self.end_reason = "stopped before start"
                    raise WireClosed(self.end_reason)
                self._bad(f"{type(event).__name__} before the stream started")

    async def run(self, target: WireTarget) -> str:
        """Hand events to ``target`` until stop, disconnect or refusal; returns why it ended.

        However the stream ends, ``target.on_wire_closed`` is called once with the reason.
        """
        try:
            pending, self._pending = self._pending, []
            for event in pending:
                await self._dispatch(event, target)
            while not self.stopped:
                events = await self._next_events()
                if events is None:
                    break
                for event in events:
                    await self._dispatch(event, target)
                    if self.stopped:
                        break
        except WireRefused as exc:
            self.end_reason = exc.reason
            await target.on_wire_closed(f"stream refused: {exc.reason}")
            raise
        except BaseException:
            self.end_reason = self.end_reason or "receive loop stopped"
            await asyncio.shield(target.on_wire_closed(self.end_reason))
            raise
        await target.on_wire_closed(self.end_reason or "disconnected")
        return self.end_reason

    def _admit_audio(self, audio: bytes) -> None:
        """Audio seconds against the wall clock: faster than ``audio_rate`` closes the stream."""
        fmt = self.start.audio_format if self.start is not None else self.serializer.audio_format
        if fmt is not self._rate_fmt:  # the format is fixed at the start: work it out once
            self._rate_fmt = fmt
            self._bytes_per_s = fmt.bytes_per_20ms * 50
        self.audio_seconds += len(audio) / self._bytes_per_s
        lim = self.limits
        elapsed = self._clock() - self.started_at
        if self.audio_seconds <= lim.audio_burst_s + lim.audio_rate * elapsed:
            return
        reason = (
            f"audio faster than {lim.audio_rate:g}x real time: {self.audio_seconds:.1f} s of "
            f"audio in {elapsed:.1f} s"
        )
        security_event(
            "audio_rate_exceeded",
            self.client,
            f"{self.carrier} stream closed: {reason}",
            call_id=self.label,
            carrier=self.carrier,
        )
        raise WireRefused(CLOSE_POLICY, reason)

    async def _dispatch(self, event: WireEvent, target: WireTarget) -> None:
        kind = type(event)
        if kind is WireAudio:
            self._admit_audio(event.audio)  # type: ignore[attr-defined]
            await target.handle_wire_event(event)
        elif kind is WireMark or kind is WireDTMF or kind is WireCleared:
            await target.handle_wire_event(event)
        elif kind is WireStop:
            self.stopped = True
            self.end_reason = "caller hung up (stop)"
        elif kind is WireStart:
            self._bad("a second start message")
        elif kind is WireConnected:
            self._bad("connected after the stream started")
        else:
            self._bad(f"unhandled event {kind.__name__}")
