"""WebRTC transport (aiortc): a browser's microphone in, bot audio out, JSON events on a data channel.

One ``WebRTCTransport`` per call owns an ``RTCPeerConnection``. The caller's audio track is
decoded by aiortc (Opus, 48 kHz), mixed to mono and resampled to ``params.audio_in`` (PCM16,
16 kHz by default) before it enters the pipeline like any wire's audio. Bot audio goes out
through ``WebRTCAudioTrack``, the call's ``WireSink``: ``send_audio`` appends PCM16 to a
buffer that ``recv()`` hands to aiortc's encoder in 20 ms frames paced on real time (silence
when there is nothing to say, so the RTP stream never stalls). A browser has no mark echo,
so marks are echoed locally once ``recv()`` has handed out the audio before them: the played
position is what actually left for the network. ``send_clear`` drops the buffer.

Events for the page (transcripts, bot text as it is heard, speaking on/off, and any
``TransportMessageFrame``) go as JSON text on the ``events`` data channel the page opens.

ICE uses only the servers it is given (``ice_servers``; none by default), so nothing reaches
a public STUN server unless the operator configured one.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import numpy as np

try:
    from aiortc import (
        MediaStreamTrack,
        RTCConfiguration,
        RTCDataChannel,
        RTCIceServer,
        RTCPeerConnection,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import MediaStreamError
    from av import AudioFrame
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "voxpipe.transports.webrtc needs the 'webrtc' extra: pip install 'voxpipe[webrtc]'"
    ) from exc

from voxpipe.audio.chunker import Chunker
from voxpipe.audio.resample import StreamingResampler
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    TransportMessageFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.processors.vad.analyzer import VADAnalyzer
from voxpipe.processors.vad.batched import BatchedVAD
from voxpipe.transports.base import Transport
from voxpipe.transports.output import BaseOutputTransport
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wire import AudioFormat

__all__ = [
    "EVENTS_CHANNEL",
    "WebRTCAudioTrack",
    "WebRTCOutputTransport",
    "WebRTCTransport",
    "audio_frame_to_mono_pcm16",
    "ice_servers_from",
    "webrtc_params",
]

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "events"
FRAME_MS = 20
# Events queued for the page before its data channel opens; older ones are dropped beyond this.
MAX_PENDING_EVENTS = 200
# If the pacer falls this far behind real time (a stalled event loop), it resynchronises
# instead of bursting the backlog: a burst would only pile up in the browser's jitter buffer.
MAX_PACING_LAG_S = 0.2

DOWNSTREAM = FrameDirection.DOWNSTREAM


def webrtc_params(
    sample_rate_in: int = 16000, sample_rate_out: int = 16000, **kwargs: Any
) -> TransportParams:
    """TransportParams for a browser call: PCM16 mono both ways at the given rates."""
    return TransportParams(
        audio_in=AudioFormat("pcm16", sample_rate_in, 1),
        audio_out=AudioFormat("pcm16", sample_rate_out, 1),
        **kwargs,
    )


def ice_servers_from(value: Any) -> list[RTCIceServer]:
    """ICE servers from a setting: URLs (``stun:host:3478``), dicts, JSON text of either, or None.

    A dict takes ``urls`` (a string or list), and for TURN ``username`` and ``credential``.
    """
    if hasattr(value, "get_secret_value"):  # a SecretStr: TURN credentials are secrets
        value = value.get_secret_value()
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"WEBRTC_ICE_SERVERS is not valid JSON: {exc}") from None
        else:
            value = [u.strip() for u in text.split(",") if u.strip()]
    if isinstance(value, Mapping):
        value = [value]
    servers: list[RTCIceServer] = []
    for item in value:
        if isinstance(item, str):
            servers.append(RTCIceServer(urls=item))
        elif isinstance(item, Mapping) and item.get("urls"):
            servers.append(
                RTCIceServer(
                    urls=item["urls"],
                    username=item.get("username"),
                    credential=item.get("credential"),
                )
            )
        else:
            raise ValueError(
                f"bad ICE server entry {item!r}: give a URL such as 'stun:stun.example.org:3478' "
                "or an object with 'urls' (and 'username'/'credential' for TURN)"
            )
    return servers


def audio_frame_to_mono_pcm16(frame: AudioFrame) -> bytes:
    """The samples of a decoded audio frame as mono PCM16 (channels averaged)."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        samples = data.reshape(channels, -1).T
    else:
        samples = data.reshape(-1, channels)
    kind = samples.dtype.kind
    if kind == "f":
        mono = samples.mean(axis=1) * 32768.0
    elif samples.dtype.itemsize == 4:
        mono = samples.mean(axis=1) / 65536.0
    elif channels == 1:
        return np.ascontiguousarray(samples[:, 0], dtype="<i2").tobytes()
    else:
        mono = samples.astype(np.int32).mean(axis=1)
    out: bytes = np.rint(mono).clip(-32768, 32767).astype("<i2").tobytes()
    return out


class WebRTCAudioTrack(MediaStreamTrack):
    """The bot's outbound audio track, and the call's ``WireSink``.

    ``send_audio`` queues PCM16 at ``sample_rate``; aiortc's sender calls ``recv()``, which
    returns one 20 ms frame per 20 ms of real time (silence when the queue is empty).
    ``send_mark`` echoes the mark through ``on_mark`` once ``recv()`` has handed out all the
    audio queued before it; ``send_clear`` drops what was not handed out yet and echoes every
    pending mark at once, as a telephony wire would.
    """

    kind = "audio"
    supports_marks = True

    def __init__(
        self, sample_rate: int = 16000, *, on_mark: Callable[[str], None] | None = None
    ) -> None:
        super().__init__()
        self.audio_format = AudioFormat("pcm16", sample_rate, 1)
        self.on_mark = on_mark
        self._samples = sample_rate * FRAME_MS // 1000
        self._frame_bytes = 2 * self._samples
        self._silence = bytes(self._frame_bytes)
        self._time_base = fractions.Fraction(1, sample_rate)
        self._buffer = bytearray()
        self._queued = 0  # bytes ever queued (minus what clears dropped): the buffer's end
        self._played = 0  # bytes ever handed to the encoder
        self._marks: deque[tuple[int, str]] = deque()
        self._start: float | None = None
        self._pts = 0
        self.closed = False
        # Counters for tests and metrics.
        self.frames_out = 0
        self.audio_frames_out = 0  # frames that carried some bot audio
        self.underruns = 0  # frames cut short because the buffer ran dry mid-utterance

    # ------------------------------------------------------------------ WireSink

    async def send_audio(self, audio: bytes) -> None:
        if self.closed or not audio:
            return
        self._buffer += audio
        self._queued += len(audio)

    async def send_clear(self) -> None:
        self._buffer.clear()
        self._queued = self._played
        self._echo_marks(all_pending=True)

    async def send_mark(self, name: str) -> None:
        self._marks.append((self._queued, name))
        self._echo_marks()

    @property
    def buffered_seconds(self) -> float:
        """Bot audio queued but not yet handed to the encoder."""
        return len(self._buffer) / (2 * self.audio_format.sample_rate)

    def _echo_marks(self, *, all_pending: bool = False) -> None:
        marks = self._marks
        while marks and (all_pending or marks[0][0] <= self._played):
            _, name = marks.popleft()
            if self.on_mark is not None:
                try:
                    self.on_mark(name)
                except Exception:  # a bug there must not stop the audio
                    logger.exception("mark echo handler failed for %r", name)

    # ------------------------------------------------------------------ aiortc side

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        rate = self.audio_format.sample_rate
        if self._start is None:
            self._start = loop.time()
        else:
            due = self._start + self._pts / rate
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_PACING_LAG_S:
                self._start = loop.time() - self._pts / rate
        size = self._frame_bytes
        buf = self._buffer
        if buf:
            chunk = bytes(buf[:size])
            del buf[:size]
            self._played += len(chunk)
            self.audio_frames_out += 1
            if len(chunk) < size:
                if buf or self._played < self._queued:
                    self.underruns += 1
                chunk += self._silence[: size - len(chunk)]
            self._echo_marks()
        else:
            chunk = self._silence
        frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(chunk)
        frame.sample_rate = rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self._samples
        self.frames_out += 1
        return frame

    def stop(self) -> None:
        self.closed = True
        self._buffer.clear()
        self._marks.clear()
        super().stop()


class WebRTCOutputTransport(BaseOutputTransport):
    """The output transport of a browser call: also tells the page what is said and heard.

    Transcripts are sent to the page as soon as they pass (live captions); bot text
    (``TTSTextFrame``) and ``TransportMessageFrame``s when the output releases them, that is
    once the audio before them has played; speaking on/off as they happen.
    """

    def __init__(
        self,
        sink: Any = None,
        params: TransportParams | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(sink, params, name=name)
        self.send_event: Callable[[dict[str, Any]], None] | None = None

    def _emit(self, message: dict[str, Any]) -> None:
        if self.send_event is not None:
            self.send_event(message)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWNSTREAM and isinstance(frame, TranscriptionFrame):
            self._emit(
                {
                    "type": "user-transcript",
                    "text": frame.text,
                    "final": not isinstance(frame, InterimTranscriptionFrame),
                }
            )
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = DOWNSTREAM) -> None:
        if direction is DOWNSTREAM:
            event = _page_event(frame)
            if event is not None:
                self._emit(event)
        await super().push_frame(frame, direction)


_SPEAKING_EVENTS: dict[type[Frame], str] = {
    UserStartedSpeakingFrame: "user-started-speaking",
    UserStoppedSpeakingFrame: "user-stopped-speaking",
    BotStartedSpeakingFrame: "bot-started-speaking",
    BotStoppedSpeakingFrame: "bot-stopped-speaking",
}


def _page_event(frame: Frame) -> dict[str, Any] | None:
    kind = type(frame)
    name = _SPEAKING_EVENTS.get(kind)
    if name is not None:
        return {"type": name}
    if kind is TTSTextFrame:
        return {"type": "bot-text", "text": frame.text}  # type: ignore[attr-defined]
    if kind is TransportMessageFrame:
        return dict(frame.message)  # type: ignore[attr-defined]
    return None


class WebRTCTransport(Transport):
    """One browser call over WebRTC: the peer connection, its audio tracks and the events channel.

    ``answer = await transport.accept_offer(sdp, "offer")`` sets up the connection (the
    browser's audio track, the bot's track, the data channel) and returns the SDP answer.
    Caller audio is read from the moment the track arrives but enters the pipeline only
    once the call has started. The call ends when the browser hangs up or the connection
    fails (``on_wire_closed``), or when it is not connected within ``connect_timeout_s``;
    ``await transport.close()`` releases the connection when the call is over.
    """

    output_class = WebRTCOutputTransport

    def __init__(
        self,
        params: TransportParams | None = None,
        *,
        ice_servers: Iterable[RTCIceServer] = (),
        vad: VADAnalyzer | None = None,
        batched_vad: BatchedVAD | None = None,
        connect_timeout_s: float = 20.0,
        name: str = "webrtc",
        call_id: str = "",
    ) -> None:
        params = params if params is not None else webrtc_params()
        for label, fmt in (("audio_in", params.audio_in), ("audio_out", params.audio_out)):
            if fmt.encoding != "pcm16":
                raise ValueError(
                    f"WebRTC carries PCM16 to and from aiortc's codecs, but {label} is "
                    f"{fmt.encoding!r}: use webrtc_params() or AudioFormat('pcm16', rate)"
                )
        self.track = WebRTCAudioTrack(params.audio_out.sample_rate)
        super().__init__(self.track, params, vad=vad, batched_vad=batched_vad, name=name)
        output = self.output()
        assert isinstance(output, WebRTCOutputTransport)
        self.track.on_mark = output.mark_played
        output.send_event = self.send_event
        self.call_id = call_id or name
        self.log = logging.LoggerAdapter(logger, {"call_id": self.call_id})
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self.connect_timeout_s = connect_timeout_s
        self.channel: RTCDataChannel | None = None
        self._pending_events: deque[str] = deque(maxlen=MAX_PENDING_EVENTS)
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.closed_reason = ""
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self.connected = asyncio.Event()
        self.wire_closed = asyncio.Event()  # set once the browser is gone (or we closed)
        # Counters for tests and metrics.
        self.frames_in = 0
        self.events_sent = 0
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # ------------------------------------------------------------------ signalling

    async def accept_offer(self, sdp: str, type_: str = "offer") -> RTCSessionDescription:
        """Take the browser's SDP offer and return the answer (ICE candidates included)."""
        if type_ != "offer":
            raise ValueError(f"expected an SDP offer, got type {type_!r}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            raise ValueError(
                "the offer has no audio: the page must add a microphone track before the offer"
            )
        self.pc.addTrack(self.track)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self._watchdog = asyncio.get_running_loop().call_later(
            self.connect_timeout_s, self._connect_expired
        )
        local = self.pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    # ------------------------------------------------------------------ connection events

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            self.log.info("[%s] ignoring a %s track from the browser", self.call_id, track.kind)
            return
        if self._reader is not None:
            self.log.warning("[%s] a second audio track from the browser is ignored", self.call_id)
            return
        self._reader = asyncio.get_running_loop().create_task(
            self._read_audio(track), name=f"{self.name}:read-audio"
        )

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL:
            self.log.info("[%s] ignoring data channel %r", self.call_id, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_page_message)
        if channel.readyState == "open":
            self._flush_events()
        else:
            channel.on("open", self._flush_events)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.log.debug("[%s] connection %s", self.call_id, state)
        if state == "connected":
            self.connected.set()
            self._cancel_watchdog()
        elif state in ("failed", "closed"):
            self._wire_gone(f"connection {state}")

    def _connect_expired(self) -> None:
        self._watchdog = None
        if not self.connected.is_set():
            self._wire_gone(f"browser did not connect within {self.connect_timeout_s:.0f} s")

    def _cancel_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _wire_gone(self, reason: str) -> None:
        if self.closed_reason:
            return
        self.closed_reason = reason
        self.wire_closed.set()
        self.log.info("[%s] %s", self.call_id, reason)
        self._spawn(self.on_wire_closed(reason))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Event handlers are plain callbacks: their async work runs in tasks kept referenced.
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        """Decoded browser audio -> mono PCM16 at the pipeline's rate, 20 ms chunks, into the call."""
        fmt = self.params.audio_in
        chunker = Chunker(fmt.sample_rate * FRAME_MS // 1000 * 2)
        resampler: StreamingResampler | None = None
        loop = asyncio.get_running_loop()
        inp = self.input()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._wire_gone("browser stopped sending audio")
                return
            self.last_activity = loop.time()
            self.frames_in += 1
            if not inp.started or not isinstance(frame, AudioFrame):
                continue  # before the call starts (the bot is being built) nothing listens
            if resampler is None or resampler.in_rate != frame.sample_rate:
                resampler = StreamingResampler(frame.sample_rate, fmt.sample_rate)
            pcm = resampler.process(audio_frame_to_mono_pcm16(frame))
            for chunk in chunker.push(pcm):
                await inp.push_wire_audio(chunk)

    # ------------------------------------------------------------------ events for the page

    def send_event(self, message: dict[str, Any]) -> None:
        """Send a JSON event to the page (queued until its data channel opens)."""
        try:
            text = json.dumps(message)
        except (TypeError, ValueError) as exc:
            self.log.warning("[%s] event for the page is not JSON: %s", self.call_id, exc)
            return
        channel = self.channel
        if channel is None or channel.readyState != "open":
            self._pending_events.append(text)
            return
        self._send_text(channel, text)

    def _flush_events(self) -> None:
        channel = self.channel
        while channel is not None and self._pending_events and channel.readyState == "open":
            self._send_text(channel, self._pending_events.popleft())

    def _send_text(self, channel: RTCDataChannel, text: str) -> None:
        try:
            channel.send(text)
            self.events_sent += 1
        except Exception as exc:  # closing underneath us: the call is ending anyway
            self.log.debug("[%s] event not sent: %s", self.call_id, exc)

    def _on_page_message(self, message: str | bytes) -> None:
        """Events from the page: only keypad digits for now, the rest is ignored."""
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            self.log.info("[%s] non-JSON message from the page ignored", self.call_id)
            return
        if isinstance(data, dict) and data.get("type") == "dtmf":
            digit = str(data.get("digit", ""))
            if len(digit) == 1 and digit in "0123456789*#":
                self._spawn(self.push_dtmf(digit))

    # ------------------------------------------------------------------ ending

    async def close(self, reason: str = "call ended") -> None:
        """Tell the page the call is over and close the peer connection (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._cancel_watchdog()
        self.send_event({"type": "call-ended", "reason": reason})
        self.closed_reason = self.closed_reason or reason
        self.wire_closed.set()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self.track.stop()
        await self.pc.close()
