"""The `voxpipe` command: call writes its files, replay checks goldens, errors say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voxpipe import cli
from voxpipe.audio import read_wav

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "data" / "speech_16k.wav"
ECHO = ROOT / "bots" / "echo.py"


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() configures root logging for a terminal; leave pytest's handlers alone.
    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)


def test_call_writes_the_bot_audio_and_a_transcript(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, transcript = tmp_path / "out" / "heard.wav", tmp_path / "t.json"
    rc = cli.main(
        [
            "call",
            str(ECHO),
            "--wav",
            str(SPEECH),
            "--out",
            str(out),
            "--transcript",
            str(transcript),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "caller spoke 3 time(s)" in printed and f"wrote {out}" in printed
    doc = json.loads(transcript.read_text())
    assert doc["user_turns"] == 3 and doc["end_reason"] == "recording finished"
    assert doc["input_seconds"] == pytest.approx(8.879, abs=0.01)
    kinds = [e["type"] for e in doc["events"]]
    assert kinds[0] == "user_started_speaking" and "bot_started_speaking" in kinds
    # The echo follows each end of speech at once (nothing to compute).
    assert doc["latencies"]["response_s"] == [0.0, 0.0, 0.0]
    wav = read_wav(out)
    assert wav.sample_rate == 8000 and wav.num_channels == 1
    assert wav.duration == pytest.approx(doc["call_seconds"], abs=0.05)
    samples = np.frombuffer(wav.pcm, dtype="<i2").astype(np.float64)
    # Silent until the caller's first utterance ended (3.63 s), then the echo is heard.
    first_stop = next(e["t"] for e in doc["events"] if e["type"] == "user_stopped_speaking")
    quiet = samples[: int(first_stop * 8000) - 80]
    loud = samples[int(first_stop * 8000) : int((first_stop + 0.6) * 8000)]
    assert np.sqrt(np.mean(quiet**2)) < 50
    assert np.sqrt(np.mean(loud**2)) > 500
    # Deterministic: a second run is identical.
    transcript2 = tmp_path / "t2.json"
    assert (
        cli.main(["call", str(ECHO), "--wav", str(SPEECH), "--transcript", str(transcript2)]) == 0
    )
    doc2 = json.loads(transcript2.read_text())
    assert doc2["audio"] == doc["audio"] and doc2["events"] == doc["events"]


@pytest.mark.parametrize(
    "source, message",
    [
        ("async def not_a_bot(call):\n    pass\n", "has no function 'bot'"),
        ("def bot(call):\n    pass\n", "must be an async function"),
        ("def bot(call:\n", "syntax error"),
        ("raise RuntimeError('boom')\n", "failed while loading: RuntimeError: boom"),
    ],
)
def test_bad_bot_files_give_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    bot = tmp_path / "bad.py"
    bot.write_text(source)
    assert cli.main(["call", str(bot), "--wav", str(SPEECH)]) == 2
    assert message in capsys.readouterr().err


def test_missing_files_give_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["call", str(tmp_path / "nope.py"), "--wav", str(SPEECH)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["call", str(ECHO), "--wav", str(tmp_path / "nope.wav")]) == 2
    assert "WAV file" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "recording" in capsys.readouterr().err


def test_replay_checks_a_golden_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recording: Path
) -> None:
    golden = tmp_path / "golden.json"
    assert cli.main(["replay", str(recording), "--write-golden", str(golden)]) == 0
    assert cli.main(["replay", str(recording), "--golden", str(golden)]) == 0
    assert "matches" in capsys.readouterr().out
    doc = json.loads(golden.read_text())
    # The caller spoke, the echo played and was cut by the next utterance.
    assert (
        doc["user_turns"] == 2 and doc["audio"]["seconds"] > 0.5 and len(doc["interruptions"]) == 1
    )
    doc["user_turns"] += 1
    doc["audio"]["sha256"] = "0" * 64
    golden.write_text(json.dumps(doc))
    assert cli.main(["replay", str(recording), "--golden", str(golden)]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH" in err and "$.user_turns" in err and "$.audio.sha256" in err
    assert cli.main(["replay", str(recording), "--golden", str(tmp_path / "none.json")]) == 2
    assert "--write-golden" in capsys.readouterr().err


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A recording of a short call (frames as the recorder writes them), echo bot named in it."""
    from voxpipe.frames import FrameDirection, InputAudioFrame
    from voxpipe.testing.recording import FrameRecorder
    from voxpipe.testing.twilio_caller import read_caller_wav

    class Clock:
        t = 0.0

        def now(self) -> float:
            return self.t

    clock = Clock()
    path = tmp_path / "call.jsonl"
    meta = {
        "bot": str(ECHO),
        "carrier": "twilio",
        "audio_format": {"encoding": "mulaw", "sample_rate": 8000},
    }
    rec = FrameRecorder(path, clock=clock, call_id="CArec", metadata=meta)  # type: ignore[arg-type]
    audio = read_caller_wav(SPEECH)[: 5 * 8000]
    for i in range(0, len(audio), 160):
        clock.t = i / 8000
        frame = InputAudioFrame(audio=audio[i : i + 160], sample_rate=8000, encoding="mulaw")
        rec.on_input(frame, FrameDirection.DOWNSTREAM)
    rec.close()
    return path


@pytest.mark.slow
def test_the_installed_entry_point_runs(tmp_path: Path) -> None:
    transcript = tmp_path / "t.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxpipe.cli",
            "call",
            str(ECHO),
            "--wav",
            str(SPEECH),
            "--transcript",
            str(transcript),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(transcript.read_text())["user_turns"] == 3
