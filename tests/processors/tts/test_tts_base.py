"""TTSService with an in-process provider on the virtual clock: order, words, interruption."""

from __future__ import annotations

import numpy as np
import pytest

from voxpipe.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioFrame,
    TextFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from voxpipe.pipelines.task import TaskParams
from voxpipe.processors.tts.base import TTSService
from voxpipe.processors.tts.reply import TTSReply
from voxpipe.processors.tts.words import TimedWord
from voxpipe.testing import Sleep, run_frames

RATE = 8000
CHAR_S = 0.01  # 10 ms of audio per character
PARAMS = TaskParams(audio_out_sample_rate=RATE)


class ToneTTS(TTSService):
    """Renders each character as 10 ms of PCM16: word k of the call is samples of value k."""

    def __init__(self, latency: float = 0.1, fail_on: str | None = None) -> None:
        super().__init__()
        self.latency = latency
        self.fail_on = fail_on
        self.received: list[tuple[float, str]] = []  # (clock time, sentence)
        self.interrupted: list[int] = []
        self.word_id = 0

    async def synthesize(self, text: str, reply: TTSReply) -> None:
        self.received.append((self.clock.now(), text))
        await self.clock.sleep(self.latency)
        if self.fail_on is not None and self.fail_on in text:
            raise RuntimeError("provider exploded")
        n = int(CHAR_S * RATE)
        samples: list[int] = []
        words = []
        for token in text.split(" "):
            self.word_id += 1
            start = len(samples) / RATE
            samples += [self.word_id] * (n * len(token))
            words.append(TimedWord(token, start, len(samples) / RATE))
            samples += [0] * n  # the space
        audio = np.array(samples, dtype="<i2").tobytes()
        half = len(audio) // 2 // 2 * 2  # two chunks; a word may span them
        reply.push_audio(audio[:half], RATE, words=words)
        reply.push_audio(audio[half:], RATE)

    async def on_reply_interrupted(self, reply: TTSReply) -> None:
        self.interrupted.append(reply.index)


def texts(frames: list[Frame], cls: type = TTSTextFrame) -> list[str]:
    return [f.text for f in frames if type(f) is cls]


def check_words_follow_their_audio(frames: list[Frame]) -> None:
    """At each TTSTextFrame, word k's audio has all been pushed and none of word k+1's."""
    heard: list[np.ndarray] = []
    k = 0
    for f in frames:
        if isinstance(f, OutputAudioFrame):
            heard.append(np.frombuffer(f.audio, dtype="<i2"))
        elif isinstance(f, TTSTextFrame):
            k += 1
            pushed = np.concatenate(heard) if heard else np.zeros(0, np.int16)
            values = set(np.unique(pushed)) - {0}
            assert max(values, default=0) == k, f"word {k} ({f.text!r}) came at the wrong place"
            assert np.count_nonzero(pushed == k) > 0


async def test_reply_order_and_each_word_after_its_audio() -> None:
    tts = ToneTTS()
    r = await run_frames(
        [tts],
        [
            LLMResponseStartFrame(),
            LLMTextFrame("Hello there."),
            LLMTextFrame(" How are"),
            LLMTextFrame(" you today?"),
            LLMResponseEndFrame(),
            TextFrame("after"),
        ],
        params=PARAMS,
    )
    kinds = [type(f).__name__ for f in r.downstream if not isinstance(f, MetricsFrame)]
    compact = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert compact[:3] == ["LLMResponseStartFrame", "TTSStartedFrame", "OutputAudioFrame"]
    assert compact[-4:] == ["TTSStoppedFrame", "LLMResponseEndFrame", "TextFrame", "EndFrame"]
    assert texts(r.downstream) == ["Hello", "there.", "How", "are", "you", "today?"]
    assert [t for _, t in tts.received] == ["Hello there.", "How are you today?"]
    check_words_follow_their_audio(r.downstream)
    audio = r.of_type(OutputAudioFrame)
    assert all(a.sample_rate == RATE and a.encoding == "pcm16" for a in audio)


async def test_sentences_reach_the_provider_as_soon_as_complete() -> None:
    tts = ToneTTS(latency=0.05)
    r = await run_frames(
        [tts],
        [
            LLMResponseStartFrame(),
            LLMTextFrame("Sure. Your balance"),
            Sleep(2.0),  # a slow LLM
            LLMTextFrame(" is ten dollars."),
            LLMResponseEndFrame(),
        ],
        params=PARAMS,
    )
    (t1, s1), (t2, s2) = tts.received
    assert (s1, s2) == ("Sure.", "Your balance is ten dollars.")
    assert t1 < 0.01 and t2 >= 2.0
    # The first sentence was heard before the LLM finished.
    first_audio = r.downstream_times[
        next(i for i, f in enumerate(r.downstream) if isinstance(f, OutputAudioFrame))
    ]
    assert first_audio < 1.0


async def test_tts_speak_frame_is_spoken_as_is() -> None:
    tts = ToneTTS()
    r = await run_frames([tts], [TTSSpeakFrame("Hello, thanks for calling.")], params=PARAMS)
    assert texts(r.downstream) == ["Hello,", "thanks", "for", "calling."]
    assert r.types()[0] == "TTSStartedFrame"
    assert [type(f) for f in r.downstream][-2:] == [TTSStoppedFrame, EndFrame]
    assert not any(isinstance(f, TTSSpeakFrame) for f in r.downstream)


async def test_speak_frame_inside_a_reply_is_part_of_it() -> None:
    # An LLM's spoken fallback line arrives between its response frames.
    r = await run_frames(
        [ToneTTS()],
        [LLMResponseStartFrame(), TTSSpeakFrame("Sorry, say again?"), LLMResponseEndFrame()],
        params=PARAMS,
    )
    assert sum(isinstance(f, TTSStartedFrame) for f in r.downstream) == 1
    assert texts(r.downstream) == ["Sorry,", "say", "again?"]


async def test_interruption_stops_the_reply_and_drops_queued_output() -> None:
    tts = ToneTTS(latency=0.2)
    long_reply = " ".join(f"Sentence number {i}." for i in range(10))
    r = await run_frames(
        [tts],
        [
            LLMResponseStartFrame(),
            LLMTextFrame(long_reply),
            Sleep(0.3),  # the first sentence is out, the rest queued behind the provider
            InterruptionFrame(),
            TTSSpeakFrame("Okay."),
            LLMResponseEndFrame(),  # late frame of the interrupted response
        ],
        params=PARAMS,
    )
    out = r.downstream
    cut = next(i for i, f in enumerate(out) if isinstance(f, InterruptionFrame))
    assert texts(out[cut:]) == ["Okay."], "nothing from before the interruption after it"
    assert 0 < len(texts(out[:cut])) < 10
    assert tts.interrupted == [1]
    after = [f for f in out[cut:] if isinstance(f, OutputAudioFrame)]
    assert after and len(b"".join(f.audio for f in after)) == 2 * int(
        0.06 * RATE
    )  # "Okay." + space


async def test_provider_error_is_reported_and_unspoken_words_are_not_said() -> None:
    tts = ToneTTS(fail_on="Second")
    r = await run_frames(
        [tts],
        [LLMResponseStartFrame(), LLMTextFrame("First one. Second one."), LLMResponseEndFrame()],
        params=PARAMS,
    )
    errors = r.of_type(ErrorFrame, FrameDirection.UPSTREAM)
    assert errors and "provider exploded" in errors[0].error and not errors[0].fatal
    assert texts(r.downstream) == ["First", "one."]
    assert sum(isinstance(f, TTSStoppedFrame) for f in r.downstream) == 1


async def test_text_without_response_frames_is_closed_by_the_next_frame() -> None:
    r = await run_frames(
        [ToneTTS()], [LLMTextFrame("Hi there"), TextFrame("marker")], params=PARAMS
    )
    assert texts(r.downstream) == ["Hi", "there"]
    assert texts(r.downstream, TextFrame) == ["marker"]
    kinds = r.types()
    assert kinds.index("TTSStoppedFrame") < kinds.index("TextFrame")


async def test_time_to_first_audio_metric() -> None:
    r = await run_frames([ToneTTS(latency=0.25)], [TTSSpeakFrame("Hello.")], params=PARAMS)
    ttfb = [m for m in r.of_type(MetricsFrame) if m.metric == "ttfb"]
    assert len(ttfb) == 1 and ttfb[0].value == pytest.approx(0.25)


async def test_idle_frames_pass_straight_through() -> None:
    tts = ToneTTS()
    r = await run_frames([tts], [TextFrame("a"), TextFrame("b")], params=PARAMS)
    assert texts(r.downstream, TextFrame) == ["a", "b"]
    assert tts.received == []
