"""kubo's Mutable File System (``ipfs files``) over our blockstore, for trio.

``MFS`` holds one root CID in memory and records it through :mod:`mfs_root` (a synced
root file plus an append-only log of committed roots). Durability has two levels:

- **committed**: every mutation (with ``flush=True``, kubo's default) writes its blocks,
  then appends the new root to ``<root_file>.log`` (one ``write(2)``, no fsync). A
  ``kill -9`` at any point leaves the last committed root, and every block it references
  was written before it was recorded (the kernel keeps written data). While the flusher
  runs, the directory nodes are not flatfs files yet: they wait in :mod:`mfs_pending`
  (memory plus a redo log appended before the root), and a sync writes those reachable
  from its root.
- **synced**: :meth:`MFS.sync` fsyncs every block written so far (``store.sync()``) and
  *then* writes the root it captured before that to ``root_file`` (temp file, fsync, rename,
  fsync of the folder). ``root_file`` therefore never names a block that was not synced
  first, and it survives a power loss.

Without a flusher every commit is also synced (CLI processes, tests: kubo's behaviour).
While :meth:`run_flusher` runs (the daemon starts it in its nursery), commits are only
committed, and the flusher syncs at most every ``FLUSH_INTERVAL`` seconds when something
changed; :meth:`flush` (``mcpfs files flush``; fsync(2) of a file through the mount;
unmount) and the flusher's own exit (unmount, SIGTERM) sync at once.

Loading takes the last log record if it was written in the current boot (a process crash:
the page cache that holds its unsynced blocks survived), else the synced root: after
``kill -9`` the last committed root is back, after a power cut the last synced one (at most
about one flush interval old).

With ``flush=False`` a change lives in memory only until the next flush and a crash loses
it. Path operations themselves live in :mod:`mfs_tree` (pure functions root -> new root).
File CIDs: a written file is re-imported with the MFS params, so its CID equals
``ipfs add`` of the same bytes with those params (our documented choice; kubo's DagModifier
may produce a different DAG for the same bytes). :meth:`link` puts an already imported DAG
(a streamed import) at a path in one step.

Concurrency and lock order:

1. ``MFS._lock`` (a trio lock: QuickLock) serializes mutations; reads take no lock and work on a
   snapshot of the root (CIDs are immutable). Syncs run without ``_lock`` (a sync never holds
   up mutations: it captures a committed root, whose blocks were all written before it
   was committed); ``_sync_mutex`` (threading.Lock, in the worker thread) makes each
   ``store.sync()`` + record one step, and a record never goes back to an older root.
2. inside the worker thread, ``gc_lock.writing()`` (gc.GCLock, optional) for the whole
   mutation, so a GC never runs between "blocks written" and "root linked".
3. the blockstore's and reader's own internal locks (leaves).

All blocking work (hashing, block I/O, fsync) runs in ``trio.to_thread.run_sync`` under one
CapacityLimiter, with one exception, the *quick* change: while the flusher runs, a change
that only adds a new name in directories whose decoded state is cached (a small file
written whole, a link, mkdir, symlink) and re-encodes at most ``QUICK_NODE_BYTES`` of nodes
runs on the trio thread (``DirCache.quick_add`` decides, no block is read). Its nodes go to
mfs_pending's memory and one log append (never a log compaction or a spill), and it takes
the GC lock only if that is free at once (``GCLock.try_writing``), else it takes the thread
path. That saves a worker-thread round trip, about a third of a small file's close(), and
costs the loop about what the GIL would anyway. A mutation's thread is not abandoned on
cancellation: it completes (or fails) before the cancellation is delivered, and ``_root``
is assigned inside the thread, so a mutation is all-or-nothing. GC must keep
:meth:`pending_roots` (the in-memory root, the committed one and the synced one).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

import trio

from ...errors import BlockNotFound, InvalidInput, McpfsError
from ...quick_lock import QuickLock
from .blockstore import Blockstore
from .cid import CID
from .gc import GCLock
from .importer import ImportParams
from .mfs_tree import READ_PIECE, Tree, split_path
from .mfs_lock import MfsLock
from .mfs_pending import PENDING_MAX, PendingBlocks
from .mfs_root import RootFiles
from .reader import UnixFSReader

log = logging.getLogger("mcpfs.mfs")

# kubo's MFS defaults: CIDv0, size-262144 chunks, dag-pb leaves, balanced layout.
MFS_PARAMS: Final = ImportParams()
EMPTY_DIR_V0: Final = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
THREADS: Final = 4  # worker threads for MFS block work (reads and the one mutation)
SOURCE_PIECE: Final = 256 * 1024  # bytes pulled per read() from a file-like write source
FLUSH_INTERVAL: Final = 1.0  # seconds between background syncs while run_flusher runs
QUICK_DATA_BYTES: Final = 64 << 10  # largest file written by a quick (trio thread) change
QUICK_NODE_BYTES: Final = 256 << 10  # most directory-node bytes a quick change re-encodes


def _source_iter(data: Any, piece: int = SOURCE_PIECE) -> Iterator[bytes]:
    """Bytes, a (sync or async) file-like or a (sync or async) iterable of bytes, as a sync
    iterator for a worker thread; async sources are pulled through ``trio.from_thread``."""
    if isinstance(data, str):
        raise InvalidInput("cannot write a str: encode it to bytes first")
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for i in range(0, len(view), piece):
            yield bytes(view[i:i + piece])
        return
    read = getattr(data, "read", None)
    if read is not None:
        is_async = inspect.iscoroutinefunction(read)
        while True:
            chunk = trio.from_thread.run(read, piece) if is_async else read(piece)
            if not chunk:
                return
            yield bytes(chunk)
    if hasattr(data, "__aiter__"):
        ait = data.__aiter__()
        while True:
            try:
                yield bytes(trio.from_thread.run(ait.__anext__))
            except StopAsyncIteration:
                return
    if hasattr(data, "__iter__"):
        for chunk in data:
            yield bytes(chunk)
        return
    raise InvalidInput(f"cannot write a {type(data).__name__}: need bytes or a stream")


class MFS:
    """One mutable file system; see the module docstring for durability and locking."""

    def __init__(self, store: Blockstore, reader: UnixFSReader,
                 params: ImportParams = MFS_PARAMS, root_file: str | os.PathLike[str] = "",
                 *, gc_lock: GCLock | None = None,
                 limiter: trio.CapacityLimiter | None = None) -> None:
        """Load the root from ``root_file`` (blocking, small): a missing file means an empty
        root; a root whose block is missing raises BlockNotFound; an unparsable file raises
        McpfsError. Use :meth:`open` from async code."""
        if not root_file:
            raise InvalidInput("MFS needs a root_file")
        self.store = store
        self.reader = reader
        self.params = params
        self.root_file = Path(root_file)
        self.tree = Tree(store, reader, params)
        self._gc_lock = gc_lock
        self._lock = QuickLock()  # mutations, one at a time (quick_lock.py)
        self._limiter = limiter or trio.CapacityLimiter(THREADS)
        self.records = RootFiles(self.root_file)
        self.deferred = False  # True while run_flusher runs: commits are not fsynced
        # directory nodes held in memory between syncs (only over a Repo's store)
        self.pending = store if isinstance(store, PendingBlocks) else None
        self.writer = MfsLock(self.root_file)  # one process changes this MFS (mfs_lock)
        with self.writer.held():  # EBUSY while a daemon runs on this repo
            if self.pending is not None:
                self.pending.recover()  # a killed daemon's logged nodes, before the root log
            root, synced = self.records.load(store.has)
        if root is not None and not store.has(root):
            raise BlockNotFound(f"MFS root {root} is missing from the blockstore")
        if root is None:
            root = self.tree.empty_dir().cid
        self._root = root
        self._synced = synced if synced is not None and store.has(synced) else root
        self._seq = self._synced_seq = 0  # commit numbers
        # (last committed root, its number): one object, so a sync thread reads both at once
        self._committed = (root, 0)
        self._sync_mutex = threading.Lock()  # one store.sync() + record at a time

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> MFS:
        """Construct in a worker thread (the constructor reads the root file)."""
        return await trio.to_thread.run_sync(lambda: cls(*args, **kwargs))

    # ---------------------------------------------------------------- roots
    def root(self) -> CID:
        """The current in-memory root (maybe not flushed yet)."""
        return self._root

    def flushed_root(self) -> CID:
        return self._committed[0]

    def synced_root(self) -> CID:
        return self._synced

    def pending_roots(self) -> list[CID]:
        """Every root GC must keep for MFS: in-memory, last committed, last synced."""
        return list(dict.fromkeys([self._root, self._committed[0], self._synced]))

    def _commit_sync(self, quick: bool = False) -> None:
        """Record ``_root`` as committed (under ``_lock``): synced at once unless a
        flusher runs, else appended to the root log without fsync. ``quick`` (on the trio
        thread, after _quick_ready): no log compaction, and no spill is near."""
        with self.writer.held():  # (while the flusher holds it: one more count, no wait)
            self._commit_locked(quick)

    def _commit_locked(self, quick: bool) -> None:
        root = self._root
        self._seq += 1
        pending = self.pending
        if self.deferred:
            if pending is not None:
                # the nodes first: the root log never names a lost one
                pending.log_batch(compact=not quick)
                if not quick and pending.pending_bytes > PENDING_MAX:
                    pending.spill(root, self._seq)
            self.records.append(root)
        else:
            self._sync_now(root, self._seq)
            self.records.drop_log()
            if pending is not None:
                pending.drop_log()
        self._committed = (root, self._seq)

    def _sync_now(self, root: CID, seq: int) -> None:
        """fsync every block written so far, then record ``root`` (committed as number
        ``seq`` before this call, so all its blocks were written) as the synced root,
        unless a later one is recorded already."""
        with self.writer.held(), self._sync_mutex:
            latest = self._committed
            if latest[1] > seq:  # sync the newest committed root: never one older than a
                root, seq = latest  # spill's (see PendingBlocks.retire)
            if self.pending is not None:
                self.pending.write_reachable(root)
            self.store.sync()
            if seq < self._synced_seq:
                return
            self.records.write_synced(root)
            self._synced, self._synced_seq = root, seq
            if self.pending is not None:
                self.pending.retire(seq)

    # ---------------------------------------------------------------- runners
    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def _mutate(self, op: Callable[[CID], CID], flush: bool,
                      quick: Callable[[CID], bool] | None = None) -> CID:
        """Run ``op(root) -> new root`` under the lock and commit it (synced too when no
        flusher runs). In a worker thread, unless ``quick(root)`` says the change needs
        only cached directories and a little hashing and the flusher runs: then on the trio
        thread (see the module docstring)."""
        async with self._lock:
            if quick is not None and self._quick_ready() and quick(self._root):
                gc_lock = self._gc_lock.try_writing() if self._gc_lock else nullcontext(True)
                with gc_lock as held:
                    if held:
                        return self._apply(op, flush, quick=True)

            def work() -> CID:
                with self._gc_lock.writing() if self._gc_lock else nullcontext():
                    return self._apply(op, flush)
            return await self._run(work)

    def _quick_ready(self) -> bool:
        """A quick change may run: the flusher runs, the node log takes one append, and
        its nodes cannot reach a spill."""
        pending = self.pending
        return self.deferred and pending is not None and pending.log_open and \
            pending.pending_bytes + QUICK_NODE_BYTES + QUICK_DATA_BYTES < PENDING_MAX

    def _apply(self, op: Callable[[CID], CID], flush: bool, quick: bool = False) -> CID:
        new_root = op(self._root)
        self._root = new_root
        if flush:
            self._commit_sync(quick)
        return new_root

    def _quick_add(self, path: str, parents: bool = False) -> Callable[[CID], bool]:
        """``quick`` for a change that adds the new name ``path`` (see DirCache.quick_add)."""
        def quick(root: CID) -> bool:
            if parents:
                return False
            try:
                segs = split_path(path)
            except InvalidInput:
                return False  # the change itself raises it
            return self.tree.dirs.quick_add(root, segs, self.params, QUICK_NODE_BYTES)
        return quick

    # ---------------------------------------------------------------- changes
    async def mkdir(self, path: str, parents: bool = False, flush: bool = True) -> None:
        """Create a directory; EEXIST when it exists (unless ``parents`` and a directory)."""
        await self._mutate(lambda r: self.tree.mkdir(r, path, parents), flush,
                           self._quick_add(path, parents))

    async def write(self, path: str, data: Any, offset: int = 0, create: bool = False,
                    truncate: bool = False, parents: bool = False, count: int | None = None,
                    flush: bool = True) -> None:
        """Write ``data`` (bytes, file-like or (async) iterable of bytes, streamed) at
        ``offset``; past the end zero-fills; ``truncate`` empties the file first; ``count``
        caps the bytes taken from ``data``. ENOENT without ``create``, EISDIR on a dir."""
        small = isinstance(data, (bytes, bytearray, memoryview)) and \
            len(data) <= QUICK_DATA_BYTES and offset == 0 and create and count is None
        await self._mutate(lambda r: self.tree.write(r, path, _source_iter(data), offset,
                                                     create, truncate, parents, count), flush,
                           self._quick_add(path, parents) if small else None)

    async def rm(self, path: str, recursive: bool = False, force: bool = False,
                 flush: bool = True) -> None:
        """Remove; a directory needs ``recursive`` (EISDIR otherwise, kubo's message)."""
        await self._mutate(lambda r: self.tree.rm(r, path, recursive, force), flush)

    async def rmdir(self, path: str, flush: bool = True) -> None:
        """Remove an empty directory; ENOTEMPTY / ENOTDIR as POSIX rmdir."""
        await self._mutate(lambda r: self.tree.rmdir(r, path), flush)

    async def mv(self, src: str, dst: str, flush: bool = True) -> str:
        """Move; into ``dst`` when it is an existing directory (kubo). The path ``src`` is
        at now."""
        moved_to: list[str] = []

        def op(root: CID) -> CID:
            new_root, target = self.tree.mv(root, src, dst)
            moved_to.append(target)
            return new_root
        await self._mutate(op, flush)
        return moved_to[-1]

    async def cp(self, src: str, dst: str, parents: bool = False, flush: bool = True) -> None:
        """Link ``src`` (``/ipfs/<cid>/...`` or an MFS path) at ``dst``; no bytes copied."""
        await self._mutate(lambda r: self.tree.cp(r, src, dst, parents), flush)

    async def symlink(self, path: str, target: str, flush: bool = True) -> None:
        await self._mutate(lambda r: self.tree.symlink(r, path, target), flush,
                           self._quick_add(path))

    async def link(self, path: str, cid: CID, tsize: int, parents: bool = False,
                   flush: bool = True) -> None:
        """Make the already imported file DAG ``cid`` (cumulative size ``tsize``) the file
        at ``path``, replacing a file there: one step, no bytes read. EISDIR on a
        directory, ENOENT/ENOTDIR for a bad parent (unless ``parents``)."""
        await self._mutate(lambda r: self.tree.link(r, path, cid, tsize, parents), flush,
                           self._quick_add(path, parents))

    async def flush(self, path: str = "/") -> CID:
        """Commit and sync the current root (see module docstring); the CID at ``path``."""
        async with self._lock:
            if self._root != self._committed[0]:
                await self._run(self._commit_sync)
            root, seq = self._committed
        await self._sync(root, seq)
        return await self._run(lambda: self.tree.resolve(root, path))

    async def sync(self) -> None:
        """Make the last committed root durable (no-op when it is). Runs beside
        mutations: a committed root's blocks were all written before it was committed."""
        await self._sync(*self._committed)

    async def _sync(self, root: CID, seq: int) -> None:
        if seq <= self._synced_seq and root == self._synced:
            return
        await self._run(lambda: self._sync_now(root, seq))

    async def run_flusher(self, interval: float = FLUSH_INTERVAL, *,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Defer syncs while this runs (see the module docstring): sync every ``interval``
        seconds when the committed root changed, and once more when cancelled. Holds the
        MFS lock meanwhile (EBUSY when another process has it for ``LOCK_WAIT`` s)."""
        with trio.CancelScope(shield=True):  # (held, or EBUSY: never lost in between)
            await trio.to_thread.run_sync(self.writer.acquire)
        try:
            self._defer(True)
            task_status.started()
            while True:
                await trio.sleep(interval)
                if self._committed[0] != self._synced:
                    try:
                        await self.sync()
                    except McpfsError as exc:
                        log.error("MFS background sync failed: %s", exc)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    async with self._lock:
                        self._defer(False)
                        await self._run(self._commit_sync)  # syncs, drops the logs
                except McpfsError as exc:
                    log.error("MFS final sync failed: %s", exc)
                finally:
                    self.writer.release()

    def _defer(self, on: bool) -> None:
        """Commits without fsync, directory nodes held in ``pending`` (flusher running),
        or every commit synced and nodes written at once."""
        self.deferred = on
        pending = self.pending
        if on and pending is not None:
            self.tree.defer = lambda cid, block: pending.defer(cid, block, self._seq + 1)
        else:
            self.tree.defer = None

    # ---------------------------------------------------------------- reads (no lock)
    async def stat(self, path: str) -> dict:
        """kubo's ``files stat`` JSON fields: Hash, Size, CumulativeSize, Blocks, Type."""
        root = self._root
        return await self._run(lambda: self.tree.stat(root, path))

    async def ls(self, path: str = "/", long: bool = False) -> list[dict]:
        """kubo's ``files ls`` Entries: Name, Type (0 file, 1 directory), Size, Hash."""
        root = self._root
        return await self._run(lambda: self.tree.ls(root, path, long))

    async def read(self, path: str, offset: int = 0, count: int | None = None) -> bytes:
        """The whole range at once; prefer :meth:`iter_read` for large files."""
        root = self._root
        return await self._run(lambda: b"".join(
            self.tree.read_range(self.tree.file_cid(root, path), offset, count)))

    async def iter_read(self, path: str, offset: int = 0, count: int | None = None,
                        piece: int = READ_PIECE) -> AsyncIterator[bytes]:
        """Yield the range in pieces of at most ``piece`` bytes, one thread hop each."""
        root = self._root
        it = await self._run(lambda: self.tree.read_range(self.tree.file_cid(root, path),
                                                          offset, count, piece))
        while True:
            chunk = await self._run(lambda: next(it, None))
            if chunk is None:
                return
            yield chunk

    async def exists(self, path: str) -> bool:
        root = self._root
        return await self._run(
            lambda: self.tree.lookup(root, split_path(path), missing_ok=True) is not None)


__all__ = ["MFS", "MFS_PARAMS", "EMPTY_DIR_V0"]
