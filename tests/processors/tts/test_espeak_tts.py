"""EspeakTTSService: espeak-ng in-process, at the wire's rate, words from espeak's events."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voxpipe.audio import rms
from voxpipe.frames import (
    ErrorFrame,
    FrameDirection,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.tts.espeak import EspeakEngine, EspeakTTSService, Synthesis, word_timings
from voxpipe.testing import run_frames

TEXT = "I would like to check my balance please."


def params(rate: int) -> TaskParams:
    return TaskParams(audio_out_sample_rate=rate)


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_speaks_at_the_wire_rate_with_words_after_their_audio(rate: int) -> None:
    r = await run_frames([EspeakTTSService()], [TTSSpeakFrame(TEXT)], params=params(rate))
    audio = r.of_type(OutputAudioFrame)
    assert audio and all(f.sample_rate == rate and f.encoding == "pcm16" for f in audio)
    pcm = b"".join(f.audio for f in audio)
    seconds = len(pcm) / (2 * rate)
    assert 1.5 < seconds < 3.0  # eight words at 175 words per minute, plus espeak's pauses
    assert rms(pcm) > 500  # speech, not silence (sample units)
    assert [f.text for f in r.of_type(TTSTextFrame)] == TEXT.split()
    # Audio comes between consecutive words: each word's text follows its own audio.
    kinds = [
        type(f).__name__ for f in r.downstream if isinstance(f, OutputAudioFrame | TTSTextFrame)
    ]
    assert kinds[0] == "OutputAudioFrame"
    assert all(not (a == b == "TTSTextFrame") for a, b in zip(kinds, kinds[1:], strict=False)), (
        "a word came before its audio"
    )
    assert [m.model for m in r.of_type(MetricsFrame) if m.metric == "ttfb"] == ["espeak-ng"]


async def test_reply_is_spoken_sentence_by_sentence_in_a_worker_thread() -> None:
    threads: list[int] = []
    texts: list[str] = []

    class Spy(EspeakTTSService):
        def _render(self, text: str, rate: int) -> tuple:
            threads.append(threading.get_ident())
            texts.append(text)
            return super()._render(text, rate)

    r = await run_frames(
        [Spy()],
        [
            LLMResponseStartFrame(),
            LLMTextFrame("Your balance is ten dollars."),
            LLMTextFrame(" Anything else?"),
            LLMResponseEndFrame(),
        ],
        params=params(8000),
        clock=Clock(),
    )
    assert texts == ["Your balance is ten dollars.", "Anything else?"]
    assert threads and threading.get_ident() not in threads  # the loop was never blocked
    assert [
        f.text for f in r.of_type(TTSTextFrame)
    ] == "Your balance is ten dollars. Anything else?".split()


async def test_unknown_voice_is_reported() -> None:
    r = await run_frames(
        [EspeakTTSService(voice="xx-nope")], [TTSSpeakFrame("Hi.")], params=params(8000)
    )
    errors = r.of_type(ErrorFrame, FrameDirection.UPSTREAM)
    assert errors and "xx-nope" in errors[0].error
    assert not r.of_type(OutputAudioFrame)


def test_engine_word_events_and_timings() -> None:
    synthesis = EspeakEngine.get().synthesize("Check my balance, please.", "en-us", 175, None)
    assert synthesis.sample_rate > 0 and len(synthesis.pcm) > 0
    assert [p for p, _ in synthesis.word_starts] == [0, 6, 9, 18]
    duration = len(synthesis.pcm) / (2 * synthesis.sample_rate)
    words = word_timings("Check my balance, please.", synthesis, duration)
    assert [w.word for w in words] == ["Check", "my", "balance,", "please."]
    assert all(a.end == b.start for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end == duration and np.all(np.diff([w.start for w in words]) > 0)


def test_tokens_without_events_are_silent() -> None:
    synthesis = Synthesis(b"", 22050, [(0, 0.0), (8, 0.5)])
    words = word_timings("Hello — there", synthesis, 1.0)
    assert [(w.word, w.start, w.end) for w in words] == [
        ("Hello", 0.0, 0.5),
        ("—", 0.5, 0.5),
        ("there", 0.5, 1.0),
    ]
