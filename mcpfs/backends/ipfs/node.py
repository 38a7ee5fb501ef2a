"""The embedded IPFS node's local side: one repo folder holding blocks, pins and the MFS root.

Layout of ``repo_dir`` (kubo-like): ``blocks/`` (flatfs), ``pins.json``, ``mfs-root``.
A :class:`Repo` is cheap to open; the CLI opens one per command when no daemon runs, the
daemon opens one for its lifetime. Opening never modifies existing data. GC roots are the
pins, the MFS root and whatever a pending write registered with :meth:`Repo.hold`.

Concurrency: the blockstore and pins are thread-safe; ``_held`` is guarded by ``_lock``.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from .blockstore import CachedBlockstore, FlatFSBlockstore
from .cid import CID
from .importer import ImportParams
from .mfs_pending import PendingBlocks
from .reader import UnixFSReader

BLOCK_CACHE_BYTES = 64 << 20  # decoded-read LRU in front of flatfs


class Repo:
    def __init__(self, root: str | Path, mfs_params: ImportParams | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.flatfs = FlatFSBlockstore(self.root / "blocks")
        self.cached = CachedBlockstore(self.flatfs, BLOCK_CACHE_BYTES)
        # MFS's directory nodes between syncs (see mfs_pending): every reader sees them
        self.store = PendingBlocks(self.cached, self.root / "mfs-root.blocks")
        self.reader = UnixFSReader(self.store)
        self.mfs_params = mfs_params or ImportParams()
        self._held: Counter[CID] = Counter()
        self._lock = threading.Lock()

    def attach_stats(self, stats) -> None:
        """Count block reads and writes (and block-cache hits) in ``stats`` (a
        :class:`~mcpfs.stats.Stats`) as the "ipfs" backend; see backends/ipfs/blockstore.py.
        Later calls replace it; None detaches."""
        self.flatfs.stats = stats
        self.cached.stats = stats

    @cached_property
    def pins(self):
        from .pins import Pinner
        return Pinner(self.root, self.store)

    @cached_property
    def mfs(self):
        from .mfs import MFS
        return MFS(self.store, self.reader, self.mfs_params, self.root / "mfs-root",
                   gc_lock=self.gc_lock)

    @cached_property
    def gc_lock(self):
        from .gc import GCLock
        return GCLock(self.root / "gc.lock")

    @contextmanager
    def hold(self, cid: CID):
        """Keep ``cid``'s DAG from GC while a write that needs it is pending."""
        with self._lock:
            self._held[cid] += 1
        try:
            yield cid
        finally:
            with self._lock:
                self._held[cid] -= 1
                if not self._held[cid]:
                    del self._held[cid]

    def gc_roots(self) -> tuple[list[CID], list[CID]]:
        """(recursive roots, direct roots) that GC must keep."""
        recursive, direct = [], []
        for cid, kind, _name in self.pins.ls("all"):
            if kind == "recursive":
                recursive.append(cid)
            elif kind == "direct":
                direct.append(cid)
        recursive.extend(self.mfs.pending_roots())
        with self._lock:
            recursive.extend(self._held)
        return recursive, direct

    def gc(self) -> list:
        from .gc import collect
        with self.gc_lock.collecting():
            recursive, direct = self.gc_roots()
            removed = collect(self.store, recursive, direct)
        self.reader.clear_cache()
        return removed
