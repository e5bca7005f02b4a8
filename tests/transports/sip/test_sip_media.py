"""SIP media: re-INVITE (hold, codec change), TCP signalling, stray RTP, and the paced sink."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
from sipclient import SipClient, sdp_offer
from test_sip_calls import _answered, _play, _rtp, _sdp_port, serve

from voxpipe.transports.sip.rtp import RtpSink


@pytest.mark.slow
async def test_reinvite_holds_resumes_and_changes_codec() -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9))
        ok = await _answered(c, sdp_offer(port))
        rtp.update_remote(("127.0.0.1", _sdp_port(ok.text)))
        await _play(rtp, bytes(320 * 5))
        call = next(iter(srv.sip.calls.values()))

        c.request("INVITE", body=sdp_offer(port, direction="sendonly"))  # hold
        cseq = c.cseq
        r = await c.final()
        assert r.status_code == 200 and "a=recvonly" in r.text
        c.ack(cseq)
        assert call.media.held and call.sink.held

        c.request("INVITE", body=sdp_offer(port, "8 101"))  # resume on PCMA
        cseq = c.cseq
        r = await c.final()
        assert r.status_code == 200 and "PCMA/8000" in r.text and "a=sendrecv" in r.text
        c.ack(cseq)
        assert not call.media.held and call.media.payload_type == 8

        c.request("INVITE", body=sdp_offer(port, "9"))  # G.722 is 16 kHz: not mid-call
        cseq = c.cseq
        assert (await c.final()).status_code == 488
        c.ack(cseq)
        assert call.state == "answered"  # the call goes on

        c.request("BYE")
        assert (await c.final()).status_code == 200
        await rtp.close()
        c.close()


@pytest.mark.slow
async def test_rtp_from_an_unexpected_source_is_dropped_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9))
        ok = await _answered(c, sdp_offer(port))
        media = ("127.0.0.1", _sdp_port(ok.text))
        rtp.update_remote(media)
        await _play(rtp, bytes(320 * 5))
        stranger, _ = await _rtp(media)
        with caplog.at_level(logging.WARNING):
            rtp.send_dtmf("5", 60, timestamp=4000)
            await _play(stranger, bytes(320 * 5))
            stranger.send_dtmf("9", 60, timestamp=8000)  # not the caller: must not count
            await _play(rtp, bytes(320 * 10))
        lines = [r for r in caplog.records if "unexpected source" in r.getMessage()]
        assert len(lines) == 1 and c.call_id in lines[0].getMessage()
        assert srv.seen[-1]["dtmf"] == ["5"]
        c.request("BYE")
        assert (await c.final()).status_code == 200
        await rtp.close()
        await stranger.close()
        c.close()


async def test_invite_over_tcp_is_answered() -> None:
    async with serve() as srv:
        reader, writer = await asyncio.open_connection(*srv.addr)
        local = writer.get_extra_info("sockname")
        body = sdp_offer(40010)
        msg = (
            f"INVITE sip:bot@127.0.0.1:{srv.addr[1]};transport=tcp SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKtcp1\r\n"  # its listening port
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=t1\r\nTo: <sip:bot@127.0.0.1>\r\n"
            "Call-ID: tcp-call-1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@127.0.0.1:{local[1]};transport=tcp>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        )
        writer.write(msg.encode())
        codes = []
        async with asyncio.timeout(10):
            while 200 not in codes:
                status = await reader.readline()
                codes.append(int(status.split()[1]))
                length = 0
                while (line := await reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
        assert codes[0] == 100 and codes[-1] == 200
        writer.close()


class _Session:
    """The part of an RTPSession the sink uses, counting frames."""

    def __init__(self) -> None:
        from aiortp.codecs import get_codec

        self.codec = get_codec(0)
        self.frames: list[bytes] = []

    def send_audio_pcm_auto(self, pcm: bytes) -> int:
        self.frames.append(pcm)
        return 0


async def test_sink_paces_frames_reports_marks_played_and_a_flush_drops_the_queue() -> None:
    session = _Session()
    played: list[str] = []
    sink = RtpSink(session, played.append)  # type: ignore[arg-type]
    sink.start()
    await sink.send_audio(b"\x01\x00" * 8000)  # 1 s: 50 frames
    await sink.send_mark("m1")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while len(session.frames) < 5:
        await asyncio.sleep(0.005)
    assert loop.time() - t0 >= 0.07  # paced: 5 frames take ~80 ms, not a burst
    await sink.send_clear()  # barge-in: what is queued never goes out
    sent = len(session.frames)
    assert sent < 50 and sink.frames_dropped >= 50 - sent - 1
    await asyncio.sleep(0.1)
    assert len(session.frames) <= sent + 1 and played == []  # the mark went with the audio
    await sink.send_audio(b"\x02\x00" * 170)  # a partial frame, padded at the mark
    await sink.send_mark("m2")
    async with asyncio.timeout(2):
        while played != ["m2"]:
            await asyncio.sleep(0.005)
    assert session.frames[-2:] == [b"\x02\x00" * 160, b"\x02\x00" * 10 + bytes(300)]
    await sink.close()


def _self_signed(tmp: Path) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(tmp / "cert.pem"), str(tmp / "key.pem")


async def test_options_over_tls_on_the_next_port(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with serve(sip_tls_cert=cert, sip_tls_key=key) as srv:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a self-signed test certificate
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.addr[1] + 1, ssl=ctx)
        writer.write(
            (
                f"OPTIONS sip:bot@127.0.0.1:{srv.addr[1] + 1};transport=tls SIP/2.0\r\n"
                "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=t\r\nTo: <sip:bot@127.0.0.1>\r\n"
                "Call-ID: tls-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(10):
            status = await reader.readline()
        assert status.startswith(b"SIP/2.0 200"), status
        writer.close()


async def test_an_unrefreshed_session_expires_with_bye() -> None:
    async with serve() as srv:
        for uas in srv.sip.uases:  # RFC 4028's 90 s floor would make this test slow
            uas.session_expires, uas.min_se = 3, 1
        c = await SipClient(srv.addr).open()
        ok = await _answered(
            c, sdp_offer(40030), {"Session-Expires": "3;refresher=uac", "Supported": "timer"}
        )
        assert (ok.headers.get_first("session-expires") or "").startswith("3;refresher=uac")
        async with asyncio.timeout(10):
            while (await c.requests.get()).method != "BYE":
                pass
        async with asyncio.timeout(10):
            while srv.metrics.calls_ended["sip", "session-expired"] != 1:
                await asyncio.sleep(0.02)
        c.close()
