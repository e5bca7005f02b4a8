"""A small SIP UAC over UDP for the tests (requests written by hand; responses parsed by aiosipua)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiosipua import SipMessage, SipRequest, SipResponse


def sdp_offer(port: int, codecs: str = "0 101", *, direction: str = "sendrecv") -> str:
    names = {
        "0": "PCMU/8000",
        "8": "PCMA/8000",
        "9": "G722/8000",
        "18": "G729/8000",
        "101": "telephone-event/8000",
    }
    lines = [
        "v=0",
        "o=test 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
        *[f"a=rtpmap:{pt} {names[pt]}" for pt in codecs.split()],
        "a=fmtp:101 0-16" if "101" in codecs.split() else "",
        "a=ptime:20",
        f"a={direction}",
    ]
    return "\r\n".join(line for line in lines if line) + "\r\n"


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, client: SipClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._received(data, addr)


class SipClient:
    """One caller: INVITE/ACK/BYE/CANCEL/OPTIONS; responses and the server's requests queued."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.requests: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.call_id = secrets.token_hex(8) + "@test"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.to_tag = ""
        self.port = 0
        self._t: asyncio.DatagramTransport | None = None
        self.last_branch = ""

    async def open(self) -> SipClient:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), local_addr=("127.0.0.1", 0)
        )
        self._t = t  # type: ignore[assignment]
        self.port = t.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self._t is not None:
            self._t.close()

    def _received(self, data: bytes, addr: Any) -> None:
        msg = SipMessage.parse(data)
        if isinstance(msg, SipResponse):
            self.responses.put_nowait(msg)
            return
        assert isinstance(msg, SipRequest)
        self.requests.put_nowait(msg)
        if msg.method != "ACK":  # the server's BYE: answer it
            lines = ["SIP/2.0 200 OK"]
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                for v in msg.headers.get(name.lower()):
                    lines.append(f"{name}: {v}")
            self.send_raw(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())

    def send_raw(self, data: bytes) -> None:
        assert self._t is not None
        self._t.sendto(data, self.server)

    def request(
        self,
        method: str,
        *,
        body: str = "",
        headers: dict[str, str] | None = None,
        cseq: int | None = None,
        branch: str | None = None,
        to_tag: bool = True,
    ) -> None:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + secrets.token_hex(6)
        self.last_branch = branch
        host, port = self.server
        to = f"<sip:bot@{host}:{port}>" + (f";tag={self.to_tag}" if to_tag and self.to_tag else "")
        lines = [
            f"{method} sip:bot@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f'From: "Caller" <sip:+15550001@127.0.0.1:{self.port}>;tag={self.tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@127.0.0.1:{self.port}>",
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE",
        ]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n" + body).encode())

    async def response(self, timeout: float = 10.0) -> SipResponse:
        async with asyncio.timeout(timeout):
            resp = await self.responses.get()
        tag = (resp.headers.get_first("to") or "").partition(";tag=")[2]
        if tag and resp.status_code >= 200:
            self.to_tag = tag.split(";")[0]
        return resp

    async def final(self, timeout: float = 10.0) -> SipResponse:
        """The next final (>= 200) response, skipping provisionals."""
        while True:
            resp = await self.response(timeout)
            if resp.status_code >= 200:
                return resp

    def ack(self, invite_cseq: int) -> None:
        self.request("ACK", cseq=invite_cseq)
