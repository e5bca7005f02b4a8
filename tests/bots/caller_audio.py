"""Caller recordings for whole-call tests, spoken by espeak-ng (deterministic enough for STT)."""

from __future__ import annotations

from pathlib import Path

from voxpipe.audio.resample import resample_pcm16
from voxpipe.audio.wav import write_wav
from voxpipe.processors.tts.espeak import EspeakEngine


def make_caller_wav(
    path: Path, lines: list[str], *, lead_s: float = 5.0, gap_s: float = 5.0, rate: int = 16000
) -> Path:
    """Write ``lines`` spoken after ``lead_s`` of silence (the greeting) with ``gap_s`` between
    them (room for the replies)."""
    engine = EspeakEngine.get()
    silence = b"\x00\x00" * int(rate * gap_s)
    pcm = bytearray(b"\x00\x00" * int(rate * lead_s))
    for line in lines:
        syn = engine.synthesize(line, "en-us", 150, None)
        audio = (
            syn.pcm if syn.sample_rate == rate else resample_pcm16(syn.pcm, syn.sample_rate, rate)
        )
        pcm += audio + silence
    write_wav(path, bytes(pcm), rate)
    return path
