"""The SIP user agent server inside ``voxpipe serve``: UDP + TCP (+ TLS) listeners, one UAS each.

aiosipua parses and routes SIP (transactions, dialogs, 100 Trying, CANCEL, OPTIONS, session
timers); this module adds what a bot server needs in front of it: a source allow-list (403),
digest authentication of the trunk (401 challenge), bounded message sizes, one log line per bad
message, and a ``SipCall`` per INVITE.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiortp import PortAllocator
from aiosipua import (
    IncomingCall,
    SipMessage,
    SipRequest,
    SipResponse,
    parse_sdp,
    parse_via,
    stringify_via,
)
from aiosipua.transport import TcpSipTransport, UdpSipTransport, _stamp_via_received
from aiosipua.uas import SipUAS

from voxpipe.transports.sip.digest import DigestGuard
from voxpipe.transports.sip.session import CARRIER, SipCall

if TYPE_CHECKING:
    from voxpipe.server.state import ServerState

__all__ = ["SipServer", "parse_hostport"]

logger = logging.getLogger(__name__)
security = logging.getLogger("voxpipe.security")

MAX_MESSAGE_BYTES = 32 * 1024  # a real INVITE with SDP is ~1-3 KB
USER_AGENT = "voxpipe"


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → (host, port); ValueError on anything else."""
    host, sep, port = text.strip().rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 0 <= int(port) <= 65535
    ):
        raise ValueError(f"SIP listen address must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _answer_on_connection(request: SipRequest, addr: tuple[str, int]) -> None:
    """Make responses go back over the request's TCP/TLS connection (RFC 3261 §18.2.2).

    aiosipua routes responses by the Via's sent-by, which over TCP is the peer's listening port
    (5060), not the connection's; it finds connections by (ip, port), so the Via is stamped with
    the connection's address as rport/received.
    """
    vias = request.headers.get("via")
    if not vias:
        return
    via = parse_via(vias[0])
    via.params["rport"] = str(addr[1])
    via.params["received"] = addr[0]
    request.headers.remove("Via")
    request.headers.append("Via", stringify_via(via))
    for v in vias[1:]:
        request.headers.append("Via", v)


class _GuardedDispatch:
    """Size cap and one-line logging for bad input, in front of aiosipua's parser."""

    on_message: Any
    reliable: bool

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            logger.warning("SIP message from %s:%s dropped: %d bytes", *addr, len(data))
            return
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626)
        try:
            msg = SipMessage.parse(data)
            if isinstance(msg, SipRequest):
                if self.reliable:
                    _answer_on_connection(msg, addr)
                _stamp_via_received(msg, addr)
        except Exception as exc:
            logger.warning("malformed SIP message from %s:%s dropped: %.120s", *addr, exc)
            return
        if self.on_message is None:
            return
        try:
            self.on_message(msg, addr)
        except Exception as exc:
            call_id = getattr(msg, "call_id", "") or "?"
            logger.warning("SIP message from %s:%s (call %s) failed: %r", *addr, call_id, exc)


class _UdpProtocol(asyncio.DatagramProtocol):
    """Datagrams to the transport (aiosipua's own asserts a stdlib transport class: uvloop's
    UDP transport is not one)."""

    def __init__(self, owner: _Udp) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.info("SIP UDP error: %s", exc)


class _Udp(_GuardedDispatch, UdpSipTransport):
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=self.local_addr
        )
        self._udp_transport = transport


class _Tcp(_GuardedDispatch, TcpSipTransport):
    pass


class _Tls(_Tcp):
    """SIP over TLS (RFC 3261 §26): TCP framing inside an SSL stream."""

    ssl_context: ssl.SSLContext | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle_connection,
            host=self.local_addr[0],
            port=self.local_addr[1],
            ssl=self.ssl_context,
        )


class _UAS(SipUAS):
    """aiosipua's UAS with the allow-list and a log line for requests it cannot serve."""

    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    on_ack: Any = None  # (request): the ACK of a call (a delayed offer's answer is in it)
    on_response: Any = None  # (response): answers to requests we sent in a dialog (REFER)

    def _on_message(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if isinstance(msg, SipResponse):
            if self.allow and not _allowed(addr[0], self.allow):
                return
            if self.on_response is not None:
                self.on_response(msg)
            return
        super()._on_message(msg, addr)

    def _handle_request(self, request: SipRequest, addr: tuple[str, int]) -> None:
        if self.allow and not _allowed(addr[0], self.allow):
            security.warning(
                "SIP %s from %s refused: not in SIP_ALLOW",
                request.method,
                addr[0],
                extra={"client": addr[0], "event": "sip_not_allowed"},
            )
            if request.method.upper() != "ACK":
                self._send_error(request, 403, "Forbidden")
            return
        problem = _malformed(request)
        if problem:
            logger.warning(
                "SIP %.20s from %s:%s (call %.60s) refused (400): %s",
                request.method,
                *addr,
                request.call_id,
                problem,
            )
            if request.method.upper() != "ACK" and request.via:
                self._send_error(request, 400, "Bad Request")
            return
        if request.method.upper() == "ACK" and self.on_ack is not None:
            self.on_ack(request)
        if request.method.upper() not in self._handlers:
            logger.warning(
                "SIP %.20s from %s:%s (call %s): method not allowed (405)",
                request.method,
                *addr,
                request.call_id,
            )
        super()._handle_request(request, addr)


def _malformed(request: SipRequest) -> str:
    """Why aiosipua would trip over ``request`` (bad CSeq, Via or SDP); empty when it is fine."""
    try:
        request.via  # noqa: B018 - parses every Via
    except Exception:
        return "bad Via"
    cseq = (request.headers.get_first("cseq") or "").split()
    if cseq:  # a missing CSeq is answered by aiosipua's own required-header check
        if len(cseq) != 2 or not (cseq[0].isascii() and cseq[0].isdigit()) or int(cseq[0]) >= 2**31:
            return "bad CSeq"
        if cseq[1].upper() != request.method.upper():
            return "CSeq method does not match"
    if request.body and request.content_type == "application/sdp" and request.method != "ACK":
        # (an ACK's bad SDP answer is the call's to refuse, with a BYE)
        try:
            parse_sdp(request.text)
        except Exception:
            return "bad SDP"
    return ""


def _allowed(host: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def parse_allow(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``SIP_ALLOW`` → networks (a bare IP is a /32 or /128)."""
    return [ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()]


_EPHEMERAL_TRIES = 8  # tries for a port free for both UDP and TCP


class SipServer:
    """The SIP listeners of one server process and the calls they carry."""

    def __init__(self, st: ServerState, listen: str) -> None:
        s = st.settings
        self.st = st
        self.host, self.port = parse_hostport(listen)
        self.allow = parse_allow(s.sip_allow)
        self.guard = (
            DigestGuard(s.sip_username, s.sip_password.get_secret_value())
            if s.sip_username and s.sip_password
            else None
        )
        lo, _, hi = s.sip_rtp_ports.partition("-")
        self.ports = PortAllocator((int(lo), int(hi or lo)))
        self.sdp_ip = s.sip_public_ip or (self.host if self.host not in ("0.0.0.0", "::") else "")
        self.calls: dict[str, SipCall] = {}
        self.uases: list[_UAS] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind UDP and TCP on the same port (and TLS on the next one when configured)."""
        s = self.st.settings
        ctx = None
        if s.sip_tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(s.sip_tls_cert, s.sip_tls_key)
        ephemeral = self.port == 0
        # Port 0 lets the OS pick the UDP port; TCP then needs the same number (and TLS the
        # next), which another socket (a client connection's local port) may already hold:
        # then every listener of that try is closed and the OS picks again, a few times.
        for attempt in range(_EPHEMERAL_TRIES if ephemeral else 1):
            kept = len(self.uases)
            try:
                udp = _Udp(local_addr=(self.host, 0 if ephemeral else self.port))
                await self._add(udp)
                assert udp._udp_transport is not None
                self.port = udp._udp_transport.get_extra_info("sockname")[1]  # resolves port 0
                await self._add(_Tcp(local_addr=(self.host, self.port)))
                if ctx is not None:
                    tls = _Tls(local_addr=(self.host, self.port + 1))
                    tls.ssl_context = ctx
                    await self._add(tls)
                break
            except OSError as e:
                if not ephemeral or e.errno != errno.EADDRINUSE or attempt == _EPHEMERAL_TRIES - 1:
                    raise
                while len(self.uases) > kept:
                    await self.uases.pop().stop()
        if not self.sdp_ip:
            self.sdp_ip = "127.0.0.1"
            logger.warning("SIP bound to a wildcard address: set SIP_PUBLIC_IP for the SDP")
        logger.info(
            "SIP listening on %s:%s (udp, tcp%s)%s%s",
            self.host,
            self.port,
            ", tls on next port" if s.sip_tls_cert else "",
            "; digest auth on" if self.guard else "",
            f"; allow {s.sip_allow}" if self.allow else "",
        )

    async def _add(self, transport: Any) -> None:
        uas = _UAS(
            transport,
            user_agent=USER_AGENT,
            session_expires=self.st.settings.sip_session_expires_s,
        )
        uas.allow = self.allow
        uas.on_invite = lambda inc: self._on_invite(inc, uas)
        uas.on_reinvite = self._on_reinvite
        uas.on_bye = lambda inc, req: self._far_end_left(inc.call_id, "caller hung up")
        uas.on_cancel = lambda req, addr: self._far_end_left(req.call_id or "", "cancelled")
        uas.on_session_expired = lambda inc: self._far_end_left(inc.call_id, "session expired")
        uas.on_ack = self._on_ack
        uas.on_response = self._on_response
        uas.on_transfer_progress = self._on_transfer_progress
        await uas.start()
        self.uases.append(uas)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for uas in self.uases:
            await uas.stop()
        self.uases.clear()

    # ------------------------------------------------------------------ callbacks from the UAS

    def _on_invite(self, inc: IncomingCall, uas: _UAS) -> None:
        m = self.st.metrics
        addr = inc.source_addr
        if self.guard is not None and not self.guard.verify(
            inc.invite.get_header("authorization"), "INVITE"
        ):
            if inc.invite.get_header("authorization"):
                security.warning(
                    "SIP INVITE from %s refused: bad digest credentials",
                    addr[0],
                    extra={"client": addr[0], "event": "sip_bad_auth"},
                )
                m.calls_refused[CARRIER, "bad-auth"] += 1
            else:
                m.calls_refused[CARRIER, "auth-challenge"] += 1
            inc._send_response(
                401, "Unauthorized", extra_headers={"WWW-Authenticate": self.guard.challenge()}
            )
            inc.dialog.terminate()  # the ACK to the 401 then drops it from the UAS
            return
        known = self.calls.get(inc.call_id)
        if known is not None:
            # A retransmitted INVITE (the 100 Trying was lost): aiosipua re-sent 100 and filed
            # a second call under this Call-ID; keep the one being answered.
            uas._calls[inc.call_id] = known.inc
            return
        slot = self.st.call_limiter.acquire(CARRIER)
        if slot is None:  # MAX_CALLS / MAX_CALLS_PER_CARRIER: busy, try again shortly
            logger.warning(
                "SIP call %s refused (503): %s", inc.call_id, self.st.call_limiter.describe(CARRIER)
            )
            m.calls_refused[CARRIER, "busy"] += 1
            inc._send_response(503, "Service Unavailable", extra_headers={"Retry-After": "5"})
            inc.dialog.terminate()
            return
        call = SipCall(self.st, inc, self.ports, bind_ip=self.host, sdp_ip=self.sdp_ip)
        self.calls[call.call_id] = call
        self._spawn(self._run(call, slot))

    async def _run(self, call: SipCall, slot: Any) -> None:
        try:
            await call.run()
        except Exception:
            logger.exception("SIP call %s failed", call.call_id)
        finally:
            slot.release()
            self.calls.pop(call.call_id, None)

    def _on_reinvite(self, inc: IncomingCall) -> None:
        call = self.calls.get(inc.call_id)
        if call is None or call.state != "answered":
            inc._send_response(491, "Request Pending")
            return
        self._spawn(call.reinvite(inc))

    def _on_ack(self, request: SipRequest) -> None:
        call = self.calls.get(request.call_id or "")
        if call is not None:
            call.ack(request)

    def _on_response(self, resp: SipResponse) -> None:
        call = self.calls.get(resp.call_id or "")
        if call is not None:
            call.control.on_response(resp)

    def _on_transfer_progress(self, call_id: str, status: int, reason: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.control.on_progress(status, reason)

    def _far_end_left(self, call_id: str, reason: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.far_end_left(reason)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
