"""PocketSphinxSTTService on a known recording (tests/data/speech_16k.wav), offline."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from voxpipe.audio import pcm16_to_mulaw, read_wav, resample_pcm16
from voxpipe.frames import (
    ErrorFrame,
    Frame,
    FrameDirection,
    InputAudioFrame,
    InterruptionFrame,
    PauseRecordingFrame,
    ResumeRecordingFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.clock import Clock
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.stt.pocketsphinx import (
    PocketSphinxSTTService,
    default_keyword_threshold,
    jsgf_from_phrases,
    jsgf_words,
)
from voxpipe.testing import run_frames

DATA = Path(__file__).resolve().parents[2] / "data"
TRUTH = json.loads((DATA / "speech_16k.json").read_text())
PHRASES = [
    "Hello, I need some help with my order.",
    "The number is four five six.",
    "Thank you, goodbye.",
    "I want to pay my bill.",
    "Talk to an agent.",
]
EXPECTED = [
    "hello i need some help with my order",
    "the number is four five six",
    "thank you goodbye",
]
PHONE = TaskParams(audio_in_sample_rate=8000, metadata={"audio_in_encoding": "mulaw"})
WIDE = TaskParams(audio_in_sample_rate=16000, metadata={"audio_in_encoding": "pcm16"})


def recording(rate: int) -> list[InputAudioFrame]:
    """The recording as 20 ms wire frames: 16 kHz PCM16, or 8 kHz mu-law like a phone line."""
    wav = read_wav(DATA / "speech_16k.wav")
    if rate == 16000:
        return [
            InputAudioFrame(wav.pcm[i : i + 640], sample_rate=16000)
            for i in range(0, len(wav.pcm), 640)
        ]
    mu = pcm16_to_mulaw(resample_pcm16(wav.pcm, 16000, 8000))
    return [
        InputAudioFrame(mu[i : i + 160], sample_rate=8000, encoding="mulaw")
        for i in range(0, len(mu), 160)
    ]


def with_vad(
    frames: list[InputAudioFrame], rate: int, start_lag: float = 0.25, stop_lag: float = 0.6
) -> list[Frame]:
    """Insert the VAD's start/stop frames where a VAD would: a little after speech starts/ends."""
    events: list[tuple[float, Frame]] = []
    for a, b in TRUTH["segments"][str(rate)]:
        events += [
            (a + start_lag, UserStartedSpeakingFrame()),
            (b + stop_lag, UserStoppedSpeakingFrame()),
        ]
    out: list[Frame] = []
    t = 0.0
    for f in frames:
        while events and events[0][0] <= t:
            out.append(events.pop(0)[1])
        out.append(f)
        t += f.duration
    out += [e for _, e in events]
    return out


def finals(frames: list[Frame]) -> list[TranscriptionFrame]:
    return [f for f in frames if type(f) is TranscriptionFrame]


async def test_phrases_grammar_on_wideband_audio_is_exact() -> None:
    stt = PocketSphinxSTTService(phrases=PHRASES)
    r = await run_frames([stt], with_vad(recording(16000), 16000), params=WIDE)
    got = finals(r.downstream)
    assert [f.text for f in got] == EXPECTED
    assert all(f.confidence > 0.8 for f in got)
    # Word times are on the call's timeline (the recording's speech starts at 0.6, 4.13, 6.93 s).
    starts = [f.words[0].start for f in got]
    for start, (onset, _) in zip(starts, TRUTH["segments"]["16000"], strict=True):
        assert start == pytest.approx(onset, abs=0.15)
    assert not any(isinstance(f, InputAudioFrame) for f in r.downstream)


async def test_phone_audio_with_builtin_endpointing() -> None:
    # 8 kHz mu-law and no VAD frames: PocketSphinx finds the utterances itself.
    stt = PocketSphinxSTTService(phrases=PHRASES, endpointing="builtin")
    r = await run_frames([stt], recording(8000), params=PHONE)
    got = [f.text for f in finals(r.downstream)]
    assert got[0] == EXPECTED[0] and got[2] == EXPECTED[2]
    # "six" loses its fricative at 8 kHz; the grammar still keeps the phrase's beginning.
    assert got[1].startswith("the number is four five")
    assert stt.utterances_decoded == 3


async def test_decoding_runs_in_a_worker_thread_on_a_real_clock() -> None:
    threads: list[int] = []

    class Spy(PocketSphinxSTTService):
        def decode(self, pcm: bytes) -> tuple:
            threads.append(threading.get_ident())
            return super().decode(pcm)

    r = await run_frames(
        [Spy(phrases=PHRASES)], with_vad(recording(16000), 16000), params=WIDE, clock=Clock()
    )
    assert [f.text for f in finals(r.downstream)] == EXPECTED
    assert threads and threading.get_ident() not in threads


async def test_interruption_and_pause_around_utterances() -> None:
    frames = with_vad(recording(16000), 16000)
    # An interruption in the middle of the first utterance loses nothing; audio while
    # transcription is paused (the whole second utterance) is never recognised.
    first_start = next(i for i, f in enumerate(frames) if isinstance(f, UserStartedSpeakingFrame))
    frames.insert(first_start + 40, InterruptionFrame())
    stops = [i for i, f in enumerate(frames) if isinstance(f, UserStoppedSpeakingFrame)]
    frames.insert(stops[1] + 1, ResumeRecordingFrame())
    frames.insert(stops[0] + 1, PauseRecordingFrame(reason="card number"))
    stt = PocketSphinxSTTService(phrases=PHRASES)
    r = await run_frames([stt], frames, params=WIDE)
    assert [f.text for f in finals(r.downstream)] == [EXPECTED[0], EXPECTED[2]]


async def test_keywords_are_spotted() -> None:
    stt = PocketSphinxSTTService(keywords=["order"])
    r = await run_frames([stt], with_vad(recording(16000), 16000), params=WIDE)
    got = finals(r.downstream)
    assert got and {f.text for f in got} == {"order"}
    assert got[0].words[0].start == pytest.approx(2.3, abs=0.4)  # "... with my order."


async def test_confidence_threshold_applies() -> None:
    stt = PocketSphinxSTTService(phrases=PHRASES, confidence_threshold=0.999)
    r = await run_frames([stt], with_vad(recording(16000), 16000), params=WIDE)
    assert len(finals(r.downstream)) < 3
    assert stt.dropped_low_confidence == 3 - len(finals(r.downstream))


async def test_unknown_grammar_word_is_a_fatal_error_naming_it() -> None:
    grammar = jsgf_from_phrases(["pay with blorptastic"])
    r = await run_frames([PocketSphinxSTTService(grammar=grammar)], [], params=WIDE, send_end=False)
    errors = r.of_type(ErrorFrame, FrameDirection.UPSTREAM)
    assert errors and errors[0].fatal and "blorptastic" in errors[0].error
    assert "extra_words" in errors[0].error


def test_extra_words_make_a_grammar_usable() -> None:
    stt = PocketSphinxSTTService(
        phrases=["pay with blorptastic"], extra_words={"blorptastic": "B L AO R P T AE S T IH K"}
    )
    decoder = stt.build_decoder()
    assert decoder.lookup_word("blorptastic") is not None


def test_grammar_helpers() -> None:
    g = jsgf_from_phrases(["Yes!", "No, thanks.", "yes"])
    assert g.splitlines()[-1] == "public <phrases> = yes | no thanks;"
    full = "#JSGF V1.0;\ngrammar m;\npublic <a> = [i want] (<b> | agent) {tag} /2/ please;\n<b> = pay my bill;\n"
    assert jsgf_words(full) == {"i", "want", "agent", "please", "pay", "my", "bill"}
    assert default_keyword_threshold("order") > default_keyword_threshold("check my balance")
    with pytest.raises(ValueError, match="at most one"):
        PocketSphinxSTTService(phrases=["a"], keywords=["b"])
