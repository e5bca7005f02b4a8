"""Frame recordings keep the transcript's rules (issue 10 #4): consent first, silence and no key
presses during a payment pause, sealed at rest with the transcript key; replay still reads them."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from voxpipe import cli
from voxpipe.frames import (
    DTMFFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    RetentionConsentFrame,
    TranscriptionFrame,
)
from voxpipe.pipelines.clock import VirtualClock
from voxpipe.processors.aggregators import LLMContext
from voxpipe.processors.aggregators.assistant import AssistantContextAggregator
from voxpipe.processors.aggregators.transcript import TranscriptRecorder
from voxpipe.processors.base import FrameProcessor
from voxpipe.state.crypto import TranscriptCipher
from voxpipe.state.memory import MemorySessionStore
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.recording import (
    FrameRecorder,
    RecordingError,
    pipeline_requires_consent,
    read_recording,
)

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "bots" / "echo.py"
DOWN, UP = FrameDirection.DOWNSTREAM, FrameDirection.UPSTREAM
VOICE = bytes([0x12, 0x34, 0x56, 0x78]) * 40  # 20 ms of (not silent) mu-law


class Policy(FrameProcessor):
    """Stands in for the consent gate and the payment guard: pushes their frames from inside
    the pipeline, as they do (a key decides consent, a transcript starts/ends a payment)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, DTMFFrame) and frame.digit in "12":
            await self.push_frame(RetentionConsentFrame(granted=frame.digit == "1", source="dtmf"))
        elif isinstance(frame, TranscriptionFrame) and frame.text == "stop recording":
            await self.push_frame(RetentionConsentFrame(granted=False, source="withdrawn"))
        elif isinstance(frame, TranscriptionFrame) and frame.text == "I'll pay by card":
            await self.push_frame(PauseRecordingFrame(reason="payment started"), UP)
            await self.push_frame(PauseRecordingFrame(reason="payment started"), DOWN)
        elif isinstance(frame, TranscriptionFrame) and frame.text == "done":
            await self.push_frame(ResumeRecordingFrame(), UP)
            await self.push_frame(ResumeRecordingFrame(), DOWN)


def audio() -> InputAudioFrame:
    return InputAudioFrame(VOICE, 8000, encoding="mulaw")


async def record(path: Path, frames: list[Frame | Sleep], **kwargs: object) -> FrameRecorder:
    clock = VirtualClock()
    recorder = FrameRecorder(
        path, clock=clock, call_id="CA1", metadata={"caller": "+4930123"}, **kwargs
    )  # type: ignore[arg-type]
    await run_frames([Policy()], frames, clock=clock, observers=[recorder])
    return recorder


CALL: list[Frame | Sleep] = [
    audio(),  # the caller talks over the consent prompt
    Sleep(0.02),
    audio(),
    DTMFFrame("1"),  # consent
    Sleep(0.02),
    audio(),
    Sleep(0.02),
    TranscriptionFrame("I'll pay by card"),
    audio(),  # the card number: silence in the recording
    DTMFFrame("4"),  # keyed card digits: not recorded
    DTMFFrame("1"),
    Sleep(0.02),
    audio(),
    TranscriptionFrame("done"),
    audio(),
    DTMFFrame("#"),
]


async def test_held_until_consent_then_written_with_payment_audio_silenced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "call.jsonl"
    # A holdback shorter than the gaps: only what follows the pause is silenced here.
    recorder = await record(path, CALL, require_consent=True, holdback_s=0.01)
    rec = read_recording(path)
    kinds = [(type(r.frame).__name__, getattr(r.frame, "digit", None)) for r in rec.frames]
    assert kinds == [
        ("InputAudioFrame", None),
        ("InputAudioFrame", None),
        ("DTMFFrame", "1"),  # the grant itself is kept: the replay needs it to pass the gate
        ("InputAudioFrame", None),
        ("TranscriptionFrame", None),
        ("InputAudioFrame", None),
        ("InputAudioFrame", None),
        ("TranscriptionFrame", None),
        ("InputAudioFrame", None),
        ("DTMFFrame", "#"),
        ("EndFrame", None),
    ]
    audios = [r.frame.audio for r in rec.frames if isinstance(r.frame, InputAudioFrame)]
    # Paused: the same length of mu-law silence, so the replay keeps its timing.
    assert audios == [VOICE, VOICE, VOICE, b"\xff" * len(VOICE), b"\xff" * len(VOICE), VOICE]
    assert [round(r.t, 6) for r in rec.frames][:3] == [0.0, 0.02, 0.02]
    assert recorder.silenced == 2 and recorder.dropped_keys == 2
    assert rec.header["consent_required"] is True
    assert os.stat(path).st_mode & 0o777 == 0o600


async def test_a_pause_silences_the_card_number_read_out_before_it(tmp_path: Path) -> None:
    # The caller reads a card number unprompted; the guard pauses once the final transcript is
    # redacted, two seconds later. The audio held back (20 s by default) is silenced too.
    path = tmp_path / "call.jsonl"
    frames: list[Frame | Sleep] = [
        audio(),  # long before: kept
        Sleep(30.0),
        DTMFFrame("3"),  # a key inside the held-back span: dropped
        audio(),
        Sleep(1.0),
        audio(),
        Sleep(1.0),
        TranscriptionFrame("I'll pay by card"),
        audio(),
        TranscriptionFrame("done"),
        Sleep(1.0),
        audio(),
    ]
    recorder = await record(path, frames)
    rec = read_recording(path)
    audios = [r.frame.audio for r in rec.frames if isinstance(r.frame, InputAudioFrame)]
    silence = b"\xff" * len(VOICE)
    assert audios == [VOICE, silence, silence, silence, VOICE]
    assert not any(isinstance(r.frame, DTMFFrame) for r in rec.frames)
    assert recorder.dropped_keys == 1


async def test_nothing_is_recorded_of_a_caller_who_declines_or_does_not_answer(
    tmp_path: Path,
) -> None:
    declined = tmp_path / "declined.jsonl"
    await record(declined, [audio(), DTMFFrame("2"), audio(), DTMFFrame("5")], require_consent=True)
    assert not declined.exists()
    silent = tmp_path / "no-answer.jsonl"
    await record(silent, [audio(), Sleep(5.0), audio()], require_consent=True)
    assert not silent.exists()


async def test_a_withdrawal_deletes_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "call.jsonl"
    frames: list[Frame | Sleep] = [
        audio(),
        DTMFFrame("1"),
        audio(),
        TranscriptionFrame("stop recording"),
        audio(),
    ]
    recorder = await record(path, frames, require_consent=True)
    assert not path.exists() and recorder.consent is False
    # Without consent to ask (notice policy), a withdrawal deletes it as well.
    path2 = tmp_path / "notice.jsonl"
    await record(path2, [audio(), TranscriptionFrame("stop recording"), audio()])
    assert not path2.exists()


async def test_the_buffer_before_consent_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "call.jsonl"
    frames: list[Frame | Sleep] = [audio() for _ in range(10)] + [DTMFFrame("1"), audio()]
    recorder = await record(path, frames, require_consent=True, max_pending_bytes=1000)
    rec = read_recording(path)
    assert recorder.dropped_before_consent > 0
    assert rec.header["dropped_before_consent"] == recorder.dropped_before_consent
    assert len(rec.frames) == 13 - recorder.dropped_before_consent  # 12 frames and the end
    assert [r.frame for r in rec.frames if isinstance(r.frame, DTMFFrame)] == [DTMFFrame("1")]


async def test_sealed_with_the_transcript_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "call.jsonl"
    await record(path, CALL, cipher=TranscriptCipher(key))
    raw = path.read_text()
    # Neither the caller's number nor their audio is readable at rest.
    assert "+4930123" not in raw and base64.b64encode(VOICE).decode() not in raw
    assert "InputAudioFrame" not in raw and "DTMF" not in raw
    with pytest.raises(RecordingError, match="encrypted .*set TRANSCRIPT_KEY"):
        read_recording(path)
    with pytest.raises(RecordingError, match="cannot decrypt"):
        read_recording(path, cipher=TranscriptCipher(os.urandom(32)))
    rec = read_recording(path, cipher=TranscriptCipher(key))
    assert rec.header["metadata"] == {"caller": "+4930123"}
    assert rec.header["encrypted"] is True
    clear = tmp_path / "clear.jsonl"
    await record(clear, CALL)
    assert [type(r.frame) for r in rec.frames] == [
        type(r.frame) for r in read_recording(clear).frames
    ]
    # Lines cannot be reordered (or moved from another recording) unnoticed.
    head, first, second, *rest = raw.splitlines(keepends=True)
    path.write_text("".join([head, second, first, *rest]))
    with pytest.raises(RecordingError, match="cannot decrypt"):
        read_recording(path, cipher=TranscriptCipher(key))


def test_consent_is_required_when_the_bot_asks_for_it() -> None:
    assistant = AssistantContextAggregator(LLMContext())

    def recorder(require: bool) -> TranscriptRecorder:
        return TranscriptRecorder(
            assistant,
            sessions=MemorySessionStore(),
            transcripts=None,  # type: ignore[arg-type]
            call_id="CA1",
            require_consent=require,
        )

    assert pipeline_requires_consent([FrameProcessor(), recorder(True)])
    assert not pipeline_requires_consent([FrameProcessor(), recorder(False)])


def test_replay_reads_an_encrypted_recording_with_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxpipe.testing.twilio_caller import read_caller_wav

    monkeypatch.setattr("voxpipe.pipelines.logs.configure_logging", lambda level: None)
    key = os.urandom(32)

    class Clock:
        t = 0.0

        def now(self) -> float:
            return self.t

    clock = Clock()
    path = tmp_path / "call.jsonl"
    meta = {"bot": str(ECHO), "audio_format": {"encoding": "mulaw", "sample_rate": 8000}}
    rec = FrameRecorder(
        path, clock=clock, call_id="CArec", metadata=meta, cipher=TranscriptCipher(key)
    )  # type: ignore[arg-type]
    speech = read_caller_wav(ROOT / "tests" / "data" / "speech_16k.wav")[: 3 * 8000]
    for i in range(0, len(speech), 160):
        clock.t = i / 8000
        rec.on_input(InputAudioFrame(speech[i : i + 160], 8000, encoding="mulaw"), DOWN)
    rec.close()

    from voxpipe.config.settings import get_settings

    monkeypatch.delenv("TRANSCRIPT_KEY", raising=False)
    get_settings.cache_clear()
    assert cli.main(["replay", str(path), "--bot", str(ECHO)]) == 2
    assert "set TRANSCRIPT_KEY" in capsys.readouterr().err
    monkeypatch.setenv("TRANSCRIPT_KEY", base64.b64encode(key).decode())
    get_settings.cache_clear()
    try:
        assert cli.main(["replay", str(path), "--json"]) == 0
    finally:
        get_settings.cache_clear()
    summary = json.loads(capsys.readouterr().out)
    assert summary["user_turns"] >= 1
