"""Real SIP clients from Debian's packages against `voxpipe serve BOT --sip`: SIPp and baresip."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
SIPP_PCAPS = Path("/usr/share/sip-tester")


def _free_port() -> int:
    """A port free for both UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@contextmanager
def voxpipe_serve(bot: str, log: Path) -> Iterator[tuple[int, int]]:
    sip, http = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CARRIERS": "sip", "SIP_RTP_PORTS": "33000-33999"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voxpipe.cli",
                "serve",
                str(ROOT / "bots" / bot),
                "--port",
                str(http),
                "--sip",
                f"127.0.0.1:{sip}",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "SIP listening" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield sip, http
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _metric(http: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{http}/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (apt: sip-tester) not installed")
def test_sipp_uac_pcap_completes_against_the_echo_bot(tmp_path: Path) -> None:
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)  # uac_pcap plays pcap/g711a.pcap (A-law)
    log = tmp_path / "serve.log"
    with voxpipe_serve("echo.py", log) as (sip, http):
        run = subprocess.run(
            [
                "sipp",
                "-sn",
                "uac_pcap",
                f"127.0.0.1:{sip}",
                "-m",
                "1",
                "-timeout",
                "25",
                "-timeout_error",
                "-nostdin",
                "-mp",
                str(_free_port()),
                "-trace_err",
                "-error_file",
                str(tmp_path / "sipp_err.log"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=40,
        )
        errors = tmp_path / "sipp_err.log"
        assert run.returncode == 0, (run.stdout[-2000:], errors.exists() and errors.read_text())
        deadline = time.monotonic() + 10
        while _metric(http, "voxpipe_calls_ended_total", carrier="sip", how="caller-hung-up") < 1:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert _metric(http, "voxpipe_calls_started_total", carrier="sip") == 1
    text = log.read_text()
    assert "call started: sip call" in text and "caller-hung-up" in text


BARESIP_CONFIG = """\
poll_method epoll
sip_listen 127.0.0.1:0
audio_player aufile,{dir}/unused.wav
audio_source aufile,{dir}/in.wav
audio_alert aufile,{dir}/in.wav
audio_srate 8000
audio_channels 1
module_path /usr/lib/baresip/modules
module stdio.so
module g711.so
module aufile.so
module sndfile.so
module_app account.so
module_app menu.so
snd_path {dir}/rec
rtp_ports 34000-34999
"""


def _rms(pcm: bytes) -> float:
    import math
    import struct

    n = len(pcm) // 2
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return math.sqrt(sum(s * s for s in samples) / max(1, n))


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed")
def test_baresip_hears_its_own_speech_echoed(tmp_path: Path) -> None:
    """baresip plays a WAV into the call (aufile) and records what it hears (sndfile)."""
    import wave

    from voxpipe.audio import read_wav, resample_pcm16

    audio = read_wav(ROOT / "tests" / "data" / "speech_16k.wav")
    speech = resample_pcm16(audio.pcm, audio.sample_rate, 8000)[: 3 * 16000]
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(speech + bytes(16000 * 5))  # 3 s of speech, 5 s to hear the echo
    conf = tmp_path / "conf"
    conf.mkdir()
    (tmp_path / "rec").mkdir()
    (conf / "config").write_text(BARESIP_CONFIG.format(dir=tmp_path))
    (conf / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0\n")
    (conf / "contacts").write_text("")
    with voxpipe_serve("echo.py", tmp_path / "serve.log") as (sip, http):
        run = subprocess.run(
            ["baresip", "-f", str(conf), "-e", f"/dial sip:bot@127.0.0.1:{sip}", "-t", "14"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert "Call established" in run.stdout, run.stdout[-3000:]
        deadline = time.monotonic() + 10
        while _metric(http, "voxpipe_calls_ended_total", carrier="sip", how="caller-hung-up") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    heard_files = list((tmp_path / "rec").glob("*-dec.wav"))
    assert heard_files, run.stdout[-2000:]
    with wave.open(str(heard_files[0])) as w:
        heard = w.readframes(w.getnframes())
    # at least ~2 s of the 3 s utterance came back, at speech level
    assert len(heard) >= 2 * 16000, len(heard)
    assert _rms(heard) > 0.2 * _rms(speech), (_rms(heard), _rms(speech))
