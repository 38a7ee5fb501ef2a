"""Garbage collection of the blockstore: mark from the roots, sweep the rest.

``collect(store, roots_recursive, roots_direct)`` keeps every block reachable (through
:func:`links.links_of`) from a recursive root, and each direct root itself, and deletes every
other block of ``store``. It returns the multihashes it removed. The caller decides what the
roots are; a node passes all of them:

- recursive: every recursive pin, the MFS root (:meth:`MFS.root`, the in-memory one, which
  may be newer than the flushed one) and :meth:`MFS.pending_roots`, plus the roots of any
  import that has finished but is not linked anywhere yet;
- direct: every direct pin.

Errors: a block missing or corrupt under a root is logged (warning) and skipped, not fatal:
what is reachable through it is kept only when reachable another way. A block that vanishes
during the sweep (deleted by someone else) is ignored. Store I/O errors propagate; blocks
already deleted stay deleted (GC is idempotent, run it again).

Races with writers, two guards:

1. mtime: a block whose file was modified after ``GC start - MTIME_SLACK_NS`` is kept, so a
   block written by a concurrent import after marking began survives even though no root
   reaches it yet. This needs a store with ``path_of`` (FlatFSBlockstore, or a
   CachedBlockstore over one); other stores get no mtime guard. It does NOT protect a block
   that already existed (an import that dedups against an unreferenced old block, whose put
   is a no-op) nor blocks an import wrote before GC started.
2. :class:`GCLock`, kubo's GC locker, closes those gaps: imports, pin adds and MFS mutations
   hold ``lock.writing()`` (shared) for their whole duration; the GC holds
   ``lock.collecting()`` (exclusive) across computing its roots and calling ``collect``.
   Given a ``lock_path``, the same holds across processes (``flock`` shared / exclusive on
   that file), so a CLI ``add`` in one process and ``repo gc`` in another cannot race.

Lock order: GCLock -> (blockstore's internal lock). ``collect`` itself takes no lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Final

from ...errors import BlockNotFound, CorruptBlock, InvalidInput
from .blockstore import Blockstore
from .cid import CID, IDENTITY, RAW
from .links import links_of

log = logging.getLogger(__name__)

# Filesystem mtimes come from a coarse kernel clock (a tick, ~4 ms on ext4) and may lag
# time.time_ns(); a margin of many ticks makes a block written just after GC start count as
# new. Writers are excluded by GCLock anyway, so this is only a second guard: it must stay
# small, or `repo gc` right after an unpinned add would keep what it should remove.
MTIME_SLACK_NS: Final = 100_000_000


def mark(store: Blockstore, roots_recursive: Iterable[CID],
         roots_direct: Iterable[CID]) -> set[bytes]:
    """The multihashes to keep: all blocks reachable from recursive roots, and direct roots."""
    keep: set[bytes] = {cid.multihash for cid in roots_direct}
    seen: set[CID] = set()
    stack = list(roots_recursive)
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        keep.add(cid.multihash)
        try:
            block = store.get(cid)
            stack.extend(links_of(cid, block))
        except (BlockNotFound, CorruptBlock, InvalidInput) as exc:
            log.warning("gc: cannot follow links of %s: %s", cid, exc)
    return keep


def _is_new(store: Blockstore, mh: bytes, since_ns: int) -> bool:
    path_of = getattr(store, "path_of", None)
    if path_of is None:
        return False
    try:
        return os.stat(path_of(CID(1, RAW, mh))).st_mtime_ns >= since_ns
    except FileNotFoundError:
        return True  # gone already: nothing to delete


def collect(store: Blockstore, roots_recursive: Iterable[CID],
            roots_direct: Iterable[CID] = ()) -> list[bytes]:
    """Mark from the roots, delete every unmarked block not newer than GC start.

    ``store`` must offer ``multihashes()`` (FlatFSBlockstore does). Returns the removed
    multihashes (wrap one as ``CID(1, RAW, mh)`` to print it as kubo's ``repo gc`` does).
    """
    started_ns = time.time_ns()
    keep = mark(store, roots_recursive, roots_direct)
    since_ns = started_ns - MTIME_SLACK_NS
    removed: list[bytes] = []
    for mh in list(store.multihashes()):  # type: ignore[attr-defined]
        if mh in keep or mh[:1] == bytes((IDENTITY,)) or _is_new(store, mh, since_ns):
            continue
        try:
            store.delete(CID(1, RAW, mh))
        except BlockNotFound:
            continue
        removed.append(mh)
    if removed:
        store.sync()  # no-op for deletes today; keeps the contract if a store batches them
    log.info("gc: kept %d blocks, removed %d", len(keep), len(removed))
    return removed


class GCLock:
    """Writers share, the collector is exclusive (kubo's ``GCLocker``), for threads.

    ``writing()`` may be nested (a pin add inside an import): it waits only while a GC is
    actually running, never for a GC that is merely waiting, so it cannot deadlock on
    itself. The price is that a steady stream of writers can delay a GC indefinitely.
    Blocking: call both from worker threads (``trio.to_thread.run_sync``), never on the
    trio loop thread; ``try_writing()`` never waits and may be used there.
    """

    def __init__(self, lock_path: str | os.PathLike[str] | None = None) -> None:
        self._cond = threading.Condition()
        self._writers = 0
        self._collecting = False
        self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) if lock_path else None

    def _flock(self, mode: int) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, mode)

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            while self._collecting:
                self._cond.wait()
            self._writers += 1
            if self._writers == 1:
                self._flock(fcntl.LOCK_SH)
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def try_writing(self) -> Iterator[bool]:
        """``writing()`` when it can be had at once, else nothing held and False; never
        waits (for the trio thread). While anyone writes, the collector waits and nobody
        holds ``_cond`` across a blocking flock, so leaving does not wait either."""
        if not self._cond.acquire(blocking=False):  # someone may be inside a blocking flock
            yield False
            return
        try:
            got = not self._collecting
            if got and not self._writers and self._fd is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # another process collects
                    got = False
            if got:
                self._writers += 1
        finally:
            self._cond.release()
        if not got:
            yield False
            return
        try:
            yield True
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._writers -= 1
            if not self._writers:
                self._flock(fcntl.LOCK_UN)
            self._cond.notify_all()

    @contextmanager
    def collecting(self) -> Iterator[None]:
        with self._cond:
            while self._collecting or self._writers:
                self._cond.wait()
            self._collecting = True
            self._flock(fcntl.LOCK_EX)
        try:
            yield
        finally:
            with self._cond:
                self._flock(fcntl.LOCK_UN)
                self._collecting = False
                self._cond.notify_all()


__all__ = ["collect", "mark", "GCLock", "MTIME_SLACK_NS"]
