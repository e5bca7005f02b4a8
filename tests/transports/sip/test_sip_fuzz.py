"""Fuzz the SIP parsing path: whatever arrives, the UAS answers or drops it and nothing raises."""

from __future__ import annotations

import asyncio
import logging

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voxpipe.transports.sip.server import _UAS, _Udp

VALID = (
    "INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@127.0.0.1>;tag=abc\r\n"
    "To: <sip:bot@127.0.0.1>\r\n"
    "Call-ID: {callid}\r\n"
    "CSeq: {cseq} {method}\r\n"
    "{extra}"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n{body}"
)


class _Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def _uas() -> tuple[_Udp, _UAS, list[object]]:
    transport = _Udp(local_addr=("127.0.0.1", 5060))
    transport._udp_transport = _Wire()  # type: ignore[assignment]
    uas = _UAS(transport, user_agent="voxpipe", session_expires=1800)
    invites: list[object] = []
    uas.on_invite = invites.append
    transport.on_message = uas._on_message
    return transport, uas, invites


class _Raise(logging.Handler):
    """Fails the example when the dispatcher's catch-all fires (an exception inside the UAS)."""

    def emit(self, record: logging.LogRecord) -> None:
        if "failed:" in record.getMessage():
            raise AssertionError(record.getMessage())


text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(
        ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "REFER", "PRACK", "NOTIFY", "FOO"]
    )
    | text,
    user=text,
    callid=text,
    cseq=st.integers(-5, 2**33).map(str) | text,
    branch=text,
    extra=st.lists(st.tuples(text, text), max_size=4).map(
        lambda hs: "".join(f"{k}: {v}\r\n" for k, v in hs)
    ),
    body=st.text(max_size=300),
    length_delta=st.integers(-20, 20),
)
# Found by this test: "¹".isdigit() is True but int("¹") raises (a CSeq or port of such digits).
@example(
    method="INVITE", user="u", callid="c", cseq="¹", branch="b", extra="", body="", length_delta=0
)
def test_mutated_requests_never_raise(
    method, user, callid, cseq, branch, extra, body, length_delta
):
    async def main() -> None:
        transport, uas, _ = _uas()
        raw = VALID.format(
            method=method,
            user=user,
            callid=callid,
            cseq=cseq,
            branch=branch,
            extra=extra,
            length=max(0, len(body.encode()) + length_delta),
            body=body,
        ).encode()
        transport._dispatch(raw, ("127.0.0.1", 5070))
        for call in list(uas._calls.values()):
            call._stop_retransmissions()

    handler = _Raise()
    log = logging.getLogger("voxpipe.transports.sip.server")
    log.addHandler(handler)
    try:
        asyncio.run(main())
    finally:
        log.removeHandler(handler)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    async def main() -> None:
        transport, _, invites = _uas()
        transport._dispatch(data, ("127.0.0.1", 5070))

    handler = _Raise()
    log = logging.getLogger("voxpipe.transports.sip.server")
    log.addHandler(handler)
    try:
        asyncio.run(main())
    finally:
        log.removeHandler(handler)
