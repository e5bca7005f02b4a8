"""Provider outages reach /metrics through the call's FrameCounter (ProviderOutageFrames that
leave the pipeline at either end)."""

from __future__ import annotations

from voxpipe.frames import ProviderOutageFrame
from voxpipe.server.metrics import FrameCounter, ServerMetrics


def test_outage_reports_are_counted_by_provider() -> None:
    metrics = ServerMetrics(active_calls=lambda: 0)
    counter = FrameCounter(metrics)
    counter.on_output(ProviderOutageFrame("stt", "deepgram", "down"))
    counter.on_output(ProviderOutageFrame("stt", "deepgram", "up", duration_s=15.2))
    counter.on_output(ProviderOutageFrame("tts", "elevenlabs", "down"))
    counter.on_output(ProviderOutageFrame("tts", "elevenlabs", "gave_up", duration_s=31.0))
    text = metrics.render().decode()
    assert 'voxpipe_provider_outages_total{provider="deepgram"} 1.0' in text
    assert 'voxpipe_provider_outages_total{provider="elevenlabs"} 1.0' in text
    assert 'voxpipe_provider_outage_seconds_sum{provider="deepgram"} 15.2' in text
    assert 'voxpipe_provider_outage_seconds_bucket{le="20.0",provider="deepgram"} 1.0' in text
    assert 'voxpipe_provider_outage_seconds_bucket{le="30.0",provider="elevenlabs"} 0.0' in text
    assert 'voxpipe_outage_calls_ended_total{provider="elevenlabs"} 1.0' in text
    assert 'voxpipe_outage_calls_ended_total{provider="deepgram"}' not in text
