"""StreamTimeline: an STT's word times (seconds of audio it was given) on the call's clock."""

from __future__ import annotations

import pytest

from voxpipe.frames import InputAudioFrame
from voxpipe.processors.stt.timeline import StreamTimeline


def chunk() -> InputAudioFrame:
    return InputAudioFrame(b"\0" * 320, sample_rate=8000)  # 20 ms of 8 kHz pcm16


def test_word_times_map_through_the_arrival_of_the_audio_and_pauses_start_a_new_segment() -> None:
    tl = StreamTimeline()
    assert tl.call_time(0.5) is None  # no audio yet
    # The call's audio starts arriving at 10.0 s on the call clock: 1 s of it, in real time.
    for i in range(1, 51):
        tl.add(chunk(), 10.0 + i * 0.02)
    assert tl.call_time(0.5) == pytest.approx(10.5)
    tl.gap()  # transcription paused for 30 s: the STT's time stood still
    for i in range(1, 51):
        tl.add(chunk(), 41.0 + i * 0.02)
    assert tl.sent_s == pytest.approx(2.0)
    assert tl.call_time(0.5) == pytest.approx(10.5)  # before the pause: unchanged
    assert tl.call_time(1.25) == pytest.approx(41.25)  # after it: on the new segment


def test_network_jitter_only_delays_chunks_so_the_least_delayed_one_anchors() -> None:
    tl = StreamTimeline()
    delays = [0.08, 0.0, 0.15, 0.02, 0.0, 0.3] * 5  # late arrivals, some bunched
    for i, late in enumerate(delays, start=1):
        tl.add(chunk(), 5.0 + i * 0.02 + late)
    assert tl.call_time(0.3) == pytest.approx(5.3)
