import asyncio

import numpy as np
import pytest

from voxpipe.audio import mulaw_to_pcm16, pcm16_to_mulaw, resample_pcm16
from voxpipe.processors.vad import BatchedVAD, VADAnalyzer, VADEvent, VADParams, VADState

TOLERANCE = 0.100  # seconds between a reported speech onset/offset and the truth


def _feed(analyzer: VADAnalyzer, pcm: bytes, chunk: int) -> list[VADEvent]:
    events: list[VADEvent] = []
    for i in range(0, len(pcm), chunk):
        events += analyzer.analyze(pcm[i : i + chunk])
    return events


def _with_tail(pcm: bytes, rate: int, seconds: float = 1.0) -> bytes:
    # The recording ends 0.7 s after the last word; add silence so the last stop is reached.
    return pcm + bytes(2 * int(rate * seconds))


def _check_segments(events: list[VADEvent], segments: list[list[float]], params: VADParams):
    assert [e.kind for e in events] == ["started", "stopped"] * len(segments)
    for (start, stop), (on, off) in zip(
        zip(events[::2], events[1::2], strict=True), segments, strict=True
    ):
        assert abs(start.speech_time - on) <= TOLERANCE, (start, on)
        assert abs(stop.speech_time - off) <= TOLERANCE, (stop, off)
        # Decisions come start_secs / stop_secs (rounded up to whole windows) after the speech.
        assert params.start_secs <= start.time - start.speech_time < params.start_secs + 0.033
        assert params.stop_secs <= stop.time - stop.speech_time < params.stop_secs + 0.033


def test_finds_speech_segments(speech):
    rate = speech.sample_rate
    params = VADParams()
    analyzer = VADAnalyzer(rate, params)
    events = _feed(analyzer, _with_tail(speech.pcm, rate), chunk=2 * rate // 50)  # 20 ms
    _check_segments(events, speech.segments, params)
    assert analyzer.state is VADState.QUIET and not analyzer.speaking


def test_chunk_size_does_not_matter(speech_16k):
    pcm = _with_tail(speech_16k.pcm, 16000)
    reference = _feed(VADAnalyzer(16000), pcm, chunk=640)
    rng = np.random.default_rng(5)
    analyzer = VADAnalyzer(16000)
    events, i = [], 0
    while i < len(pcm):
        n = int(rng.integers(1, 3000))  # odd sizes too: a sample may straddle two chunks
        events += analyzer.analyze(pcm[i : i + n])
        i += n
    assert events == reference


def test_phone_line_mulaw_8k(speech_8k):
    # What a Twilio call delivers: 8 kHz mu-law in 20 ms frames, decoded to PCM16.
    mulaw = pcm16_to_mulaw(_with_tail(speech_8k.pcm, 8000))
    analyzer = VADAnalyzer(8000)
    events = []
    for i in range(0, len(mulaw), 160):
        events += analyzer.analyze(mulaw_to_pcm16(mulaw[i : i + 160]))
    _check_segments(events, speech_8k.segments, analyzer.params)


def test_other_rates_are_resampled(speech_16k):
    pcm = resample_pcm16(_with_tail(speech_16k.pcm, 16000), 16000, 48000)
    analyzer = VADAnalyzer(48000)
    assert analyzer.stream.sample_rate == 16000
    events = _feed(analyzer, pcm, chunk=1920)  # 20 ms at 48 kHz
    _check_segments(events, speech_16k.segments, analyzer.params)


def test_volume_gate(speech_16k):
    # 30 dB down the speech sits near -55 dBFS: the model still hears it, the gate does not.
    x = np.frombuffer(_with_tail(speech_16k.pcm, 16000), "<i2").astype(np.float64)
    quiet = np.rint(x * 10 ** (-30 / 20)).astype("<i2").tobytes()
    assert _feed(VADAnalyzer(16000), quiet, 640) == []
    ungated = _feed(VADAnalyzer(16000, VADParams(min_volume=0.0)), quiet, 640)
    assert [e.kind for e in ungated] == ["started", "stopped"] * 3


def test_short_sounds_do_not_start(speech_16k):
    rng = np.random.default_rng(9)
    burst = rng.normal(0, 8000, 16000).clip(-32768, 32767).astype("<i2").tobytes()  # 1 s noise
    word_piece = speech_16k.pcm[int(0.9 * 16000) * 2 : int(1.02 * 16000) * 2]  # 120 ms of speech
    pcm = bytes(16000) + burst + bytes(32000) + word_piece + bytes(32000)
    analyzer = VADAnalyzer(16000)
    assert _feed(analyzer, pcm, 640) == []
    assert analyzer.state is VADState.QUIET
    # The same 120 ms does start a turn when the start duration allows it.
    fast = VADAnalyzer(16000, VADParams(start_secs=0.064))
    assert [e.kind for e in _feed(fast, pcm, 640)] == ["started", "stopped"]


def test_states_and_reset(speech_16k):
    analyzer = VADAnalyzer(16000)
    (on, off), _ = speech_16k.segments[0], speech_16k.segments[1]
    seen = []
    pcm = speech_16k.pcm
    for i in range(0, int((off + 0.5) * 16000) * 2, 1024):
        analyzer.analyze(pcm[i : i + 1024])
        if not seen or seen[-1] is not analyzer.state:
            seen.append(analyzer.state)
    assert seen[:3] == [VADState.QUIET, VADState.STARTING, VADState.SPEAKING]
    assert seen[-1] is VADState.STOPPING and analyzer.speaking
    assert analyzer.stream_time == pytest.approx(analyzer.windows * 0.032)
    analyzer.reset()
    assert analyzer.state is VADState.QUIET and analyzer.windows == 0
    events = _feed(analyzer, _with_tail(pcm, 16000), 640)
    assert events[0].kind == "started" and abs(events[0].speech_time - on) <= TOLERANCE


async def test_async_with_batching_matches_sync(speech):
    rate = speech.sample_rate
    pcm = _with_tail(speech.pcm, rate)
    chunk = 2 * rate // 50
    # Calls that joined at different moments, so their speech does not line up.
    feeds = [bytes(2 * int(rate * 0.13 * i)) + pcm for i in range(6)]
    expected = [_feed(VADAnalyzer(rate), f, chunk) for f in feeds]
    batched = BatchedVAD()
    analyzers = [VADAnalyzer(rate, batched=batched) for _ in feeds]

    async def call(a: VADAnalyzer, data: bytes) -> list[VADEvent]:
        events: list[VADEvent] = []
        for i in range(0, len(data), chunk):
            events += await a.analyze_async(data[i : i + chunk])
        return events

    got = await asyncio.gather(*(call(a, f) for a, f in zip(analyzers, feeds, strict=True)))
    assert got == expected
    assert all(len(e) == 6 for e in got)
    assert batched.windows / batched.batches > 4  # calls really shared inferences


async def test_async_without_batcher_runs_inline(speech_8k):
    analyzer = VADAnalyzer(8000)
    events = await analyzer.analyze_async(_with_tail(speech_8k.pcm, 8000))
    _check_segments(events, speech_8k.segments, analyzer.params)


def test_params_validation():
    with pytest.raises(ValueError, match="confidence"):
        VADParams(confidence=1.5)
    with pytest.raises(ValueError, match="min_volume"):
        VADParams(min_volume=-0.1)
    with pytest.raises(ValueError, match="stop_secs"):
        VADParams(stop_secs=-1)
