import asyncio

import numpy as np
import pytest

from voxpipe.processors.vad import BatchedVAD, SileroVADModel, SileroVADStream, window_samples


def _stream_windows(pcm: bytes, rate: int, offset_s: float, n: int) -> list[bytes]:
    size = 2 * window_samples(rate)
    start = int(offset_s * rate) * 2
    return [pcm[start + i * size : start + (i + 1) * size] for i in range(n)]


def test_batched_equals_unbatched(speech):
    rate = speech.sample_rate
    batched = BatchedVAD()
    n_streams, n_windows = 12, 60
    # Each stream starts at a different place in the recording: speech, silence, onsets.
    feeds = [_stream_windows(speech.pcm, rate, 0.37 * i, n_windows) for i in range(n_streams)]
    alone = [SileroVADStream(rate) for _ in range(n_streams)]
    together = [batched.stream(rate) for _ in range(n_streams)]
    expected = np.array(
        [[s.probability(w) for w in ws] for s, ws in zip(alone, feeds, strict=True)]
    )
    got = np.array(
        [batched.run_batch(together, [ws[k] for ws in feeds]) for k in range(n_windows)]
    ).T
    assert expected.max() > 0.9 and expected.min() < 0.1
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert batched.batches == n_windows and batched.windows == n_windows * n_streams


def test_streams_move_between_batched_and_alone(speech_16k):
    batched = BatchedVAD()
    feeds = [_stream_windows(speech_16k.pcm, 16000, 0.5 + 0.3 * i, 30) for i in range(3)]
    ref = [SileroVADStream(16000) for _ in feeds]
    expected = [[s.probability(w) for w in ws] for s, ws in zip(ref, feeds, strict=True)]
    mixed = [SileroVADStream(16000) for _ in feeds]
    got: list[list[float]] = [[], [], []]
    for k in range(30):
        if k % 3 == 0:  # every third window each stream runs alone
            for i, s in enumerate(mixed):
                got[i].append(s.probability(feeds[i][k]))
        else:
            for i, p in enumerate(batched.run_batch(mixed, [ws[k] for ws in feeds])):
                got[i].append(p)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_mixed_rates_and_split_batches(speech_8k, speech_16k):
    batched = BatchedVAD(max_batch=3)
    rates = [8000, 16000, 8000, 16000, 8000, 8000, 8000]
    pcms = {8000: speech_8k.pcm, 16000: speech_16k.pcm}
    feeds = [_stream_windows(pcms[r], r, 0.6 + 0.1 * i, 8) for i, r in enumerate(rates)]
    alone = [SileroVADStream(r) for r in rates]
    together = [SileroVADStream(r) for r in rates]
    expected = [[s.probability(w) for w in ws] for s, ws in zip(alone, feeds, strict=True)]
    got = [batched.run_batch(together, [ws[k] for ws in feeds]) for k in range(8)]
    np.testing.assert_allclose(np.array(got).T, expected, atol=1e-5)
    # Per round: 5 streams at 8 kHz in batches of 3 (2 inferences) + 2 at 16 kHz (1).
    assert batched.batches == 8 * 3


def test_run_batch_rejects_misuse():
    batched = BatchedVAD()
    s = batched.stream(8000)
    with pytest.raises(ValueError, match="same stream twice"):
        batched.run_batch([s, s], [bytes(512), bytes(512)])
    with pytest.raises(ValueError, match="2 streams but 1 windows"):
        batched.run_batch([s, batched.stream(8000)], [bytes(512)])
    with pytest.raises(ValueError, match="256 samples"):
        batched.run_batch([s, batched.stream(8000)], [bytes(512), bytes(500)])
    assert batched.run_batch([], []) == []


async def test_async_calls_in_one_tick_share_an_inference(speech_8k):
    batched = BatchedVAD(SileroVADModel.shared())
    n_streams, n_windows = 16, 25
    feeds = [_stream_windows(speech_8k.pcm, 8000, 0.29 * i, n_windows) for i in range(n_streams)]
    ref = [SileroVADStream(8000) for _ in feeds]
    expected = [[s.probability(w) for w in ws] for s, ws in zip(ref, feeds, strict=True)]

    async def call(i: int) -> list[float]:
        stream = batched.stream(8000)
        return [await batched.probability(stream, w) for w in feeds[i]]

    got = await asyncio.gather(*(call(i) for i in range(n_streams)))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # All calls advance in lockstep, so each tick's windows ran as one inference.
    assert batched.batches == n_windows
    assert batched.windows == n_streams * n_windows


async def test_async_same_stream_twice_runs_in_order(speech_8k):
    batched = BatchedVAD()
    ws = _stream_windows(speech_8k.pcm, 8000, 0.6, 4)
    ref = SileroVADStream(8000)
    expected = [ref.probability(w) for w in ws]
    stream = batched.stream(8000)
    got = await asyncio.gather(*(batched.probability(stream, w) for w in ws))
    assert list(got) == pytest.approx(expected, abs=1e-5)
    assert batched.batches == 4


async def test_async_cancelled_window_does_not_advance_the_stream(speech_8k):
    batched = BatchedVAD()
    ws = _stream_windows(speech_8k.pcm, 8000, 0.6, 3)
    stream = batched.stream(8000)
    task = asyncio.ensure_future(batched.probability(stream, ws[0]))
    await asyncio.sleep(0)  # let the task queue its window
    task.cancel()
    p = await batched.probability(stream, ws[1])
    ref = SileroVADStream(8000)
    assert p == pytest.approx(ref.probability(ws[1]), abs=1e-6)
    assert task.cancelled()


async def test_async_bad_window_fails_its_caller_only():
    batched = BatchedVAD()
    with pytest.raises(ValueError, match="256 samples"):
        await batched.probability(batched.stream(8000), bytes(100))
    assert await batched.probability(batched.stream(8000), bytes(512)) < 0.5


@pytest.mark.parametrize("gather_s, batches", [(0.0, 2), (0.05, 1)])
async def test_gather_joins_windows_of_later_ticks(speech_8k, gather_s, batches):
    # Two calls whose windows come a few ticks apart: held for gather_s, they share one
    # inference; without it each tick runs its own.
    batched = BatchedVAD(gather_s=gather_s)
    feeds = _stream_windows(speech_8k.pcm, 8000, 0.5, 2)
    a, b = batched.stream(8000), batched.stream(8000)
    first = asyncio.ensure_future(batched.probability(a, feeds[0]))
    for _ in range(3):
        await asyncio.sleep(0)  # the first window's tick passes (its batch ran, or is held)
    second = await batched.probability(b, feeds[1])
    assert await first == pytest.approx(SileroVADStream(8000).probability(feeds[0]), abs=1e-5)
    assert second == pytest.approx(SileroVADStream(8000).probability(feeds[1]), abs=1e-5)
    assert batched.batches == batches and batched.windows == 2


def test_gather_must_not_be_negative():
    with pytest.raises(ValueError, match="gather_s"):
        BatchedVAD(gather_s=-0.01)
