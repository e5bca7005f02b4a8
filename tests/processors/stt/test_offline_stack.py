"""The offline stack end to end: espeak-ng speaks a caller's line, PocketSphinx with a JSGF
grammar recognises it over a phone-quality wire (8 kHz mu-law), and espeak-ng speaks the reply.
No key, no network."""

from __future__ import annotations

from voxpipe.audio import MULAW_SILENCE, pcm16_to_mulaw, rms
from voxpipe.frames import (
    Frame,
    FrameDirection,
    InputAudioFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.base import FrameProcessor
from voxpipe.processors.stt.pocketsphinx import PocketSphinxSTTService
from voxpipe.processors.tts.espeak import EspeakTTSService
from voxpipe.testing import run_frames

PHONE = TaskParams(
    audio_in_sample_rate=8000,
    audio_out_sample_rate=8000,
    metadata={"audio_in_encoding": "mulaw", "audio_out_encoding": "mulaw"},
)
BANK_GRAMMAR = """#JSGF V1.0;
grammar bank;
public <request> = [i would like to] (check my balance | pay my bill | talk to an agent) [please];
"""
CALLER_LINE = "I would like to check my balance please."
REPLY = "Your balance is ten dollars. Anything else?"


class BankScript(FrameProcessor):
    """A stand-in dialog: answers a recognised balance request with a streamed reply."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if type(frame) is TranscriptionFrame and "balance" in frame.text:
            await self.push_frame(LLMResponseStartFrame())
            for fragment in ("Your balance", " is ten dollars.", " Anything", " else?"):
                await self.push_frame(LLMTextFrame(fragment))
            await self.push_frame(LLMResponseEndFrame())


async def caller_audio() -> list[InputAudioFrame]:
    """The caller's line, spoken by espeak-ng, as a phone line carries it (20 ms mu-law)."""
    r = await run_frames([EspeakTTSService()], [TTSSpeakFrame(CALLER_LINE)], params=PHONE)
    speech = pcm16_to_mulaw(b"".join(f.audio for f in r.of_type(OutputAudioFrame)))
    silence = bytes([MULAW_SILENCE])
    audio = silence * 3200 + speech + silence * 6400  # 0.4 s before, 0.8 s after
    return [
        InputAudioFrame(audio[i : i + 160], sample_rate=8000, encoding="mulaw")
        for i in range(0, len(audio), 160)
    ]


async def test_offline_stack_transcribes_grammar_words_and_speaks_a_reply() -> None:
    stt = PocketSphinxSTTService(grammar=BANK_GRAMMAR, endpointing="builtin")
    r = await run_frames(
        [stt, BankScript(), EspeakTTSService()], await caller_audio(), params=PHONE
    )

    transcripts = [f for f in r.downstream if type(f) is TranscriptionFrame]
    assert [f.text for f in transcripts] == ["i would like to check my balance please"]
    assert {"check", "my", "balance"} <= {w.word for w in transcripts[0].words}
    assert transcripts[0].confidence >= stt.confidence_threshold

    # The reply is spoken after the transcript, at the wire's rate, every word after its audio.
    after = r.downstream[r.downstream.index(transcripts[0]) :]
    reply_audio = [f for f in after if isinstance(f, OutputAudioFrame)]
    assert reply_audio and all(f.sample_rate == 8000 for f in reply_audio)
    pcm = b"".join(f.audio for f in reply_audio)
    assert len(pcm) / 16000 > 1.5 and rms(pcm) > 500
    assert [f.text for f in after if isinstance(f, TTSTextFrame)] == REPLY.split()
