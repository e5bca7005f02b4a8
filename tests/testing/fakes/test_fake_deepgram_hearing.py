"""FakeDeepgram's hearing mode: utterances found by level in the audio each connection sends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import websockets

from voxpipe.audio import pcm16_to_mulaw
from voxpipe.testing.fakes import DeepgramHearing, FakeDeepgram
from voxpipe.testing.fakes._hearing import SpeechSpans

KEY = {"Authorization": "Token test-key"}


def tone(seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2")


def quiet(seconds: float, rate: int = 8000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype="<i2")


def test_spans_find_speech_and_bridge_short_dips() -> None:
    spans = SpeechSpans(DeepgramHearing(), encoding="linear16", sample_rate=16000, channels=1)
    # 0.5 s quiet, 0.6 s speech with a 60 ms dip (a stop consonant), 0.4 s quiet, 0.3 s speech.
    pcm = np.concatenate(
        [
            quiet(0.5, 16000),
            tone(0.3, 16000),
            quiet(0.06, 16000),
            tone(0.24, 16000),
            quiet(0.4, 16000),
            tone(0.3, 16000),
        ]
    )
    ended = spans.feed(pcm.tobytes(), gap_s=0.3)
    assert len(ended) == 1
    onset, end = ended[0]
    assert onset == pytest.approx(0.5, abs=0.011) and end == pytest.approx(1.1, abs=0.011)
    assert spans.open_start == pytest.approx(1.5, abs=0.011)  # the second one is still going
    closed = spans.close()
    assert closed is not None and closed[1] == pytest.approx(1.8, abs=0.011)
    assert spans.close() is None


async def _listen(dg: FakeDeepgram, query: str, audio: bytes, finalize_at: int | None) -> Any:
    ws = await websockets.connect(f"{dg.listen_url}?{query}", additional_headers=KEY)
    for i in range(0, len(audio), 160):
        await ws.send(audio[i : i + 160])
        if finalize_at is not None and i == finalize_at:
            await ws.send(json.dumps({"type": "Finalize"}))
    await ws.send(json.dumps({"type": "CloseStream"}))
    out = []
    async for raw in ws:
        out.append(json.loads(raw))
    return out


async def test_hearing_transcribes_each_utterance_in_turn_on_endpointing() -> None:
    texts = ["First question.", "Second one here."]
    audio = pcm16_to_mulaw(
        np.concatenate([quiet(0.3), tone(0.8), quiet(0.6), tone(0.5), quiet(0.6)]).tobytes()
    )
    async with FakeDeepgram(latency=0.0, hearing=DeepgramHearing(texts=texts)) as dg:
        query = (
            "encoding=mulaw&sample_rate=8000&endpointing=300&interim_results=true&punctuate=true"
        )
        messages = await asyncio.wait_for(_listen(dg, query, audio, None), 10)
    finals = [m for m in messages if m.get("type") == "Results" and m["is_final"]]
    spoken = [m for m in finals if m["channel"]["alternatives"][0]["transcript"]]
    assert [m["channel"]["alternatives"][0]["transcript"] for m in spoken] == texts
    assert all(m["speech_final"] for m in spoken)  # ended by the endpointing silence
    words = spoken[0]["channel"]["alternatives"][0]["words"]
    assert words[0]["start"] == pytest.approx(0.3, abs=0.02)
    assert words[-1]["end"] == pytest.approx(1.1, abs=0.02)
    interims = [m for m in messages if m.get("type") == "Results" and not m["is_final"]]
    assert interims and interims[0]["channel"]["alternatives"][0]["transcript"] == "First"


async def test_hearing_finalize_ends_the_utterance_at_once() -> None:
    audio = pcm16_to_mulaw(np.concatenate([quiet(0.2), tone(0.6), quiet(1.0)]).tobytes())
    async with FakeDeepgram(latency=0.0, hearing=DeepgramHearing(texts=["Hello there."])) as dg:
        query = "encoding=mulaw&sample_rate=8000&endpointing=false&punctuate=true"
        # Finalize 60 ms after the speech ended (the gap alone would need 0.1 s).
        at = int(0.84 * 8000)
        messages = await asyncio.wait_for(_listen(dg, query, audio, at), 10)
    finals = [m for m in messages if m.get("type") == "Results" and m["is_final"]]
    assert finals[0]["from_finalize"] is True
    assert finals[0]["channel"]["alternatives"][0]["transcript"] == "Hello there."
    assert not any(m["channel"]["alternatives"][0]["transcript"] for m in finals[1:])


def test_hearing_needs_texts() -> None:
    with pytest.raises(ValueError):
        DeepgramHearing(texts=[" "])
