"""Backchannels and interruptions reach /metrics through the call's FrameCounter."""

from __future__ import annotations

from voxpipe.frames import BackchannelFrame, InterruptionFrame
from voxpipe.server.metrics import FrameCounter, ServerMetrics


def test_backchannels_and_interruptions_are_counted() -> None:
    metrics = ServerMetrics(active_calls=lambda: 0)
    counter = FrameCounter(metrics)
    text = metrics.render().decode()
    assert 'voxpipe_bot_overlaps_total{outcome="backchannel"} 0.0' in text
    for _ in range(3):
        counter.on_output(BackchannelFrame(text="uh-huh", paused=True))
    counter.on_output(InterruptionFrame())
    text = metrics.render().decode()
    assert 'voxpipe_bot_overlaps_total{outcome="backchannel"} 3.0' in text
    assert 'voxpipe_bot_overlaps_total{outcome="interruption"} 1.0' in text
