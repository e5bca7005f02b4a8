"""RTP media for one SIP call: aiortp's session (jitter buffer, PLC, RFC 4733) behind a paced sink.

Inbound: aiortp reorders packets in its jitter buffer, conceals losses, decodes G.711/G.722 to
16-bit PCM and reports RFC 4733 digits; ``SipMedia`` hands both to the call's ``Transport``.
Outbound: ``RtpSink`` is the call's ``WireSink``; it cuts bot audio into codec frames and a
pacer sends one frame per ptime, so a flush (``send_clear``) drops everything queued at once
and a mark is reported played exactly when the audio before it has left.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortp import PortAllocator, RTPSession, get_codec
from aiosipua import SdpMessage, SdpNegotiationError, negotiate_sdp, parse_sdp

from voxpipe.transports.wire import AudioFormat

__all__ = ["GuardedRTPSession", "RtpSink", "SdpNegotiationError", "SipMedia", "SUPPORTED_PTS"]

logger = logging.getLogger(__name__)


def _codecs() -> list[int]:
    """Payload types we answer (the offerer's order picks): G.722 when its codec is installed."""
    try:
        get_codec(9)  # aiortp[g722] (the public-domain libg722 binding)
    except ImportError:
        return [0, 8]
    return [9, 0, 8]


SUPPORTED_PTS = _codecs()  # G722, PCMU, PCMA
_HELD = ("sendonly", "inactive")


class GuardedRTPSession(RTPSession):
    """An RTPSession that latches to the first media source and drops packets from others.

    aiortp's symmetric RTP follows any source, so a stranger who guesses the port could take
    the call's audio; here the first source wins until a re-INVITE re-opens the latch.
    """

    label: str = ""
    last_rx: float = 0.0
    _latched: tuple[str, int] | None = None
    _stray: set[tuple[str, int]]

    def _handle_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._latched is None:
            self._latched = addr
        elif addr != self._latched:
            stray = self.__dict__.setdefault("_stray", set())
            if addr not in stray and len(stray) < 16:
                stray.add(addr)  # one log line per unexpected source
                logger.warning(
                    "call %s: RTP from unexpected source %s:%s dropped (media comes from %s:%s)",
                    self.label,
                    *addr,
                    *self._latched,
                )
            return
        self.last_rx = asyncio.get_running_loop().time()
        super()._handle_rtp(data, addr)

    def switch_codec(self, payload_type: int) -> None:
        """Send and decode ``payload_type`` from now on, on the same socket (same clock rate).

        aiortp fixes the codec at creation and rebinding the port races the old socket's
        close; this sets the three places aiortp 0.8 keeps it (the extra pins ``<0.9``).
        """
        self._codec = get_codec(payload_type)
        self._payload_type = payload_type
        if self._sender is not None:
            self._sender._payload_type = payload_type
        self._jitter_buffer.reset()

    def relatch(self) -> None:
        """Accept the next source (after a re-INVITE moved the media)."""
        self._latched = None


class RtpSink:
    """The ``WireSink`` of a SIP call: paced RTP frames, flushed at once, marks when played."""

    supports_marks = True

    def __init__(self, session: RTPSession, on_mark: Callable[[str], None]) -> None:
        codec = session.codec
        assert codec is not None
        self._session = session
        self._format = AudioFormat("pcm16", codec.sample_rate, 1)
        self._frame_bytes = codec.samples_per_frame * 2
        self._ptime = codec.samples_per_frame / codec.sample_rate
        self._partial = bytearray()
        self._queue: deque[bytes | str] = deque()  # PCM frames and mark names
        self._ready = asyncio.Event()
        self._on_mark = on_mark
        self.held = False  # the far end put us on hold: frames are paced but not sent
        self.frames_sent = 0
        self.frames_dropped = 0
        self._pacer: asyncio.Task[None] | None = None

    @property
    def audio_format(self) -> AudioFormat:
        return self._format

    def start(self) -> None:
        self._pacer = asyncio.get_running_loop().create_task(self._pace(), name="rtp-pacer")

    async def close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
            self._pacer = None
        self._queue.clear()

    async def send_audio(self, audio: bytes) -> None:
        self._partial += audio
        n = self._frame_bytes
        while len(self._partial) >= n:
            self._queue.append(bytes(self._partial[:n]))
            del self._partial[:n]
        self._ready.set()

    async def send_clear(self) -> None:
        self.frames_dropped += sum(1 for item in self._queue if isinstance(item, bytes))
        self._queue.clear()
        self._partial.clear()

    async def send_mark(self, name: str) -> None:
        if self._partial:  # the tail of an utterance: pad it to a whole frame with silence
            self._queue.append(bytes(self._partial) + bytes(self._frame_bytes - len(self._partial)))
            self._partial.clear()
        self._queue.append(name)
        self._ready.set()

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                due = max(due, loop.time())
                continue
            item = self._queue.popleft()
            if isinstance(item, str):
                self._on_mark(item)
                continue
            if not self.held:
                try:
                    self._session.send_audio_pcm_auto(item)
                    self.frames_sent += 1
                except Exception as exc:  # a send error must not stop the call's output
                    logger.warning("RTP send failed: %s", exc)
            due += self._ptime
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                due = loop.time()  # far behind (a stalled loop): do not burst to catch up


class SipMedia:
    """One call's RTP: negotiation, the session, caller audio/DTMF queue and the media timeout."""

    def __init__(self, label: str, ports: PortAllocator, *, bind_ip: str, sdp_ip: str) -> None:
        self.label = label
        self._ports = ports
        self._bind_ip = bind_ip
        self._sdp_ip = sdp_ip
        self.session: GuardedRTPSession | None = None
        self.port = 0
        self.payload_type = -1
        self.answer: SdpMessage | None = None
        self.held = False
        self.inbound: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=500)
        self.on_stopped: Callable[[], None] | None = None

    @property
    def audio_format(self) -> AudioFormat:
        assert self.session is not None and self.session.codec is not None
        return AudioFormat("pcm16", self.session.codec.sample_rate, 1)

    def negotiate(self, offer: SdpMessage, supported: list[int] | None = None) -> SdpMessage:
        """The SDP answer for ``offer`` (raises SdpNegotiationError: no common codec → 488)."""
        answer, pt = negotiate_sdp(
            offer,
            local_ip=self._sdp_ip,
            rtp_port=self.port or 9,
            supported_codecs=supported or SUPPORTED_PTS,
            dtmf_payload_type=_dtmf_pt(offer),
        )
        self.answer, self.payload_type = answer, pt
        audio = offer.audio
        self.held = audio is not None and audio.direction in _HELD
        return answer

    async def start(self, offer: SdpMessage) -> SdpMessage:
        """Allocate ports, negotiate and bind the RTP session; the SDP answer."""
        self.negotiate(offer)  # fail (488) before any port is taken
        self.port, _ = await self._ports.allocate()
        answer = self.negotiate(offer)
        await self._bind(offer)
        return answer

    async def offer(self) -> SdpMessage:
        """Our SDP offer for an INVITE that had none (delayed offer, RFC 3261 §13.2.1)."""
        self.port, _ = await self._ports.allocate()
        ip = self._sdp_ip
        net = "IP6" if ":" in ip else "IP4"
        names = {9: "G722", 0: "PCMU", 8: "PCMA"}
        pts = " ".join(str(pt) for pt in SUPPORTED_PTS)
        sid = secrets.randbelow(2**31)
        lines = [
            "v=0",
            f"o=voxpipe {sid} {sid} IN {net} {ip}",
            "s=voxpipe",
            f"c=IN {net} {ip}",
            "t=0 0",
            f"m=audio {self.port} RTP/AVP {pts} 101",
            *(f"a=rtpmap:{pt} {names[pt]}/8000" for pt in SUPPORTED_PTS),
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
        ]
        self.answer = parse_sdp("\r\n".join(lines) + "\r\n")
        return self.answer

    async def take_answer(self, answer: SdpMessage) -> None:
        """Bind the session the caller's SDP answer (in the ACK) chose from our offer."""
        self.negotiate(answer)  # its first codec we offered; SdpNegotiationError if none
        await self._bind(answer)

    async def _bind(self, offer: SdpMessage) -> None:
        remote = offer.rtp_address or ("0.0.0.0", 9)
        clock = 8000  # G.722's RTP clock is 8 kHz too (RFC 3551)
        session = await GuardedRTPSession.create(  # create() returns cls(...)
            local_addr=(self._bind_ip, self.port),
            remote_addr=remote,
            payload_type=self.payload_type,
            clock_rate=clock,
            dtmf_payload_type=_dtmf_pt(offer),
            jitter_capacity=16,
            jitter_prefetch=3,
            plc=True,
            symmetric_rtp=True,
        )
        assert isinstance(session, GuardedRTPSession)
        session.label = self.label
        session.last_rx = asyncio.get_running_loop().time()
        session.on_audio = self._on_audio
        session.on_dtmf = self._on_dtmf
        self.session = session

    async def reoffer(self, offer: SdpMessage, sink: RtpSink | None) -> SdpMessage:
        """Answer a re-INVITE: hold/resume, a new address, or a codec change at the same rate."""
        assert self.session is not None and self.session.codec is not None
        rate = self.session.codec.sample_rate
        same_rate = [pt for pt in SUPPORTED_PTS if (16000 if pt == 9 else 8000) == rate]
        old_pt = self.payload_type
        answer = self.negotiate(offer, same_rate)
        if self.payload_type != old_pt:
            self.session.switch_codec(self.payload_type)
        remote = offer.rtp_address
        if remote is not None and remote[1] != 0 and remote[0] != "0.0.0.0":
            self.session.update_remote(remote)
        self.session.relatch()
        if sink is not None:
            sink.held = self.held
        return answer

    def _on_audio(self, pcm: bytes, timestamp: int) -> None:
        self._put(("audio", pcm))

    def _on_dtmf(self, digit: str, duration: int) -> None:
        self._put(("dtmf", digit))

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self.inbound.put_nowait(item)
        except asyncio.QueueFull:  # the pipeline stalled: drop the oldest, keep it live
            self.inbound.get_nowait()
            self.inbound.put_nowait(item)

    def silent_for(self) -> float:
        """Seconds since the last RTP packet from the caller (0 while on hold)."""
        if self.session is None or self.held:
            return 0.0
        return asyncio.get_running_loop().time() - self.session.last_rx

    def touch(self) -> None:
        """Restart the media timeout (after a re-INVITE)."""
        if self.session is not None:
            self.session.last_rx = asyncio.get_running_loop().time()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.port:
            await self._ports.release(self.port)
            self.port = 0


def _dtmf_pt(offer: SdpMessage) -> int:
    audio = offer.audio
    if audio is not None:
        for codec in audio.codecs:
            if codec.encoding_name.lower() == "telephone-event":
                return codec.payload_type
    return 101
