"""SIP calls end to end against the server's user agent: signalling, media, auth and bad input."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from aiortp import PortAllocator, RTPSession
from sipclient import SipClient, sdp_offer

from voxpipe.audio import read_wav, resample_pcm16
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.app import create_app
from voxpipe.server.run import running_server
from voxpipe.transports.sip.digest import DigestGuard

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CLIENT_PORTS = PortAllocator((31000, 31999))


def _settings(**kw: Any) -> VoxpipeSettings:
    kw.setdefault("sip_rtp_ports", "32000-32999")
    return VoxpipeSettings(_env_file=None, sip_listen="127.0.0.1:0", **kw)  # type: ignore[call-arg]


class Server:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.sip = app.state.sip
        self.addr = ("127.0.0.1", self.sip.port)
        self.metrics = app.state.voxpipe.metrics
        self.seen: list[dict[str, Any]] = app.state.voxpipe.bot.__globals__.get("SEEN", [])


def serve(bot: str = "probe", **kw: Any) -> Any:
    path = HERE / "probe_bot.py" if bot == "probe" else ROOT / "bots" / bot
    settings = _settings(**kw)
    app = create_app(path, settings)

    class _Ctx:
        async def __aenter__(self) -> Server:
            self._cm = running_server(app, settings)
            await self._cm.__aenter__()
            try:
                return Server(app)
            except BaseException:
                await self._cm.__aexit__(None, None, None)
                raise

        async def __aexit__(self, *exc: Any) -> None:
            await self._cm.__aexit__(*exc)

    return _Ctx()


async def _rtp(remote: tuple[str, int], pt: int = 0) -> tuple[RTPSession, int]:
    port, _ = await CLIENT_PORTS.allocate()
    s = await RTPSession.create(local_addr=("127.0.0.1", port), remote_addr=remote, payload_type=pt)
    return s, port


async def _answered(c: SipClient, body: str, headers: dict[str, str] | None = None) -> Any:
    c.request("INVITE", body=body, headers=headers)
    cseq = c.cseq
    codes = []
    while True:
        r = await c.response()
        codes.append(r.status_code)
        if r.status_code >= 200:
            break
    assert codes[0] == 100 and 180 in codes and codes[-1] == 200, codes
    c.ack(cseq)
    return r


def _sdp_port(text: str) -> int:
    line = next(x for x in text.splitlines() if x.startswith("m=audio"))
    return int(line.split()[1])


def _rms(pcm: bytes) -> float:
    n = len(pcm) // 2
    if n == 0:
        return 0.0
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return math.sqrt(sum(s * s for s in samples) / n)


async def _play(rtp: RTPSession, pcm: bytes) -> None:
    """Send 8 kHz PCM as real-time RTP, 20 ms a packet (a phone's pace)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(0, len(pcm), 320):
        rtp.send_audio_pcm_auto(pcm[i : i + 320].ljust(320, b"\0"))
        delay = t0 + (i // 320 + 1) * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _speech() -> bytes:
    audio = read_wav(ROOT / "tests" / "data" / "speech_16k.wav")
    return resample_pcm16(audio.pcm, audio.sample_rate, 8000)


# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_sip_call_is_answered_echoed_and_hung_up_by_bye() -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9))
        heard = bytearray()
        rtp.on_audio = lambda pcm, ts: heard.extend(pcm)
        ok = await _answered(
            c,
            sdp_offer(port),
            {
                "P-Asserted-Identity": "<sip:+442071234567@pbx.example>",
                "X-Account": "A-17",
            },
        )
        assert ok.headers.get_first("content-type") == "application/sdp"
        rtp.update_remote(("127.0.0.1", _sdp_port(ok.text)))
        speech = _speech()[: 3 * 8000]
        # Room for the longest end-of-turn wait (Smart Turn may judge the clip incomplete: 2 s).
        await _play(rtp, speech + bytes(4 * 8000 * 2))
        # the echo: the caller hears its own speech back, at speech level
        assert _rms(bytes(heard)) > 0.2 * _rms(speech), (len(heard), _rms(bytes(heard)))
        rec = srv.seen[-1]
        call = rec["call"]
        assert call.carrier == "sip"
        assert call.caller == "+442071234567"  # P-Asserted-Identity over From
        assert call.called == "bot"
        assert call.custom_parameters["X-Account"] == "A-17"
        c.request("BYE")
        assert (await c.final()).status_code == 200
        async with asyncio.timeout(10):
            while srv.metrics.calls_ended["sip", "caller-hung-up"] != 1:
                await asyncio.sleep(0.02)
        assert srv.metrics.calls_started["sip"] == 1
        await rtp.close()
        c.close()


@pytest.mark.slow
async def test_dtmf_reaches_the_consent_gate_and_hash_hangs_up_with_bye() -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9))
        ok = await _answered(c, sdp_offer(port))
        rtp.update_remote(("127.0.0.1", _sdp_port(ok.text)))
        await _play(rtp, bytes(320 * 10))  # media flowing (the server latches to us)
        rtp.send_dtmf("1", 100, timestamp=8000)  # RFC 4733: one timestamp per event
        await _play(rtp, bytes(320 * 15))
        rec = srv.seen[-1]
        assert rec["consent"] == [(True, "dtmf")]
        rtp.send_dtmf("#", 100, timestamp=16000)
        # the echo bot ends the call on '#': the server sends BYE
        async with asyncio.timeout(10):
            while True:
                req = await c.requests.get()
                if req.method == "BYE":
                    break
        assert "1" in rec["dtmf"] and "#" in rec["dtmf"]
        async with asyncio.timeout(10):
            while srv.metrics.calls_ended["sip", "bot-ended"] != 1:
                await asyncio.sleep(0.02)
        await rtp.close()
        c.close()


@pytest.mark.slow
async def test_no_rtp_ends_the_call_with_bye() -> None:
    async with serve(sip_rtp_timeout_s=1.0) as srv:
        c = await SipClient(srv.addr).open()
        await _answered(c, sdp_offer(40000))  # nothing listens or sends there
        async with asyncio.timeout(15):
            while True:
                req = await c.requests.get()
                if req.method == "BYE":
                    break
        async with asyncio.timeout(10):
            while srv.metrics.calls_ended["sip", "rtp-timeout"] != 1:
                await asyncio.sleep(0.02)
        c.close()


async def test_options_cancel_and_codec_refusal() -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        c.request("OPTIONS")
        r = await c.final()
        assert r.status_code == 200 and "INVITE" in (r.headers.get_first("allow") or "")

        # no common codec: 488
        c2 = await SipClient(srv.addr).open()
        c2.request("INVITE", body=sdp_offer(40002, "18"))
        assert (await c2.final()).status_code == 488
        assert srv.metrics.calls_refused["sip", "no-common-codec"] == 1

        # CANCEL before the answer: 200 to the CANCEL, 487 to the INVITE
        c3 = await SipClient(srv.addr).open()
        c3.request("INVITE", body=sdp_offer(40004))
        invite_cseq, branch = c3.cseq, c3.last_branch
        assert (await c3.response()).status_code == 100
        c3.request("CANCEL", cseq=invite_cseq, branch=branch, to_tag=False)
        finals = sorted([(await c3.final()).status_code, (await c3.final()).status_code])
        assert finals == [200, 487]
        for x in (c, c2, c3):
            x.close()


async def test_allow_list_refuses_others_with_403(caplog: pytest.LogCaptureFixture) -> None:
    async with serve(sip_allow="10.9.9.0/24") as srv:
        c = await SipClient(srv.addr).open()
        with caplog.at_level(logging.WARNING, logger="voxpipe.security"):
            c.request("INVITE", body=sdp_offer(40006))
            assert (await c.final()).status_code == 403
        rec = [r for r in caplog.records if getattr(r, "event", "") == "sip_not_allowed"]
        assert rec and rec[0].client == "127.0.0.1"  # type: ignore[attr-defined]
        assert srv.metrics.calls_started["sip"] == 0
        c.close()


async def test_digest_auth_challenges_then_admits_the_trunk() -> None:
    from aiosipua import SipDigestAuth, parse_auth, stringify_auth
    from aiosipua.auth import build_credentials

    async with serve(sip_username="trunk", sip_password="s3cret") as srv:
        c = await SipClient(srv.addr).open()
        c.request("INVITE", body=sdp_offer(40008))
        cseq = c.cseq
        r = await c.final()
        assert r.status_code == 401
        c.ack(cseq)
        challenge = parse_auth(r.headers.get_first("www-authenticate") or "")
        uri = f"sip:bot@{srv.addr[0]}:{srv.addr[1]}"

        wrong = build_credentials(SipDigestAuth("trunk", "guess"), challenge, "INVITE", uri)
        assert wrong is not None
        c.request("INVITE", body=sdp_offer(40008), headers={"Authorization": stringify_auth(wrong)})
        cseq = c.cseq
        assert (await c.final()).status_code == 401
        c.ack(cseq)
        assert srv.metrics.calls_refused["sip", "bad-auth"] == 1

        good = build_credentials(SipDigestAuth("trunk", "s3cret"), challenge, "INVITE", uri)
        assert good is not None
        c.to_tag = ""
        c.request("INVITE", body=sdp_offer(40008), headers={"Authorization": stringify_auth(good)})
        cseq = c.cseq
        r = await c.final()
        assert r.status_code == 200
        c.ack(cseq)
        c.request("BYE")
        assert (await c.final()).status_code == 200
        c.close()


def test_digest_guard_refuses_stale_and_forged_nonces() -> None:
    from aiosipua import SipDigestAuth, parse_auth, stringify_auth
    from aiosipua.auth import build_credentials

    g = DigestGuard("u", "p")
    ch = parse_auth(g.challenge(now=1000.0))
    creds = stringify_auth(build_credentials(SipDigestAuth("u", "p"), ch, "INVITE", "sip:x"))  # type: ignore[arg-type]
    assert g.verify(creds, "INVITE", now=1010.0)
    assert not g.verify(creds, "INVITE", now=1000.0 + 301)  # stale
    assert not g.verify(creds, "BYE", now=1010.0)  # another method
    ch.params["nonce"] = "3e8." + "0" * 32  # forged
    forged = stringify_auth(build_credentials(SipDigestAuth("u", "p"), ch, "INVITE", "sip:x"))  # type: ignore[arg-type]
    assert not g.verify(forged, "INVITE", now=1010.0)


async def test_bad_input_is_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        with caplog.at_level(logging.WARNING):
            c.send_raw(b"SIP/2.0 abc\r\n\r\n")  # a status line without a code
            c.send_raw(b"\x00\xffgarbage that is not SIP\r\n\r\n")  # no headers: dropped
            c.send_raw(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n" + b"X: y\r\n" * 6000)
            c.request("FROBNICATE")
            assert (await c.final()).status_code == 405
        text = caplog.text
        assert "malformed SIP message" in text
        assert "bytes" in text and "dropped" in text
        assert "method not allowed" in text
        # still serving
        c.request("OPTIONS")
        assert (await c.final()).status_code == 200
        c.close()


async def test_calls_beyond_max_calls_get_503() -> None:
    async with serve(max_calls=1) as srv:
        a = await SipClient(srv.addr).open()
        await _answered(a, sdp_offer(40020))
        b = await SipClient(srv.addr).open()
        b.request("INVITE", body=sdp_offer(40022))
        r = await b.final()
        assert r.status_code == 503 and r.headers.get_first("retry-after") == "5"
        assert srv.metrics.calls_refused["sip", "busy"] == 1
        a.request("BYE")
        assert (await a.final()).status_code == 200
        a.close()
        b.close()


def test_caller_and_called_from_the_invite() -> None:
    from voxpipe.transports.sip.session import _user

    assert _user('"Bob" <sip:+15551234@pbx.example;user=phone>') == "+15551234"
    assert _user("sip:alice@example.com") == "alice"
    assert _user("<tel:+442071234567;cpc=ordinary>") == "+442071234567"
    assert _user("not a uri <<<") == ""


@pytest.mark.parametrize(
    "field,value",
    [("sip_listen", "5060"), ("sip_listen", "host:port"), ("sip_rtp_ports", "20000")],
)
def test_bad_sip_settings_are_refused_clearly(field: str, value: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field.upper()):
        VoxpipeSettings(_env_file=None, **{field: value})  # type: ignore[call-arg]


@pytest.mark.slow
async def test_g722_call_runs_at_16_khz_and_a_retransmitted_invite_is_one_call() -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9), pt=9)
        heard = bytearray()
        rtp.on_audio = lambda pcm, ts: heard.extend(pcm)
        body = sdp_offer(port, "9 0 101")
        c.request("INVITE", body=body)
        cseq, branch = c.cseq, c.last_branch
        c.request("INVITE", body=body, cseq=cseq, branch=branch)  # a UDP retransmission
        ok = await c.final()
        assert ok.status_code == 200 and "G722/8000" in ok.text
        c.ack(cseq)
        rtp.update_remote(("127.0.0.1", _sdp_port(ok.text)))
        audio = read_wav(ROOT / "tests" / "data" / "speech_16k.wav")
        speech = audio.pcm[: 3 * 32000]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pcm = speech + bytes(2 * 32000)
        for i in range(0, len(pcm), 640):  # 20 ms of 16 kHz a packet
            rtp.send_audio_pcm_auto(pcm[i : i + 640].ljust(640, b"\0"))
            delay = t0 + (i // 640 + 1) * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        call = srv.seen[-1]["call"]
        assert len(srv.seen) == 1 and call.audio_in.sample_rate == 16000
        assert _rms(bytes(heard)) > 0.2 * _rms(speech)
        c.request("BYE")
        assert (await c.final()).status_code == 200
        await rtp.close()
        c.close()


async def test_ephemeral_port_taken_for_tcp_is_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIP_LISTEN with port 0: a UDP port whose TCP twin is held elsewhere is given up for one
    free for both (CI once failed a call test on that collision)."""
    import socket

    from voxpipe.transports.sip import server as sip_server

    # A port free for UDP whose TCP number is held by a listener of ours.
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    real_udp = sip_server._Udp
    asked: list[int] = []

    def first_on_taken(local_addr: tuple[str, int]) -> Any:
        asked.append(local_addr[1])
        return real_udp(local_addr=(local_addr[0], taken) if len(asked) == 1 else local_addr)

    monkeypatch.setattr(sip_server, "_Udp", first_on_taken)
    try:
        async with serve() as srv:
            assert len(asked) == 2 and srv.sip.port != taken
            c = await SipClient(srv.addr).open()
            c.request("OPTIONS")
            assert (await c.final()).status_code == 200
            c.close()
            _, w = await asyncio.open_connection(*srv.addr)  # TCP on the same number
            w.close()
    finally:
        held.close()
