"""The browser page against a running voxpipe server, for real: headless Chromium, fake microphone.

Chromium (Debian's package) plays tests/data/speech_16k.wav as its microphone, loads the
page from the server, and calls the echo bot over WebRTC. The test checks that the bot heard
speech (the VAD fired on caller audio that arrived decoded and resampled) and that the page
received the bot's audio (WebAudio level and RTP audio energy on the remote track), then that
hanging up from the page ends the call on the server.

Both run in a private network namespace (``unshare -n``) whose loopback also carries
127.0.0.2: aiortc never offers 127.0.0.1 as an ICE candidate and would otherwise use the
machine's network address; this way no packet can leave the machine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "webrtc_browser_driver.py"
SPEECH = HERE.parent / "data" / "speech_16k.wav"


def _netns_command(inner: list[str]) -> list[str]:
    """``inner`` in a new network namespace with lo up and 127.0.0.2 on it."""
    # As root a plain network namespace; otherwise inside a user namespace where we are root.
    flags = "-n" if os.geteuid() == 0 else "-rn"
    script = "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec " + shlex.join(inner)
    return ["unshare", flags, "sh", "-c", script]


def test_browser_call_through_the_page() -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    for tool in ("unshare", "ip"):
        assert shutil.which(tool), f"{tool} is needed to isolate the test's network"
    cmd = _netns_command(
        [
            sys.executable,
            str(DRIVER),
            "--host",
            "127.0.0.2",
            "--wav",
            str(SPEECH),
            "--chromium",
            chromium,
        ]
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"driver failed (status {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    )
    result = json.loads(lines[-1])
    detail = json.dumps(result, indent=1)[:6000]
    assert result["ok"], detail

    # The bot heard speech: caller audio arrived (16 kHz PCM16 after decode) and the VAD fired.
    server = result["server"]
    assert server["carriers"] == ["webrtc"], detail
    assert server["input_seconds"] > 1.0 and server["input_peak_rms"] > 0.05, detail
    events = server["events"]
    assert "user-started-speaking" in events and "user-stopped-speaking" in events, detail
    # ... and answered only after the caller finished (an echo, not a loopback).
    assert events.index("user-stopped-speaking") < events.index("bot-started-speaking"), detail

    # The page received the bot's audio and the live events.
    page = result["page"]
    assert page["status"] == "connected" and page["channelOpen"], detail
    assert page["micPeak"] > 0.05, detail
    assert page["remotePeak"] >= 0.02, detail
    types = [m["type"] for m in page["messages"]]
    assert types.index("user-started-speaking") < types.index("bot-started-speaking"), detail
    rtp = result["inbound_rtp"]
    assert rtp["packetsReceived"] > 50 and rtp["totalAudioEnergy"] > 0, detail

    # Hanging up on the page ends the call on the server.
    after = result["after_hangup"]
    assert after["call_ended"] and after["active_calls"] == 0, detail
    assert after["calls_ended"] == {"webrtc/caller-hung-up": 1}, detail
