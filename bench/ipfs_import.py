"""mcpfs side: import a file into a FlatFSBlockstore, read it back, random 4 KiB reads.

Every import goes into a fresh store folder under ``work`` (so no block is deduplicated
against an earlier run) and is timed up to and including ``store.sync()``: the blocks are
durable when the clock stops, as after ``mcpfs add`` and as kubo's flatfs (sync=true) makes
them. Reads use a fresh FlatFSBlockstore + UnixFSReader per run (no application cache) and
the store's block files are evicted from the OS page cache first (fadvise), so they are cold.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

from mcpfs.backends.ipfs.blockstore import FlatFSBlockstore, NullBlockstore
from mcpfs.backends.ipfs.cid import CID
from mcpfs.backends.ipfs.importer import PROFILES, ImportParams, import_stream
from mcpfs.backends.ipfs.reader import UnixFSReader

from .common import PeakRSS, Result, evict

IMPL = "mcpfs"
RANDOM_READ = 4096  # bytes per random read
RANDOM_SEED = 1

# (label, params) of the imports; the first one is the kubo-comparable default.
VARIANTS: list[tuple[str, ImportParams]] = [
    ("cidv0 256KiB balanced (default)", ImportParams()),
    ("--cid-version 1 (raw leaves)", ImportParams(cid_version=1)),
    ("--profile unixfs-v1-2025", PROFILES["unixfs-v1-2025"]),
]


class McpfsBench:
    def __init__(self, src: Path, work: Path, runs: int, warmup: bool = True) -> None:
        self.src = src
        self.size = src.stat().st_size
        self.work = work
        self.runs = runs
        self.warmup = warmup
        self._n = 0
        self.default_store: Path | None = None  # blocks of the last default import
        self.default_cid: CID | None = None
        self.sha256 = hashlib.sha256(src.read_bytes()).hexdigest()

    def _fresh_dir(self) -> Path:
        self._n += 1
        return self.work / f"mcpfs-{self._n}" / "blocks"

    def _import_once(self, params: ImportParams, store) -> tuple[float, float, float, CID]:
        """(seconds incl. sync, seconds of sync alone, peak RSS growth MiB, root CID)."""
        with PeakRSS() as rss:
            start = time.perf_counter()
            with open(self.src, "rb", buffering=0) as fh:
                root = import_stream(store, fh, params)
            synced = time.perf_counter()
            store.sync()
            end = time.perf_counter()
        return end - start, end - synced, rss.growth_mib, root.cid

    def imports(self) -> list[Result]:
        if self.warmup:  # page cache of the source, first-touch of the code paths
            self._import_once(VARIANTS[0][1], FlatFSBlockstore(self._fresh_dir()))
        out = []
        for label, params in VARIANTS:
            res = Result("add", IMPL, label, nbytes=self.size)
            syncs = []
            for _ in range(self.runs):
                folder = self._fresh_dir()
                secs, sync_s, growth, cid = self._import_once(params, FlatFSBlockstore(folder))
                res.samples.append(secs)
                res.rss_growth_mib.append(growth)
                syncs.append(sync_s)
                if res.cid and res.cid != str(cid):
                    raise AssertionError(f"non-deterministic import: {res.cid} != {cid}")
                res.cid = str(cid)
                if params == VARIANTS[0][1]:
                    self.default_store, self.default_cid = folder, cid
            res.extra["sync_s"] = syncs
            res.note = f"incl. fsync {sorted(syncs)[len(syncs) // 2]:.2f}s"
            out.append(res)
        return out

    def only_hash(self) -> Result:
        res = Result("add -n", IMPL, VARIANTS[0][0], nbytes=self.size)
        for _ in range(self.runs):
            secs, _, growth, cid = self._import_once(ImportParams(), NullBlockstore())
            res.samples.append(secs)
            res.rss_growth_mib.append(growth)
            res.cid = str(cid)
        return res

    def _cold_reader(self) -> UnixFSReader:
        assert self.default_store is not None, "run imports() first"
        evict(self.default_store.glob("*/*.data"))
        return UnixFSReader(FlatFSBlockstore(self.default_store))

    def verify(self) -> bool:
        """Untimed: the read-back bytes hash to the source's sha256."""
        h = hashlib.sha256()
        for chunk in UnixFSReader(FlatFSBlockstore(self.default_store)).iter_file(
                self.default_cid):
            h.update(chunk)
        return h.hexdigest() == self.sha256

    def read_seq(self) -> Result:
        res = Result("read seq (cold)", IMPL, "iter_file, " + VARIANTS[0][0], nbytes=self.size)
        for _ in range(self.runs):
            reader = self._cold_reader()
            with PeakRSS() as rss:
                start = time.perf_counter()
                n = 0
                for chunk in reader.iter_file(self.default_cid):
                    n += len(chunk)
                secs = time.perf_counter() - start
            assert n == self.size, (n, self.size)
            res.samples.append(secs)
            res.rss_growth_mib.append(rss.growth_mib)
            del reader
        return res

    def read_random(self, count: int) -> Result:
        res = Result("read 4KiB random (cold)", IMPL, "reader.read, " + VARIANTS[0][0],
                     nbytes=count * RANDOM_READ, ops=count)
        rng = random.Random(RANDOM_SEED)
        last = self.size - RANDOM_READ
        offsets = [rng.randrange(0, last // RANDOM_READ + 1) * RANDOM_READ
                   for _ in range(count)]
        for _ in range(self.runs):
            reader = self._cold_reader()
            with PeakRSS() as rss:
                start = time.perf_counter()
                for off in offsets:
                    if len(reader.read(self.default_cid, off, RANDOM_READ)) != RANDOM_READ:
                        raise AssertionError(f"short read at {off}")
                secs = time.perf_counter() - start
            res.samples.append(secs)
            res.rss_growth_mib.append(rss.growth_mib)
            del reader
        return res
