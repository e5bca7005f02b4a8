"""The support agent answers a SIP call offline (PocketSphinx, scripted dialog, espeak-ng)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sipclient import SipClient, sdp_offer
from test_sip_calls import _answered, _play, _rms, _rtp, _sdp_port, serve

from voxpipe.audio import read_wav
from voxpipe.state.sqlite_store import SqliteTranscriptStore
from voxpipe.testing import caller_wav

pytestmark = pytest.mark.slow


async def test_support_agent_answers_a_sip_call_offline(tmp_path: Path) -> None:
    wav = caller_wav(
        ["what are your opening hours"],
        tmp_path / "caller.wav",
        lead_s=4.0,
        # The answer's time, plus Smart Turn's longest wait: espeak's flat question may be
        # judged incomplete (2 s) where a caller's rising voice would not.
        pause_s=6.0,
        sample_rate=8000,
    )
    caller = read_wav(wav).pcm
    db = tmp_path / "calls.sqlite3"
    async with serve(
        "support_agent.py",
        sqlite_path=str(db),
        spool_dir=str(tmp_path / "spool"),
        # The caller's country is unknown, so the IVR would ask; this test is about the answer
        # (DTMF reaching the consent gate is tested in test_sip_calls.py).
        consent_mode="off",
    ) as srv:
        c = await SipClient(srv.addr).open()
        rtp, port = await _rtp(("127.0.0.1", 9))
        heard = bytearray()
        rtp.on_audio = lambda pcm, ts: heard.extend(pcm)
        ok = await _answered(c, sdp_offer(port))
        rtp.update_remote(("127.0.0.1", _sdp_port(ok.text)))
        await _play(rtp, caller)
        assert _rms(bytes(heard)) > 100  # the greeting and the answer were spoken
        c.request("BYE")
        assert (await c.final()).status_code == 200
        async with asyncio.timeout(15):
            while srv.metrics.calls_ended["sip", "caller-hung-up"] != 1:
                await asyncio.sleep(0.05)
        await rtp.close()
        c.close()
    store = SqliteTranscriptStore(db)
    await store.start()
    try:
        ids = await store.call_ids()
        assert ids == [c.call_id]
        transcript = await store.read(ids[0], reader="test")
    finally:
        await store.close()
    assert transcript is not None
    turns = [(t.role, t.text) for t in transcript.turns]
    assert ("user", "what are your opening hours") in turns, turns
    assert ("assistant", "We're open Monday to Saturday, eight to eight.") in turns, turns
