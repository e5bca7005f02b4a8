"""Service tapes: what the LLM and TTS returned is recorded and, played back in their place,
gives the same frames with a model that knows nothing; tape lines keep the consent rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voxpipe.frames import (
    Frame,
    FrameDirection,
    FunctionCallInProgressFrame,
    InputAudioFrame,
    LLMMessagesFrame,
    LLMTextFrame,
    OutputAudioFrame,
    RetentionConsentFrame,
    TextFrame,
    TranscriptionFrame,
    TTSTextFrame,
    Word,
)
from voxpipe.pipelines.clock import VirtualClock
from voxpipe.processors.llm.scripted import Intent, ScriptedLLMService
from voxpipe.processors.stt.base import STTService
from voxpipe.processors.tts.espeak import EspeakTTSService
from voxpipe.testing import Sleep, run_frames
from voxpipe.testing.recording import SERVICE, FrameRecorder, ServiceRecord, read_recording
from voxpipe.testing.service_tape import TapeMissing, attach_tape, play_tape


def services(intents: list[Intent]) -> list[Any]:
    llm = ScriptedLLMService(intents, first_token_delay=0.3, token_delay=0.05)

    async def weather(city: str) -> dict[str, str]:
        return {"summary": "sunny"}

    llm.register_function("weather", weather, {"type": "object", "properties": {}})
    return [llm, EspeakTTSService()]


INTENTS = [
    Intent(
        "weather",
        patterns=[r"weather in (?P<city>\w+)"],
        reply="Let me look.",
        tool="weather",
        after_tool="It is {summary} in {city}.",
    )
]
ASK = [
    LLMMessagesFrame([{"role": "user", "content": "what is the weather in Paris"}]),
    Sleep(5.0),
]


def seen(frames: list[Frame]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in frames:
        if isinstance(f, LLMTextFrame | TTSTextFrame):
            out.append((type(f).__name__, f.text))
        elif isinstance(f, FunctionCallInProgressFrame):
            out.append(("tool", (f.function_name, f.arguments)))
        elif isinstance(f, OutputAudioFrame):
            out.append(("audio", len(f.audio)))
    return out


async def test_a_recorded_tape_replaces_the_model_and_the_voice() -> None:
    tape: list[dict[str, Any]] = []
    clock = VirtualClock()
    live = services(INTENTS)
    assert attach_tape(live, lambda rec: tape.append({"t": clock.now(), **rec})) == 2
    first = await run_frames(live, ASK, clock=clock)
    assert {(r["service"], r["op"]) for r in tape} == {
        ("llm", "chunk"),
        ("tts", "reply"),
        ("tts", "audio"),
    }
    assert all(r["type"] == SERVICE and "audio" not in r["data"] for r in tape)

    # A model with no rules at all and a voice whose audio is replaced: only the tape answers.
    replay = services([])
    records = [ServiceRecord(r["t"], r["service"], r["slot"], r["op"], r["data"]) for r in tape]
    player = play_tape(replay, records)
    assert player.services == 2
    second = await run_frames(replay, ASK)
    expected = seen(first.downstream)
    assert ("tool", ("weather", {"city": "Paris"})) in expected
    assert ("TTSTextFrame", "Paris.") in expected
    assert seen(second.downstream) == expected  # texts, tool call, audio lengths, word timing
    assert [
        t
        for t, f in zip(second.downstream_times, second.downstream, strict=True)
        if isinstance(f, TTSTextFrame)
    ] == [
        t
        for t, f in zip(first.downstream_times, first.downstream, strict=True)
        if isinstance(f, TTSTextFrame)
    ]
    assert all(
        not any(f.audio) for f in second.downstream if isinstance(f, OutputAudioFrame)
    )  # the audio itself was never recorded: silence of the same length


async def test_a_bot_that_asks_more_than_the_tape_holds_is_told() -> None:
    llm = services([])[0]
    play_tape([llm], [])
    with pytest.raises(TapeMissing, match="LLM request 1 is not in the recording"):
        async for _ in llm.stream_chat([{"role": "user", "content": "hi"}], None):
            pass


def test_tape_lines_wait_for_consent_and_go_with_a_refusal(tmp_path: Path) -> None:
    line = {"type": SERVICE, "service": "llm", "slot": 0, "op": "chunk", "data": {"text": "hi"}}
    granted = tmp_path / "granted.jsonl"
    rec = FrameRecorder(granted, clock=VirtualClock(), call_id="CA1", require_consent=True)
    rec.service(dict(line))
    assert not granted.exists()  # nothing before consent
    rec.on_push(None, None, RetentionConsentFrame(granted=True), None)  # type: ignore[arg-type]
    rec.on_finish()
    [kept] = read_recording(granted).services
    assert (kept.service, kept.op, kept.data) == ("llm", "chunk", {"text": "hi"})

    refused = tmp_path / "refused.jsonl"
    rec = FrameRecorder(refused, clock=VirtualClock(), call_id="CA2", require_consent=True)
    rec.service(dict(line))
    rec.on_push(None, None, RetentionConsentFrame(granted=False), None)  # type: ignore[arg-type]
    rec.on_finish()
    assert not refused.exists()


class TextSTT(STTService):
    """An STT whose "audio" is text: each TextFrame is a final transcript with its words."""

    async def process_audio(self, frame: Any) -> None:
        return None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            words = [Word(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(frame.text.split())]
            await self.push_transcript(frame.text, final=True, words=words)
            return
        await super().process_frame(frame, direction)


async def test_the_tape_never_holds_a_card_number() -> None:
    tape: list[dict[str, Any]] = []
    stt = TextSTT()
    attach_tape([stt], tape.append)
    said = [
        "order 12345 please",
        "my card is 4111 1111 1111 1111",
        "it is 4111 1111",  # a number read out in two breaths
        "1111 1111 thanks",
    ]
    result = await run_frames([stt], [TextFrame(t) for t in said])
    got = [(r["data"]["text"], len(r["data"]["words"])) for r in tape]
    assert got == [
        ("order 12345 please", 3),
        ("my card is [card number]", 0),
        ("it is 4111 1111", 4),
        ("[card number] thanks", 0),
    ]
    # The pipeline itself got what the STT heard: redacting is the payment guard's job there.
    assert [f.text for f in result.of_type(TranscriptionFrame)] == said


def test_tape_lines_are_sealed_with_the_transcript_key(tmp_path: Path) -> None:
    import os

    from voxpipe.state.crypto import TranscriptCipher

    key = os.urandom(32)
    path = tmp_path / "sealed.jsonl"
    rec = FrameRecorder(path, clock=VirtualClock(), call_id="CA3", cipher=TranscriptCipher(key))
    rec.service(
        {
            "type": SERVICE,
            "service": "stt",
            "slot": 0,
            "op": "transcript",
            "data": {"text": "my pin is 4417"},
        }
    )
    rec.on_finish()
    raw = path.read_text()
    # The phrase, not the digits alone: "4417" can turn up in the header's timestamp or in
    # base64 ciphertext by chance (a CI run met a timestamp ending in ...2124417); neither holds
    # a space or "$".
    assert "my pin is 4417" not in raw and SERVICE not in raw
    [line] = read_recording(path, cipher=TranscriptCipher(key)).services
    assert line.data == {"text": "my pin is 4417"}


def test_offline_replay_of_a_recording_without_provider_results_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxpipe.cli import main

    agent = Path(__file__).resolve().parents[2] / "bots" / "support_agent.py"
    path = tmp_path / "old.jsonl"
    rec = FrameRecorder(path, clock=VirtualClock(), call_id="CA4", metadata={"bot": str(agent)})
    rec.on_input(InputAudioFrame(b"\xff" * 160, 8000, encoding="mulaw"), FrameDirection.DOWNSTREAM)
    rec.on_finish()
    assert main(["replay", str(path), "--offline"]) == 2
    assert "keeps no provider results" in capsys.readouterr().err
