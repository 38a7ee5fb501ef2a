"""mcpfs side: import a file into a FlatFSBlockstore, read it back, random 4 KiB reads.

Every import goes into a fresh store folder under ``work`` (so no block is deduplicated
against an earlier run) and is timed up to and including ``store.sync()``: the blocks are
durable when the clock stops, as after ``mcpfs add`` and as with kubo's flatfs (sync=true).
Reads use a fresh FlatFSBlockstore + UnixFSReader per run (no application cache), and the
store's block files are evicted from the OS page cache first (fadvise), so they are cold.
Each method does one run and returns ``{"secs", "rss_growth_mib", ...}``.
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

from .common import PeakRSS, evict

IMPL = "mcpfs"
RANDOM_READ = 4096  # bytes per random read
RANDOM_SEED = 1

DEFAULT = "cidv0 256KiB balanced"
# (label, params) of the imports; the first one is the kubo-comparable default.
VARIANTS: list[tuple[str, ImportParams]] = [
    (DEFAULT, ImportParams()),
    ("--cid-version 1", ImportParams(cid_version=1)),
    ("--profile unixfs-v1-2025", PROFILES["unixfs-v1-2025"]),
]


class McpfsBench:
    def __init__(self, src: Path, work: Path) -> None:
        self.src = src
        self.size = src.stat().st_size
        self.work = work
        self._n = 0
        self.default_store: Path | None = None  # blocks of the last default import
        self.default_cid: CID | None = None

    def add(self, params: ImportParams) -> dict:
        """One import into a fresh store; the default's store is kept for the reads."""
        self._n += 1
        folder = self.work / f"mcpfs-{self._n}" / "blocks"
        out = self._import(params, FlatFSBlockstore(folder))
        if params == VARIANTS[0][1]:
            self.default_store, self.default_cid = folder, out["root"]
        return out

    def add_n(self) -> dict:
        return self._import(ImportParams(), NullBlockstore())

    def _import(self, params: ImportParams, store) -> dict:
        with PeakRSS() as rss:
            start = time.perf_counter()
            with open(self.src, "rb", buffering=0) as fh:
                root = import_stream(store, fh, params)
            synced = time.perf_counter()
            store.sync()
            end = time.perf_counter()
        return {"secs": end - start, "sync_s": end - synced, "rss_growth_mib": rss.growth_mib,
                "cid": str(root.cid), "root": root.cid}

    def _cold_reader(self) -> UnixFSReader:
        assert self.default_store is not None, "add the default variant first"
        evict(self.default_store.glob("*/*.data"))
        return UnixFSReader(FlatFSBlockstore(self.default_store))

    def verify(self, expected_sha256: str) -> bool:
        """Untimed: the read-back bytes hash to the source's sha256."""
        h = hashlib.sha256()
        for chunk in UnixFSReader(FlatFSBlockstore(self.default_store)).iter_file(
                self.default_cid):
            h.update(chunk)
        return h.hexdigest() == expected_sha256

    def read_seq(self) -> dict:
        reader = self._cold_reader()
        with PeakRSS() as rss:
            start = time.perf_counter()
            n = 0
            for chunk in reader.iter_file(self.default_cid):
                n += len(chunk)
            secs = time.perf_counter() - start
        if n != self.size:
            raise AssertionError(f"read {n} bytes, expected {self.size}")
        return {"secs": secs, "rss_growth_mib": rss.growth_mib}

    def random_offsets(self, count: int) -> list[int]:
        rng = random.Random(RANDOM_SEED)
        blocks = (self.size - RANDOM_READ) // RANDOM_READ + 1
        return [rng.randrange(blocks) * RANDOM_READ for _ in range(count)]

    def read_random(self, offsets: list[int]) -> dict:
        reader = self._cold_reader()
        cid = self.default_cid
        with PeakRSS() as rss:
            start = time.perf_counter()
            for off in offsets:
                if len(reader.read(cid, off, RANDOM_READ)) != RANDOM_READ:
                    raise AssertionError(f"short read at {off}")
            secs = time.perf_counter() - start
        return {"secs": secs, "rss_growth_mib": rss.growth_mib}
