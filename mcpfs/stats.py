"""Per-mount operation statistics: counts, bytes, errors, latency percentiles, cache hits.

The FUSE layer (and anything else doing work on behalf of a mount) calls
``stats.record(mount, op, nbytes, seconds, error)`` once per operation and
``stats.cache(mount, hit)`` per cache lookup. Two views come out of the same numbers:
``snapshot()`` (the JSON of ``/api/v0/mcpfs/stats``, with p50/p90/p99 latencies over the
last ``LATENCY_WINDOW`` operations of each (mount, op)) and Prometheus metrics in
``registry`` (served as text at ``/metrics``). ``record`` only updates plain counters (it
runs once per FUSE request, so it must stay cheap); the Prometheus families are built from
them when ``/metrics`` is scraped (a custom collector).

Each :class:`Stats` has its own ``CollectorRegistry``, so several instances (tests, two
daemons in one process) never collide in prometheus_client's global registry.

Concurrency: ``record`` and ``cache`` may be called from the trio thread and from worker
threads at once; the dicts are guarded by ``_lock`` (a leaf lock, held for O(1) work;
the collector copies under it too). ``snapshot`` copies under the lock and sorts outside.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_WINDOW: Final = 1024  # latencies kept per (mount, op) for the percentiles
PERCENTILES: Final = (50, 90, 99)
# Histogram buckets (seconds): 50 us .. 30 s, enough for a cached read and a slow upload.
LATENCY_BUCKETS: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                          0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


@dataclass
class _OpStats:
    ops: int = 0
    bytes: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds: float = 0.0  # sum of all latencies (the histogram's _sum)


def _percentile(sorted_values: list[float], pct: int) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, -(-pct * len(sorted_values) // 100))  # ceil(pct/100 * n)
    return sorted_values[rank - 1]


class Stats:
    """Counters of one daemon; see the module docstring."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self._by_op: dict[tuple[str, str], _OpStats] = {}
        self._cache_counts: dict[str, list[int]] = {}  # mount -> [hits, misses]
        self.registry = CollectorRegistry()
        self.registry.register(self)  # collect() below

    def record(self, mount: str, op: str, nbytes: int = 0, seconds: float = 0.0,
               error: bool | BaseException | None = False) -> None:
        """Count one finished operation (``error`` truthy when it failed). Never raises."""
        seconds = max(0.0, seconds)
        slot = bisect.bisect_left(LATENCY_BUCKETS, seconds)  # first bucket with le >= s
        with self._lock:
            entry = self._by_op.get((mount, op))
            if entry is None:
                entry = self._by_op[(mount, op)] = _OpStats()
            entry.ops += 1
            entry.bytes += max(0, nbytes)
            entry.errors += bool(error)
            entry.latencies.append(seconds)
            entry.buckets[slot] += 1
            entry.seconds += seconds

    def collect(self) -> Iterator[Metric]:
        """The Prometheus families (``registry`` calls this at each scrape)."""
        ops = CounterMetricFamily("mcpfs_ops", "Operations per mount and op", labels=["mount", "op"])
        nbytes = CounterMetricFamily("mcpfs_bytes", "Bytes moved per mount and op",
                                     labels=["mount", "op"])
        errors = CounterMetricFamily("mcpfs_errors", "Failed operations per mount and op",
                                     labels=["mount", "op"])
        latency = HistogramMetricFamily("mcpfs_op_seconds", "Operation latency",
                                        labels=["mount", "op"])
        cache = CounterMetricFamily("mcpfs_cache_lookups", "Cache lookups per mount",
                                    labels=["mount", "result"])
        with self._lock:
            rows = [(key, s.ops, s.bytes, s.errors, list(s.buckets), s.seconds)
                    for key, s in sorted(self._by_op.items())]
            caches = sorted((m, tuple(c)) for m, c in self._cache_counts.items())
        for labels, count, moved, failed, buckets, total in rows:
            ops.add_metric(labels, count)
            nbytes.add_metric(labels, moved)
            errors.add_metric(labels, failed)
            cumulative, running = [], 0
            for le, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], buckets):
                running += n
                cumulative.append((le, running))
            latency.add_metric(labels, cumulative, total)
        for mount, (hits, misses) in caches:
            cache.add_metric([mount, "hit"], hits)
            cache.add_metric([mount, "miss"], misses)
        yield from (ops, nbytes, errors, latency, cache)

    def cache(self, mount: str, hit: bool) -> None:
        """Count one cache lookup of ``mount`` (attribute, listing, block or page cache)."""
        with self._lock:
            counts = self._cache_counts.setdefault(mount, [0, 0])
            counts[0 if hit else 1] += 1

    def snapshot(self) -> dict:
        """``{"Uptime": s, "Mounts": {mount: {"Ops": {op: {...}}, "Cache": {...}}}}``."""
        with self._lock:
            rows = [(m, o, s.ops, s.bytes, s.errors, list(s.latencies))
                    for (m, o), s in self._by_op.items()]
            caches = {m: tuple(c) for m, c in self._cache_counts.items()}
        mounts: dict[str, dict] = {}
        for mount, op, ops, nbytes, errors, lat in sorted(rows):
            lat.sort()
            row = {"Count": ops, "Bytes": nbytes, "Errors": errors,
                   "Latency": {f"p{p}": _percentile(lat, p) for p in PERCENTILES} if lat else {}}
            mounts.setdefault(mount, {"Ops": {}, "Cache": {"Hits": 0, "Misses": 0}})
            mounts[mount]["Ops"][op] = row
        for mount, (hits, misses) in sorted(caches.items()):
            entry = mounts.setdefault(mount, {"Ops": {}, "Cache": {}})
            entry["Cache"] = {"Hits": hits, "Misses": misses}
        return {"Uptime": round(time.time() - self.started, 3), "Mounts": mounts}

    def prometheus_text(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)


__all__ = ["Stats", "METRICS_CONTENT_TYPE", "LATENCY_WINDOW"]
