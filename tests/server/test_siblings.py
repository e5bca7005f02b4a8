"""Merging the workers' /metrics (issue 15): counters, gauges and histogram buckets add up,
``*_created`` keeps the earliest; and the worker registry without Redis: no overflow."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.server.conftest import servers
from voxpipe.server.siblings import merge_metrics
from voxpipe.server.worker_registry import WorkerRegistry


def _worker(calls: int, started: dict[str, int], latencies: list[float]) -> str:
    reg = CollectorRegistry()
    Gauge("voxpipe_active_calls", "Calls.", registry=reg).set(calls)
    c = Counter("voxpipe_calls_started", "Started.", ["carrier"], registry=reg)
    for carrier, n in started.items():
        c.labels(carrier).inc(n)
    h = Histogram("voxpipe_stage_latency_seconds", "Lat.", buckets=(0.1, 1.0), registry=reg)
    for x in latencies:
        h.observe(x)
    return generate_latest(reg).decode()


def test_workers_metrics_add_up() -> None:
    a = _worker(3, {"twilio": 5}, [0.05, 0.5])
    b = _worker(4, {"twilio": 2, "telnyx": 1}, [2.0])
    merged = {f.name: f for f in text_string_to_metric_families(merge_metrics([a, b]).decode())}
    (active,) = merged["voxpipe_active_calls"].samples
    assert active.value == 7
    started = {
        s.labels["carrier"]: s.value
        for s in merged["voxpipe_calls_started"].samples
        if s.name.endswith("_total")
    }
    assert started == {"twilio": 7, "telnyx": 1}
    hist = {
        (s.name, s.labels.get("le")): s.value
        for s in merged["voxpipe_stage_latency_seconds"].samples
    }
    assert hist[("voxpipe_stage_latency_seconds_bucket", "0.1")] == 1
    assert hist[("voxpipe_stage_latency_seconds_bucket", "1.0")] == 2
    assert hist[("voxpipe_stage_latency_seconds_bucket", "+Inf")] == 3
    assert hist[("voxpipe_stage_latency_seconds_count", None)] == 3
    created = {
        f.name: [s.value for s in f.samples] for f in merged.values() if f.name.endswith("_created")
    }
    originals = [
        s.value
        for text in (a, b)
        for f in text_string_to_metric_families(text)
        if f.name == "voxpipe_calls_started_created"
        for s in f.samples
        if s.labels["carrier"] == "twilio"
    ]
    assert min(originals) in created["voxpipe_calls_started_created"]


async def test_an_unreachable_redis_means_no_overflow() -> None:
    port = servers.free_port()  # nothing listens there
    registry = WorkerRegistry(
        Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1),
        prefix="voxpipe-test:",
        url="https://me.example",
        heartbeat_s=1.0,
        load=lambda: {"capacity": 1, "held_slots": 1, "draining": False},
    )
    try:
        assert await registry.publish() is False
        assert await registry.find_room() is None
    finally:
        await registry.stop()
