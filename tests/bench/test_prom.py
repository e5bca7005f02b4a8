"""The benches read histograms from a server's /metrics text."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from voxpipe.bench.prom import histogram_summary


def _exposition() -> str:
    registry = CollectorRegistry()
    h = Histogram(
        "voxpipe_stage_latency_seconds",
        "x",
        ["stage", "metric"],
        buckets=(0.01, 0.05, 0.1, 1.0),
        registry=registry,
    )
    for v in (0.02, 0.04, 0.07):
        h.labels("TwilioInput", "turn_decision").observe(v)
    h.labels("OpenAILLM", "ttfb").observe(5.0)  # another series, beyond the last bucket
    return generate_latest(registry).decode()


def test_a_labelled_series_is_read_alone() -> None:
    found = histogram_summary(
        _exposition(), "voxpipe_stage_latency_seconds", {"metric": "turn_decision"}
    )
    assert found.count == 3
    assert math.isclose(found.mean, (0.02 + 0.04 + 0.07) / 3)
    assert found.max_under == 0.1  # the first bucket holding all three


def test_all_series_beyond_the_last_bucket_and_absent_names() -> None:
    every = histogram_summary(_exposition(), "voxpipe_stage_latency_seconds")
    assert every.count == 4 and math.isinf(every.max_under)
    none = histogram_summary(_exposition(), "voxpipe_gc_sweep_seconds")
    assert (none.count, none.mean, none.max_under) == (0, 0.0, 0.0)
