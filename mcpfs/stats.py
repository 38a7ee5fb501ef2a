"""Operation statistics: per mount (FUSE ops), per backend (requests) and bridge transfers.

Three kinds of callers feed one :class:`Stats`:

- the FUSE layer (and anything else doing work on behalf of a mount) calls
  ``stats.record(mount, op, nbytes, seconds, error)`` once per operation and
  ``stats.cache(mount, hit)`` per cache lookup;
- the backends call ``stats.backend(backend, op, bytes_in=, bytes_out=, seconds=, error=)``
  once per request they make ("s3", "hf", "ipfs": boto3 calls, Hub requests, block reads
  and writes of the embedded node) and ``stats.backend_cache(backend, hit)`` per lookup of
  their own caches (listing/HEAD caches, the prefetcher's window, the block cache);
- the bridge calls ``stats.bridge(route, native, nbytes)`` once per transfer, ``native``
  telling whether the backends moved the content themselves (a link, a server-side copy)
  or mcpfs streamed the bytes.

Two views come out of the same numbers: ``snapshot()`` (the JSON of
``/api/v0/mcpfs/stats``, with p50/p90/p99 latencies over the last ``LATENCY_WINDOW``
operations of each (mount, op) and (backend, op)) and Prometheus metrics in ``registry``
(served as text at ``/metrics``). The recording methods only update plain counters (they
run once per FUSE request or block read, so they must stay cheap) and never raise; the
Prometheus families are built from them when ``/metrics`` is scraped (a custom collector).

Each :class:`Stats` has its own ``CollectorRegistry``, so several instances (tests, two
daemons in one process) never collide in prometheus_client's global registry.

Concurrency: every recording method may be called from the trio thread and from worker
threads at once; the dicts are guarded by ``_lock`` (a leaf lock, held for O(1) work: no
call out of this module is made while holding it; the collector copies under it too).
``snapshot`` copies under the lock and sorts and computes percentiles outside.
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

LATENCY_WINDOW: Final = 1024  # latencies kept per (mount, op) and (backend, op)
PERCENTILES: Final = (50, 90, 99)
# Histogram buckets (seconds): 50 us .. 30 s, enough for a cached read and a slow upload.
LATENCY_BUCKETS: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                          0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BUCKET_LABELS: Final = (*map(str, LATENCY_BUCKETS), "+Inf")

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


@dataclass
class _OpStats:
    """Counters of one (mount, op) or (backend, op). For a mount ``bytes`` is what the op
    moved; for a backend ``bytes`` is what came in from it and ``bytes_out`` what was sent."""

    ops: int = 0
    bytes: int = 0
    bytes_out: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds: float = 0.0  # sum of all latencies (the histogram's _sum)

    def add(self, nbytes: int, bytes_out: int, seconds: float, error: object) -> None:
        """Count one operation (caller holds the Stats lock; ``seconds`` already >= 0)."""
        self.ops += 1
        if nbytes > 0:
            self.bytes += nbytes
        if bytes_out > 0:
            self.bytes_out += bytes_out
        if error:
            self.errors += 1
        self.latencies.append(seconds)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # first le >= s
        self.seconds += seconds


@dataclass
class _Route:
    """Transfers of one bridge route: all of them, and those that were native."""

    count: int = 0
    bytes: int = 0
    native_count: int = 0
    native_bytes: int = 0


def _percentile(sorted_values: list[float], pct: int) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, -(-pct * len(sorted_values) // 100))  # ceil(pct/100 * n)
    return sorted_values[rank - 1]


def _latency(values: list[float]) -> dict[str, float]:
    """``{"p50", "p90", "p99"}`` of ``values`` (sorted here); {} when there are none."""
    values.sort()
    return {f"p{p}": _percentile(values, p) for p in PERCENTILES} if values else {}


def _cumulative(buckets: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts -> Prometheus' cumulative (le, count) pairs, +Inf last."""
    out, running = [], 0
    for le, n in zip(_BUCKET_LABELS, buckets):
        running += n
        out.append((le, running))
    return out


class Stats:
    """Counters of one daemon; see the module docstring."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self._by_op: dict[tuple[str, str], _OpStats] = {}  # (mount, op)
        self._cache_counts: dict[str, list[int]] = {}  # mount -> [hits, misses]
        self._backend_ops: dict[tuple[str, str], _OpStats] = {}  # (backend, op)
        self._backend_caches: dict[str, list[int]] = {}  # backend -> [hits, misses]
        self._routes: dict[str, _Route] = {}  # bridge route -> transfers
        self.registry = CollectorRegistry()
        self.registry.register(self)  # collect() below

    # ---------------------------------------------------------------- recording
    def record(self, mount: str, op: str, nbytes: int = 0, seconds: float = 0.0,
               error: bool | BaseException | None = False) -> None:
        """Count one finished FUSE operation (``error`` truthy when it failed). Never
        raises."""
        if seconds < 0.0:
            seconds = 0.0
        with self._lock:
            entry = self._by_op.get((mount, op))
            if entry is None:
                entry = self._by_op[(mount, op)] = _OpStats()
            entry.add(nbytes, 0, seconds, error)

    def cache(self, mount: str, hit: bool) -> None:
        """Count one cache lookup of ``mount`` (attribute, listing, block or page cache)."""
        with self._lock:
            counts = self._cache_counts.setdefault(mount, [0, 0])
            counts[0 if hit else 1] += 1

    def backend(self, backend: str, op: str, *, bytes_in: int = 0, bytes_out: int = 0,
                seconds: float = 0.0, error: bool = False) -> None:
        """Count one request made to ``backend`` ("s3", "hf", "ipfs"): ``bytes_in`` received
        from it, ``bytes_out`` sent to it, ``seconds`` its latency, ``error`` whether it
        failed. Never raises."""
        seconds = max(0.0, seconds)
        with self._lock:
            entry = self._backend_ops.get((backend, op))
            if entry is None:
                entry = self._backend_ops[(backend, op)] = _OpStats()
            entry.add(bytes_in, bytes_out, seconds, error)

    def backend_cache(self, backend: str, hit: bool) -> None:
        """Count one lookup of a cache of ``backend`` (S3 listing/HEAD caches, the
        prefetcher's read-ahead window, the IPFS block cache...). Never raises."""
        with self._lock:
            counts = self._backend_caches.setdefault(backend, [0, 0])
            counts[0 if hit else 1] += 1

    def bridge(self, route: str, native: bool, nbytes: int = 0) -> None:
        """Count one bridge transfer of ``nbytes`` of content over ``route`` ("mfs-link",
        "s3-copy", "stream"...). ``native``: the backends moved it themselves (no byte
        went through mcpfs); False: mcpfs streamed the bytes. Never raises."""
        nbytes = max(0, nbytes)
        with self._lock:
            entry = self._routes.get(route)
            if entry is None:
                entry = self._routes[route] = _Route()
            entry.count += 1
            entry.bytes += nbytes
            if native:
                entry.native_count += 1
                entry.native_bytes += nbytes

    # ---------------------------------------------------------------- views
    def collect(self) -> Iterator[Metric]:
        """The Prometheus families (``registry`` calls this at each scrape)."""
        with self._lock:
            mount_rows = [(key, s.ops, s.bytes, s.errors, list(s.buckets), s.seconds)
                          for key, s in sorted(self._by_op.items())]
            caches = sorted((m, tuple(c)) for m, c in self._cache_counts.items())
            backend_rows = [(key, s.ops, s.bytes, s.bytes_out, s.errors, list(s.buckets),
                             s.seconds) for key, s in sorted(self._backend_ops.items())]
            backend_caches = sorted((b, tuple(c)) for b, c in self._backend_caches.items())
            routes = sorted((r, e.count, e.bytes, e.native_count, e.native_bytes)
                            for r, e in self._routes.items())
        yield from self._mount_families(mount_rows, caches)
        yield from self._backend_families(backend_rows, backend_caches)
        yield from self._bridge_families(routes)

    @staticmethod
    def _mount_families(rows: list, caches: list) -> Iterator[Metric]:
        ops = CounterMetricFamily("mcpfs_ops", "Operations per mount and op",
                                  labels=["mount", "op"])
        nbytes = CounterMetricFamily("mcpfs_bytes", "Bytes moved per mount and op",
                                     labels=["mount", "op"])
        errors = CounterMetricFamily("mcpfs_errors", "Failed operations per mount and op",
                                     labels=["mount", "op"])
        latency = HistogramMetricFamily("mcpfs_op_seconds", "Operation latency",
                                        labels=["mount", "op"])
        cache = CounterMetricFamily("mcpfs_cache_lookups", "Cache lookups per mount",
                                    labels=["mount", "result"])
        for labels, count, moved, failed, buckets, total in rows:
            ops.add_metric(labels, count)
            nbytes.add_metric(labels, moved)
            errors.add_metric(labels, failed)
            latency.add_metric(labels, _cumulative(buckets), total)
        for mount, (hits, misses) in caches:
            cache.add_metric([mount, "hit"], hits)
            cache.add_metric([mount, "miss"], misses)
        yield from (ops, nbytes, errors, latency, cache)

    @staticmethod
    def _backend_families(rows: list, caches: list) -> Iterator[Metric]:
        labels = ["backend", "op"]
        ops = CounterMetricFamily("mcpfs_backend_ops", "Requests per backend and op",
                                  labels=labels)
        nbytes = CounterMetricFamily("mcpfs_backend_bytes", "Bytes received from (in) and "
                                     "sent to (out) a backend", labels=[*labels, "direction"])
        errors = CounterMetricFamily("mcpfs_backend_errors", "Failed requests per backend "
                                     "and op", labels=labels)
        latency = HistogramMetricFamily("mcpfs_backend_op_seconds", "Backend request latency",
                                        labels=labels)
        cache = CounterMetricFamily("mcpfs_backend_cache_lookups", "Lookups of a backend's "
                                    "caches", labels=["backend", "result"])
        for key, count, got, sent, failed, buckets, total in rows:
            ops.add_metric(key, count)
            nbytes.add_metric([*key, "in"], got)
            nbytes.add_metric([*key, "out"], sent)
            errors.add_metric(key, failed)
            latency.add_metric(key, _cumulative(buckets), total)
        for backend, (hits, misses) in caches:
            cache.add_metric([backend, "hit"], hits)
            cache.add_metric([backend, "miss"], misses)
        yield from (ops, nbytes, errors, latency, cache)

    @staticmethod
    def _bridge_families(routes: list) -> Iterator[Metric]:
        transfers = CounterMetricFamily("mcpfs_bridge_transfers", "Bridge transfers per "
                                        "route, native or streamed", labels=["route", "kind"])
        nbytes = CounterMetricFamily("mcpfs_bridge_bytes", "Content bytes of bridge "
                                     "transfers per route and kind", labels=["route", "kind"])
        for route, count, moved, native_count, native_bytes in routes:
            for kind, n, b in (("native", native_count, native_bytes),
                               ("streamed", count - native_count, moved - native_bytes)):
                if n:
                    transfers.add_metric([route, kind], n)
                    nbytes.add_metric([route, kind], b)
        yield from (transfers, nbytes)

    def snapshot(self) -> dict:
        """``{"Uptime": s, "Mounts": {...}, "Backends": {...}, "Bridge": {...}}``:

        - Mounts: ``{mount: {"Ops": {op: {"Count", "Bytes", "Errors", "Latency"}},
          "Cache": {"Hits", "Misses"}}}``;
        - Backends: ``{backend: {"Ops": {op: {"Count", "BytesIn", "BytesOut", "Errors",
          "Latency"}}, "Count", "BytesIn", "BytesOut", "Errors", "Latency",
          "Cache": {"Hits", "Misses"}}}``, the backend's "Latency" over the latency windows
          of all its ops together;
        - Bridge: ``{"Native": {"Count", "Bytes"}, "Streamed": {"Count", "Bytes"},
          "Routes": {route: {"Count", "Bytes", "Native"}}}``; a route's ``Native`` is true
          when every transfer over it was native.

        Latency is ``{"p50", "p90", "p99"}`` in seconds ({} before the first operation)."""
        with self._lock:
            rows = [(m, o, s.ops, s.bytes, s.errors, list(s.latencies))
                    for (m, o), s in self._by_op.items()]
            caches = {m: tuple(c) for m, c in self._cache_counts.items()}
            backend_rows = [(b, o, s.ops, s.bytes, s.bytes_out, s.errors, list(s.latencies))
                            for (b, o), s in self._backend_ops.items()]
            backend_caches = {b: tuple(c) for b, c in self._backend_caches.items()}
            routes = [(r, e.count, e.bytes, e.native_count, e.native_bytes)
                      for r, e in self._routes.items()]
        mounts: dict[str, dict] = {}
        for mount, op, ops, nbytes, errors, lat in sorted(rows):
            mounts.setdefault(mount, {"Ops": {}, "Cache": {"Hits": 0, "Misses": 0}})
            mounts[mount]["Ops"][op] = {"Count": ops, "Bytes": nbytes, "Errors": errors,
                                        "Latency": _latency(lat)}
        for mount, (hits, misses) in sorted(caches.items()):
            entry = mounts.setdefault(mount, {"Ops": {}, "Cache": {}})
            entry["Cache"] = {"Hits": hits, "Misses": misses}
        return {"Uptime": round(time.time() - self.started, 3), "Mounts": mounts,
                "Backends": _backends_view(backend_rows, backend_caches),
                "Bridge": _bridge_view(routes)}

    def prometheus_text(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)


def _backends_view(rows: list, caches: dict) -> dict[str, dict]:
    """The snapshot's "Backends" from copied (backend, op, ...) rows and cache counts."""
    out: dict[str, dict] = {}
    windows: dict[str, list[float]] = {}  # backend -> latencies of all its ops

    def entry(backend: str) -> dict:
        return out.setdefault(backend, {"Ops": {}, "Count": 0, "BytesIn": 0, "BytesOut": 0,
                                        "Errors": 0, "Latency": {},
                                        "Cache": {"Hits": 0, "Misses": 0}})
    for backend, op, ops, got, sent, errors, lat in sorted(rows):
        row = entry(backend)
        windows.setdefault(backend, []).extend(lat)
        row["Ops"][op] = {"Count": ops, "BytesIn": got, "BytesOut": sent, "Errors": errors,
                          "Latency": _latency(lat)}
        row["Count"] += ops
        row["BytesIn"] += got
        row["BytesOut"] += sent
        row["Errors"] += errors
    for backend, lat in windows.items():
        out[backend]["Latency"] = _latency(lat)
    for backend, (hits, misses) in sorted(caches.items()):
        entry(backend)["Cache"] = {"Hits": hits, "Misses": misses}
    return out


def _bridge_view(routes: list) -> dict:
    """The snapshot's "Bridge" from copied (route, count, bytes, native count/bytes) rows."""
    native = {"Count": 0, "Bytes": 0}
    streamed = {"Count": 0, "Bytes": 0}
    by_route: dict[str, dict] = {}
    for route, count, moved, native_count, native_bytes in sorted(routes):
        native["Count"] += native_count
        native["Bytes"] += native_bytes
        streamed["Count"] += count - native_count
        streamed["Bytes"] += moved - native_bytes
        by_route[route] = {"Count": count, "Bytes": moved, "Native": native_count == count}
    return {"Native": native, "Streamed": streamed, "Routes": by_route}


__all__ = ["Stats", "METRICS_CONTENT_TYPE", "LATENCY_WINDOW"]
