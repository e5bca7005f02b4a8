"""Reading a histogram out of a server's ``/metrics`` text, for the benchmarks' reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HistogramSummary", "counter_total", "histogram_summary"]


@dataclass(slots=True, frozen=True)
class HistogramSummary:
    """One histogram's observations: how many, their sum, and a bound on the largest."""

    count: int
    total: float
    # The first bucket bound that holds every observation (inf when some fell beyond the
    # last bucket): exposition formats keep no maximum, so this bounds it.
    max_under: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def histogram_summary(
    exposition: str, name: str, labels: dict[str, str] | None = None
) -> HistogramSummary:
    """The histogram ``name`` (its series whose labels include ``labels``, summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    want = labels or {}
    count = total = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in want.items()):
                continue
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    bound = 0.0
    for le in sorted(buckets):  # cumulative: the first bound holding them all
        if buckets[le] >= count:
            bound = le
            break
    else:
        bound = math.inf if count else 0.0
    return HistogramSummary(int(count), total, bound if count else 0.0)


def counter_total(exposition: str, name: str) -> float:
    """The counter ``name`` (without ``_total``), summed over its series."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_total")
    )
