"""One view of a multi-worker server: /metrics and /healthz gather every worker's (issue 15).

Under ``voxpipe serve --workers N`` the kernel hands each connection to one worker, so a scrape
of /metrics reaches one process out of N. That worker asks its siblings for their own view over
their private Unix sockets (``VOXPIPE_WORKER_DIR/worker-<i>.sock``, same app, with the
``x-voxpipe-local`` header so they answer for themselves only) and merges: counters, gauges and
histogram buckets are summed across workers (active calls per server is the sum), ``*_created``
timestamps keep the earliest. The hot path stays plain integer increments; only a scrape pays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from voxpipe.server.capacity import WorkerIdentity

__all__ = ["LOCAL_HEADER", "ask_siblings", "merge_metrics"]

logger = logging.getLogger(__name__)

LOCAL_HEADER = "x-voxpipe-local"
SIBLING_TIMEOUT_S = 2.0
_SIBLING_URL = "http://worker"


class _QuietSiblings(logging.Filter):
    """Keeps httpx's per-request INFO line out of the log for sibling queries (every probe)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _SIBLING_URL + "/" not in record.getMessage()


logging.getLogger("httpx").addFilter(_QuietSiblings())


async def _ask(socket_path: str, url_path: str, headers: dict[str, str]) -> Any:
    import httpx

    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    async with httpx.AsyncClient(
        transport=transport, base_url=_SIBLING_URL, timeout=SIBLING_TIMEOUT_S
    ) as client:
        return await client.get(url_path, headers=headers)


async def ask_siblings(
    identity: WorkerIdentity, url_path: str, headers: dict[str, str] | None = None
) -> dict[int, Any]:
    """GET ``url_path`` from every other worker: {index: httpx response or the exception}."""
    sent = {**(headers or {}), LOCAL_HEADER: "1"}
    jobs: dict[int, Any] = {}
    for index in range(identity.count):
        if index == identity.index:
            continue
        path = identity.socket_path(index)
        if path is not None:
            jobs[index] = _ask(str(path), url_path, sent)
    results = await asyncio.gather(*jobs.values(), return_exceptions=True)
    return dict(zip(jobs, results, strict=True))


class _Merged(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_metrics(texts: Iterable[str]) -> bytes:
    """Prometheus text expositions of several workers merged into one (sums; earliest created)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            earliest = fam.name.endswith("_created")
            table = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key not in table:
                    table[key] = s.value
                elif earliest:
                    table[key] = min(table[key], s.value)
                else:
                    table[key] += s.value
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(families.values()))
    return generate_latest(registry)
