"""Shared helpers: the source file, timing, peak-RSS tracking, page-cache eviction.

Peak RSS: Linux keeps a per-process high-water mark (VmHWM) that writing "5" to
/proc/self/clear_refs resets, so ``PeakRSS`` reports the exact peak growth over a block of
code. Where that is not allowed it falls back to a 5 ms sampling thread (less exact).
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
PIECE = MiB  # the source file is written in 1 MiB pieces of random.Random(0).randbytes
SAMPLE_INTERVAL = 0.005  # seconds between RSS samples when VmHWM cannot be reset


def make_source(path: Path, size_mib: int, seed: int = 0) -> str:
    """Deterministic pseudo-random content (same bytes, same CIDs everywhere); its sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(size_mib):
            piece = rng.randbytes(PIECE)
            digest.update(piece)
            fh.write(piece)
    return digest.hexdigest()


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} missing from /proc/self/status")


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


class PeakRSS:
    """``with PeakRSS() as p: ...`` then ``p.growth_mib``: peak RSS minus RSS at entry."""

    def __init__(self) -> None:
        self.base_mib = 0.0
        self.peak_mib = 0.0
        self.method = "VmHWM"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        self.base_mib = rss_mib()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
        except OSError:
            self.method = "sampled"
            self.peak_mib = self.base_mib
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.peak_mib = max(self.peak_mib, rss_mib())

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self.peak_mib, rss_mib())
        else:
            self.peak_mib = _status_kib("VmHWM") / 1024

    @property
    def growth_mib(self) -> float:
        return max(0.0, self.peak_mib - self.base_mib)


def evict(paths: Iterable[Path]) -> int:
    """Drop these (clean) files from the OS page cache; returns how many were evicted.

    Only our own files are touched (posix_fadvise DONTNEED), never the whole cache.
    """
    n = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def block_files(blocks_dir: Path) -> set[str]:
    """``<shard>/<KEY>.data`` of every block in a flatfs folder (kubo's or ours)."""
    out = set()
    for shard in os.scandir(blocks_dir):
        if shard.is_dir():
            for entry in os.scandir(shard.path):
                if entry.name.endswith(".data") and not entry.name.startswith("."):
                    out.add(f"{shard.name}/{entry.name}")
    return out


@dataclass
class Result:
    """One row of the table: one measurement, repeated ``len(samples)`` times."""

    bench: str  # e.g. "add", "add -n", "read seq", "read 4KiB random"
    impl: str  # "mcpfs" or "kubo 0.22"
    params: str  # e.g. "cidv0 256KiB balanced"
    samples: list[float] = field(default_factory=list)  # seconds per run
    nbytes: int = 0  # bytes processed per run (for MB/s)
    ops: int = 0  # operations per run (for ops/s)
    rss_growth_mib: list[float] = field(default_factory=list)
    cid: str | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def add(self, secs: float, rss_growth_mib: float, cid: str | None = None) -> None:
        """Record one run; every run of a row must give the same CID."""
        if cid is not None:
            if self.cid is not None and self.cid != cid:
                raise AssertionError(f"{self.impl} {self.bench}: CID changed {self.cid} -> {cid}")
            self.cid = cid
        self.samples.append(secs)
        self.rss_growth_mib.append(rss_growth_mib)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def mbps(self) -> float | None:
        return self.nbytes / self.median / 1e6 if self.nbytes and self.samples else None

    @property
    def ops_per_s(self) -> float | None:
        return self.ops / self.median if self.ops and self.samples else None

    @property
    def rss_mib(self) -> float | None:
        return max(self.rss_growth_mib) if self.rss_growth_mib else None

    def to_json(self) -> dict:
        return {"bench": self.bench, "impl": self.impl, "params": self.params,
                "samples_s": self.samples, "median_s": self.median, "bytes": self.nbytes,
                "mb_per_s": self.mbps, "ops": self.ops, "ops_per_s": self.ops_per_s,
                "peak_rss_growth_mib": self.rss_growth_mib, "cid": self.cid,
                "note": self.note, **self.extra}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
