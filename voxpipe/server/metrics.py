"""Server metrics in Prometheus text format: calls, frames, wire traffic, per-stage latencies.

Hot-path counts (frames, wire messages) are plain integers bumped by the calls and read by a
collector when ``/metrics`` is scraped, so a call pays an integer increment per frame, not a
lock. Latencies come from the MetricsFrames processors push (TTFB, processing time); provider
outages from the ProviderOutageFrames the provider services push (they leave the pipeline at
one of its ends, where the call's FrameCounter sees them).
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from voxpipe.frames import (
    BackchannelFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    MetricsFrame,
    ProviderOutageFrame,
)
from voxpipe.pipelines.observer import Observer
from voxpipe.processors.aggregators.preemptive import PREEMPTIVE_METRIC
from voxpipe.processors.turn.gate import TURN_SHED_METRIC

__all__ = ["CONTENT_TYPE", "FrameCounter", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Processor names carry an instance number ("DeepgramSTT#12"): one label value per class.
_INSTANCE = re.compile(r"#\d+$")
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
_GC_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
_OUTAGE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0)


def stage_name(processor: str) -> str:
    """A processor's name without its instance number, for a bounded label set."""
    return _INSTANCE.sub("", processor)[:64] or "unknown"


class ServerMetrics:
    """Everything ``/metrics`` shows for one server (its own registry, so apps do not collide)."""

    def __init__(self, active_calls: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self._active_calls = active_calls
        self.frames_in = 0  # frames that entered calls (from wires, or queued)
        self.frames_out = 0  # frames that left pipelines at either end
        self.calls_started: Tally[str] = Tally()  # by carrier
        self.calls_refused: Tally[tuple[str, str]] = Tally()  # (carrier, reason)
        self.calls_ended: Tally[tuple[str, str]] = Tally()  # (carrier, how)
        self.wire_in: Tally[str] = Tally()
        self.wire_out: Tally[str] = Tally()
        self.wire_errors: Tally[str] = Tally()
        self.webhooks: Tally[tuple[str, str]] = Tally()  # (route, outcome)
        # Caller speech over the bot: "backchannel" (the bot went on) or "interruption".
        self.overlaps: Tally[str] = Tally()
        self.stage_latency = Histogram(
            "voxpipe_stage_latency_seconds",
            "Per-stage latency reported by processors (metric: ttfb or processing).",
            ["stage", "metric"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "voxpipe_llm_tokens",
            "LLM tokens used, from the usage the provider reports (kind: prompt or completion).",
            ["stage", "kind"],
            registry=self.registry,
        )
        self.preemptive_replies = Counter(
            "voxpipe_preemptive_replies",
            "Replies prepared before the caller's turn was confirmed (outcome: started, used, "
            "or discarded unheard: an LLM request spent for nothing).",
            ["outcome"],
            registry=self.registry,
        )
        # --- provider outages (issue 18) ---
        self.provider_outages = Counter(
            "voxpipe_provider_outages",
            "Provider outages calls went through (the provider unreachable after a retry).",
            ["provider"],
            registry=self.registry,
        )
        self.provider_outage_seconds = Histogram(
            "voxpipe_provider_outage_seconds",
            "How long provider outages lasted, from the loss to the recovery or the give-up.",
            ["provider"],
            buckets=_OUTAGE_BUCKETS,
            registry=self.registry,
        )
        self.outage_calls_ended = Counter(
            "voxpipe_outage_calls_ended",
            "Calls ended because a provider stayed down past PROVIDER_OUTAGE_GRACE_S.",
            ["provider"],
            registry=self.registry,
        )
        # --- memory over time (issue 15): full collections of ended calls' cycles ---
        self.turn_shed = Counter(
            "voxpipe_turn_decisions_shed",
            "Smart Turn decisions skipped because the worker's inference thread was too far "
            "behind (TURN_SHED_AFTER_S); those turns ended on the VAD-only silence.",
            registry=self.registry,
        )
        self.gc_sweep_seconds = Histogram(
            "voxpipe_gc_sweep_seconds",
            "How long each full garbage collection after ended calls held the event loop.",
            buckets=_GC_BUCKETS,
            registry=self.registry,
        )
        self.gc_freed = Counter(
            "voxpipe_gc_freed_objects",
            "Objects the full garbage collections after ended calls freed.",
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))

    def gc_sweep(self, seconds: float, freed: int) -> None:
        """Record one full collection: its duration and the objects it freed."""
        self.gc_sweep_seconds.observe(seconds)
        self.gc_freed.inc(freed)

    def outage(self, frame: ProviderOutageFrame) -> None:
        """Count one outage report (down: an outage; up / gave_up: its length)."""
        provider = stage_name(frame.provider)
        if frame.state == "down":
            self.provider_outages.labels(provider).inc()
            return
        if frame.state in ("up", "gave_up"):
            self.provider_outage_seconds.labels(provider).observe(max(frame.duration_s, 0.0))
        if frame.state == "gave_up":
            self.outage_calls_ended.labels(provider).inc()

    def observe(self, frame: MetricsFrame) -> None:
        """Feed one MetricsFrame into the latency histogram (token counts into their counter)."""
        if frame.metric == TURN_SHED_METRIC:
            self.turn_shed.inc()
            return
        if frame.metric.startswith(PREEMPTIVE_METRIC):
            outcome = frame.metric.removeprefix(PREEMPTIVE_METRIC)[:16]
            self.preemptive_replies.labels(outcome).inc(max(frame.value, 0))
            return
        if frame.metric.endswith("_tokens"):
            kind = frame.metric.removesuffix("_tokens")[:32]
            self.tokens.labels(stage_name(frame.processor), kind).inc(max(frame.value, 0))
            return
        if frame.value >= 0:
            self.stage_latency.labels(stage_name(frame.processor), frame.metric[:32]).observe(
                frame.value
            )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Reads the plain counters at scrape time."""

    def __init__(self, m: ServerMetrics) -> None:
        self._m = m

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        m = self._m
        yield GaugeMetricFamily(
            "voxpipe_active_calls", "Calls with a live pipeline.", value=m._active_calls()
        )
        frames = CounterMetricFamily(
            "voxpipe_frames_processed",
            "Frames that entered or left call pipelines.",
            labels=["way"],
        )
        frames.add_metric(["in"], m.frames_in)
        frames.add_metric(["out"], m.frames_out)
        yield frames
        started = CounterMetricFamily("voxpipe_calls_started", "Calls started.", labels=["carrier"])
        for carrier, n in sorted(m.calls_started.items()):
            started.add_metric([carrier], n)
        yield started
        refused = CounterMetricFamily(
            "voxpipe_calls_refused",
            "Streams refused before a call started.",
            labels=["carrier", "reason"],
        )
        for (carrier, reason), n in sorted(m.calls_refused.items()):
            refused.add_metric([carrier, reason], n)
        yield refused
        ended = CounterMetricFamily(
            "voxpipe_calls_ended", "Calls ended, by how.", labels=["carrier", "how"]
        )
        for (carrier, how), n in sorted(m.calls_ended.items()):
            ended.add_metric([carrier, how], n)
        yield ended
        wire = CounterMetricFamily(
            "voxpipe_wire_messages",
            "Websocket messages by carrier and direction.",
            labels=["carrier", "direction"],
        )
        for carrier, n in sorted(m.wire_in.items()):
            wire.add_metric([carrier, "in"], n)
        for carrier, n in sorted(m.wire_out.items()):
            wire.add_metric([carrier, "out"], n)
        yield wire
        errors = CounterMetricFamily(
            "voxpipe_wire_errors",
            "Inbound messages skipped as malformed or out of order.",
            labels=["carrier"],
        )
        for carrier, n in sorted(m.wire_errors.items()):
            errors.add_metric([carrier], n)
        yield errors
        hooks = CounterMetricFamily(
            "voxpipe_webhooks",
            "Webhook requests by route and outcome.",
            labels=["route", "outcome"],
        )
        for (route, outcome), n in sorted(m.webhooks.items()):
            hooks.add_metric([route, outcome], n)
        yield hooks
        overlaps = CounterMetricFamily(
            "voxpipe_bot_overlaps",
            "Bot speech the caller talked over or cut off: outcome backchannel (the bot went "
            "on) or interruption (the bot stopped; any cause).",
            labels=["outcome"],
        )
        for outcome in ("backchannel", "interruption"):
            overlaps.add_metric([outcome], m.overlaps[outcome])
        yield overlaps


class FrameCounter(Observer):
    """Counts frames entering a call (no per-hop cost) for ``voxpipe_frames_processed``."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def on_input(self, frame: Frame, direction: FrameDirection) -> None:
        self._metrics.frames_in += 1

    def on_output(self, frame: Frame) -> None:
        """Hook for the task's downstream/upstream listeners."""
        self._metrics.frames_out += 1
        if type(frame) is MetricsFrame:
            self._metrics.observe(frame)
        elif type(frame) is ProviderOutageFrame:
            self._metrics.outage(frame)
        elif type(frame) is BackchannelFrame:
            self._metrics.overlaps["backchannel"] += 1
        elif type(frame) is InterruptionFrame:
            self._metrics.overlaps["interruption"] += 1
