"""SIPp scenarios (tests/transports/sip/scenarios) against the server: REFER transfers of the
support agent's escalation (accepted, and declined/busy), and a delayed-offer INVITE."""

from __future__ import annotations

import asyncio
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from aiortp import get_codec
from prometheus_client import generate_latest
from sipclient import SipClient
from test_sip_calls import serve

from voxpipe.audio import read_wav
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import caller_wav
from voxpipe.transports.sip.control import brief_header_value

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (apt: sip-tester) not installed"),
]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP_PCAPS = Path("/usr/share/sip-tester")
DESK = "sip:desk@127.0.0.1:5099"
DESK2 = "sip:desk2@127.0.0.1:5099"


def write_alaw_pcap(path: Path, pcm: bytes, *, port: int = 6000) -> Path:
    """8 kHz PCM as a pcap of A-law RTP packets (Ethernet/IPv4/UDP), 20 ms apart, the way
    SIPp's play_pcap_audio reads it."""
    codec = get_codec(8)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for n, i in enumerate(range(0, len(pcm), 320)):
        payload = codec.encode(pcm[i : i + 320].ljust(320, b"\0"))
        rtp = struct.pack("!BBHII", 0x80, 8, n & 0xFFFF, n * 160, 0x1234) + payload
        udp = struct.pack("!HHHH", port, port, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
            bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
        ) + udp  # fmt: skip
        frame = b"\0" * 12 + b"\x08\x00" + ip
        t = n * 0.02
        out += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def _free_media_port() -> int:
    """An even UDP port with the next three free too (SIPp binds audio RTP/RTCP and video):
    a fixed one collides with another SIPp run on the same machine."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for offset in range(4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free UDP port range for SIPp's media")


async def sipp(cwd: Path, scenario: str, port: int, *extra: str, timeout: float = 120.0) -> None:
    """Run one SIPp call of ``scenario`` against 127.0.0.1:``port``; fail with its errors."""
    errors = cwd / "sipp_err.log"
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario), "-m", "1",
        "-i", "127.0.0.1", "-p", "0", "-mp", str(_free_media_port()), "-nostdin", "-timeout", str(int(timeout)),
        "-timeout_error", "-trace_err", "-error_file", str(errors), "-s", "voxpipe", *extra,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout + 20)
    assert proc.returncode == 0, (out.decode()[-3000:], errors.exists() and errors.read_text())


async def _transcript(db: Path) -> Any:
    store = SqliteTranscriptStore(db)
    await store.start()
    try:
        ids = await store.call_ids()
        assert len(ids) == 1, ids
        return await store.read(ids[0], reader="test")
    finally:
        await store.close()


async def _ended(srv: Any, how: str) -> None:
    async with asyncio.timeout(20):
        while srv.metrics.calls_ended["sip", how] != 1:
            await asyncio.sleep(0.05)


def _caller(tmp_path: Path, lines: list[str], gap_s: float) -> None:
    wav = caller_wav(lines, tmp_path / "caller.wav", lead_s=4.0, pause_s=gap_s, sample_rate=8000)
    write_alaw_pcap(tmp_path / "caller.pcap", read_wav(wav).pcm)


async def test_refer_accepted_ends_our_leg_and_records_the_transfer(tmp_path: Path) -> None:
    _caller(tmp_path, ["i want to talk to a human"], gap_s=2.0)
    db = tmp_path / "calls.sqlite3"
    async with serve(
        "support_agent.py",
        sqlite_path=str(db),
        spool_dir=str(tmp_path / "spool"),
        consent_mode="off",
        transfer_to=f"{DESK},{DESK2}",
    ) as srv:
        # The scenario checks Refer-To, Referred-By and the brief header, answers 202 and
        # NOTIFY 180 then 200, and then needs our BYE.
        await sipp(tmp_path, "refer_accept.xml", srv.sip.port)
        await _ended(srv, "transferred")
        scraped = generate_latest(srv.metrics.registry).decode()
        assert 'voxpipe_calls_ended_total{carrier="sip",how="transferred"} 1.0' in scraped
        assert 'voxpipe_transfer_steps_total{step="sip_transferred"}' in scraped
    transcript = await _transcript(db)
    record = transcript.metadata["escalation"]
    assert record["outcome"] == "connected" and record["connected_to"] == DESK, record
    assert [a["result"] for a in record["attempts"]] == ["connected"], record
    assert record["reason"] == "caller asked for a person"
    turns = [(t.role, t.text) for t in transcript.turns]
    assert ("user", "i want to talk to a human") in turns, turns
    # The handoff line was played out (not cut off by our BYE) before the REFER.
    handoff = [t for t in transcript.turns if "connecting you to a colleague" in t.text]
    assert handoff and not handoff[0].interrupted, turns


async def test_refer_declined_then_busy_returns_the_caller_to_the_bot(tmp_path: Path) -> None:
    _caller(tmp_path, ["i want to talk to a human", "please call me back"], gap_s=14.0)
    db = tmp_path / "calls.sqlite3"
    async with serve(
        "support_agent.py",
        sqlite_path=str(db),
        spool_dir=str(tmp_path / "spool"),
        consent_mode="off",
        transfer_to=f"{DESK},{DESK2}",
    ) as srv:
        # 603 to the first REFER; 202 + NOTIFY 486 to the second; then the caller leaves a
        # message (the pcap's second line) and hangs up 25 s later.
        await sipp(tmp_path, "refer_reject.xml", srv.sip.port, "-d", "25000")
        await _ended(srv, "caller-hung-up")
    transcript = await _transcript(db)
    record = transcript.metadata["escalation"]
    attempts = [(a["to"], a["status"], a["result"]) for a in record["attempts"]]
    assert attempts == [(DESK, 603, "declined"), (DESK2, 486, "declined")], record
    assert record["outcome"] == "message_taken", record
    assert record["callback_number"] == "+15550001234"
    said = [t.text for t in transcript.turns if t.role == "assistant"]
    assert any("nobody is free" in s for s in said), said
    assert any("passed your message on" in s for s in said), said


async def test_invite_without_sdp_gets_our_offer_and_takes_the_answer_from_the_ack(
    tmp_path: Path,
) -> None:
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    async with serve() as srv:
        await sipp(tmp_path, "delayed_offer.xml", srv.sip.port)
        await _ended(srv, "caller-hung-up")
        rec = srv.seen[-1]
        assert rec["call"].audio_in.sample_rate == 8000  # PCMA, as the ACK's answer chose
        assert srv.metrics.calls_started["sip"] == 1


async def test_an_ack_without_the_answer_ends_the_delayed_offer_call_with_bye() -> None:
    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        c.request("INVITE", body="")
        cseq = c.cseq
        while (r := await c.response()).status_code < 200:
            pass
        assert r.status_code == 200 and "m=audio" in r.text  # our offer
        c.ack(cseq)  # no SDP answer in it
        async with asyncio.timeout(10):
            while (await c.requests.get()).method != "BYE":
                pass
        async with asyncio.timeout(5):
            while srv.metrics.calls_refused["sip", "no-sdp-answer"] != 1:
                await asyncio.sleep(0.02)
        assert srv.metrics.calls_started["sip"] == 0
        c.close()


def test_the_brief_header_is_one_bounded_line() -> None:
    value = brief_header_value("Reason: upset\r\nX-Evil: 1\tsummary " + "é" * 400)
    assert "\r" not in value and "\n" not in value and "\t" not in value
    assert value.startswith("Reason: upset X-Evil: 1 summary")
    assert len(value.encode()) <= 500


async def test_refer_carries_the_headers_and_a_bye_after_acceptance_counts_as_transferred() -> None:
    from sipclient import sdp_offer
    from test_sip_calls import _answered, _rtp, _sdp_port

    async with serve() as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9))
        ok = await _answered(c, sdp_offer(port))
        rtp.update_remote(("127.0.0.1", _sdp_port(ok.text)))
        control = srv.seen[-1]["call"].control
        # No final NOTIFY: the REFER gives up after its bound (our client answers 200).
        quiet = await control.refer("sip:nobody@pbx.test", notify_timeout_s=0.3)
        assert (quiet.transferred, quiet.status) == (False, 408)
        assert (await c.requests.get()).method == "REFER"
        refer = asyncio.ensure_future(control.refer("sip:desk@pbx.test", brief="Reason: x\r\nY"))
        async with asyncio.timeout(5):
            req = await c.requests.get()
        assert req.method == "REFER"
        assert req.headers.get_first("refer-to") == "<sip:desk@pbx.test>"
        assert (req.headers.get_first("referred-by") or "").startswith("<sip:")
        assert req.headers.get_first("x-voxpipe-brief") == "Reason: x Y"
        c.request("BYE")  # the PBX took the call and dropped our leg itself
        result = await asyncio.wait_for(refer, 5)
        assert result.transferred and result.detail == "the far end ended our leg"
        await rtp.close()
        c.close()
