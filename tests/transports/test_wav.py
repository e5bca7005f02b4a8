"""WAV file transport: a caller recording in, what the caller heard out, on a virtual clock."""

from pathlib import Path

import numpy as np
import pytest

from voxpipe.audio import read_wav
from voxpipe.bench.interruption import ToneBot
from voxpipe.frames import TTSSpeakFrame, UserStoppedSpeakingFrame
from voxpipe.processors.base import FrameProcessor
from voxpipe.transports.params import TransportParams
from voxpipe.transports.wav import WavFileTransport, run_wav_call
from voxpipe.transports.wire import AudioFormat

DATA = Path(__file__).resolve().parents[1] / "data"

REPLY = 1.0
THINK = 0.3  # the fake bot's "LLM" time after the caller stops
TTS_FIRST = 0.025  # ToneBot's first audio frame comes 25 ms after it is asked


class Responder(FrameProcessor):
    """Answers every caller turn after THINK seconds (a stand-in for STT + LLM)."""

    async def process_frame(self, frame, direction):
        await self.push_frame(frame, direction)
        if isinstance(frame, UserStoppedSpeakingFrame):
            self.create_task(self._answer())

    async def _answer(self):
        await self.clock.sleep(THINK)
        await self.push_frame(TTSSpeakFrame("answer"))


def _bot(transport: WavFileTransport):
    tts = ToneBot(AudioFormat("pcm16", 16000), reply_secs=REPLY, speed=4.0)
    return [transport.input(), Responder(), tts, transport.output()]


def _loud(pcm: np.ndarray, rate: int, start: float, end: float) -> bool:
    x = pcm[round(start * rate) : round(end * rate)].astype(np.float64)
    return bool(x.size) and float(np.sqrt(np.mean(x * x))) > 1000


async def test_round_trip(tmp_path, truth):
    out = tmp_path / "heard.wav"
    result = await run_wav_call(_bot, DATA / "speech_16k.wav", out)
    stop = TransportParams().vad_params.stop_secs
    (a_on, a_off), (b_on, b_off), (c_on, c_off) = truth["segments"]["8000"]
    # The bot answers each turn; the caller's next turn interrupts the first two answers.
    answers = [off + stop + THINK + TTS_FIRST for off in (a_off, b_off, c_off)]
    assert result.interruptions == 2
    assert result.finished_by == "settled" and result.end_reason == "recording finished"
    wav = read_wav(out)
    assert (wav.sample_rate, wav.num_channels) == (8000, 1)  # the phone line's format
    assert wav.duration == pytest.approx(result.call_seconds, abs=0.03)
    # The call went on ~2 s (settle) after the last answer, not longer.
    assert result.call_seconds == pytest.approx(answers[2] + REPLY + 2.0, abs=0.1)
    pcm = np.frombuffer(wav.pcm, dtype="<i2")
    rate = wav.sample_rate
    # Bot audio exactly where the caller heard it...
    for start, cut_by in zip(answers, (b_on, c_on, None), strict=True):
        end = start + REPLY if cut_by is None else cut_by + 0.4  # cut at the interruption
        assert _loud(pcm, rate, start + 0.02, min(end, start + REPLY) - 0.12), start
    # ...cut where the caller interrupted, and silence everywhere else.
    assert not _loud(pcm, rate, 0.0, answers[0] - 0.02)
    assert not _loud(pcm, rate, b_on + 0.75, answers[1] - 0.02)
    assert not _loud(pcm, rate, c_on + 0.75, answers[2] - 0.02)
    assert not _loud(pcm, rate, answers[2] + REPLY + 0.03, result.call_seconds)
    heard = result.bot_seconds
    assert REPLY + 2 * 0.3 < heard < 3 * REPLY - 0.3
    # The bot's spoken text reached the end of the pipeline as heard.
    assert any(kind == "TTSTextFrame" for _, kind, _ in result.texts)


async def test_stereo_puts_the_caller_left_and_the_bot_right(tmp_path, truth):
    out = tmp_path / "both.wav"
    result = await run_wav_call(_bot, DATA / "speech_16k.wav", out, stereo=True)
    wav = read_wav(out)
    assert wav.num_channels == 2
    both = np.frombuffer(wav.pcm, dtype="<i2").reshape(-1, 2)
    left, right = both[:, 0].copy(), both[:, 1].copy()
    (a_on, a_off), *_ = truth["segments"]["8000"]
    assert _loud(left, 8000, a_on + 0.1, a_off - 0.1) and not _loud(right, 8000, a_on, a_off)
    first = a_off + 0.8 + THINK + TTS_FIRST
    assert _loud(right, 8000, first + 0.05, first + 0.5)
    assert result.call_seconds > 9.0


async def test_bounded_when_the_bot_never_finishes(tmp_path):
    class Chatterbox(FrameProcessor):
        """Keeps talking: a new answer every time the last one ends."""

        async def process_frame(self, frame, direction):
            await self.push_frame(frame, direction)
            if type(frame).__name__ in ("StartFrame", "BotStoppedSpeakingFrame"):
                await self.push_frame(TTSSpeakFrame("more"))

    def build(t):
        tts = ToneBot(AudioFormat("pcm16", 16000), reply_secs=0.5, speed=4.0)
        return [t.input(), Chatterbox(), tts, t.output()]

    result = await run_wav_call(
        build, DATA / "speech_16k.wav", tmp_path / "o.wav", max_tail_secs=3.0
    )
    assert result.finished_by == "max tail"
    assert result.call_seconds == pytest.approx(8.88 + 3.0, abs=0.6)


async def test_the_pipeline_must_use_the_transport(tmp_path):
    with pytest.raises(ValueError, match="transport.input"):
        await run_wav_call(
            lambda t: [FrameProcessor()], DATA / "speech_16k.wav", tmp_path / "x.wav"
        )
