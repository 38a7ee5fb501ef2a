"""kubo's Mutable File System (``ipfs files``) over our blockstore, for trio.

``MFS`` holds one root CID in memory and persists it in ``root_file`` (the CID as text).
The root file changes only in :meth:`MFS.flush`: blockstore ``sync()`` first, then a
temporary file, fsync, rename, fsync of the folder. A crash at any point therefore leaves the
last flushed root, whose blocks were all synced before it was recorded. Mutations flush by
default (kubo's ``--flush=true``); with ``flush=False`` the change lives in memory until the
next flush and is lost by a crash.

Path operations themselves live in :mod:`mfs_tree` (pure functions root -> new root).
File CIDs: a written file is re-imported with the MFS params, so its CID equals
``ipfs add`` of the same bytes with those params (our documented choice; kubo's DagModifier
may produce a different DAG for the same bytes).

Concurrency and lock order:

1. ``MFS._lock`` (trio.Lock) serializes mutations and flushes; reads take no lock and work
   on a snapshot of the root (CIDs are immutable).
2. inside the worker thread, ``gc_lock.writing()`` (gc.GCLock, optional) for the whole
   mutation, so a GC never runs between "blocks written" and "root linked".
3. the blockstore's and reader's own internal locks (leaves).

All blocking work (hashing, block I/O, fsync) runs in ``trio.to_thread.run_sync`` under one
CapacityLimiter. A mutation's thread is not abandoned on cancellation: it completes (or
fails) before the cancellation is delivered, and ``_root`` is assigned inside the thread,
so a mutation is all-or-nothing. GC must keep :meth:`pending_roots` (the in-memory root and
the last flushed one).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

import trio

from ...errors import BlockNotFound, InvalidInput, McpfsError
from .blockstore import Blockstore
from .cid import CID
from .gc import GCLock
from .importer import ImportParams
from .mfs_tree import READ_PIECE, Tree, split_path
from .pins import atomic_write
from .reader import UnixFSReader

# kubo's MFS defaults: CIDv0, size-262144 chunks, dag-pb leaves, balanced layout.
MFS_PARAMS: Final = ImportParams()
EMPTY_DIR_V0: Final = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
THREADS: Final = 4  # worker threads for MFS block work (reads and the one mutation)
SOURCE_PIECE: Final = 256 * 1024  # bytes pulled per read() from a file-like write source


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
        self._lock = trio.Lock()
        self._limiter = limiter or trio.CapacityLimiter(THREADS)
        if self.root_file.exists():
            try:
                root = CID.decode(self.root_file.read_text().strip())
            except InvalidInput as exc:
                raise McpfsError(f"{self.root_file}: invalid MFS root: {exc}") from None
            if not store.has(root):
                raise BlockNotFound(f"MFS root {root} is missing from the blockstore")
        else:
            root = self.tree.empty_dir().cid
        self._root = root
        self._flushed = root

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> MFS:
        """Construct in a worker thread (the constructor reads the root file)."""
        return await trio.to_thread.run_sync(lambda: cls(*args, **kwargs))

    # ---------------------------------------------------------------- roots
    def root(self) -> CID:
        """The current in-memory root (maybe not flushed yet)."""
        return self._root

    def flushed_root(self) -> CID:
        return self._flushed

    def pending_roots(self) -> list[CID]:
        """Every root GC must keep for MFS: the in-memory one and the last flushed one."""
        return list(dict.fromkeys([self._root, self._flushed]))

    def _flush_sync(self) -> None:
        """Persist ``_root``: sync blocks, then atomically replace the root file."""
        root = self._root
        self.store.sync()
        atomic_write(self.root_file, f"{root}\n".encode())
        self._flushed = root

    # ---------------------------------------------------------------- runners
    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def _mutate(self, op: Callable[[CID], CID], flush: bool) -> CID:
        """Run ``op(root) -> new root`` in a thread under the lock; commit; maybe flush."""
        async with self._lock:
            def work() -> CID:
                with self._gc_lock.writing() if self._gc_lock else nullcontext():
                    new_root = op(self._root)
                    self._root = new_root
                    if flush:
                        self._flush_sync()
                    return new_root
            return await self._run(work)

    # ---------------------------------------------------------------- changes
    async def mkdir(self, path: str, parents: bool = False, flush: bool = True) -> None:
        """Create a directory; EEXIST when it exists (unless ``parents`` and a directory)."""
        await self._mutate(lambda r: self.tree.mkdir(r, path, parents), flush)

    async def write(self, path: str, data: Any, offset: int = 0, create: bool = False,
                    truncate: bool = False, parents: bool = False, count: int | None = None,
                    flush: bool = True) -> None:
        """Write ``data`` (bytes, file-like or (async) iterable of bytes, streamed) at
        ``offset``; past the end zero-fills; ``truncate`` empties the file first; ``count``
        caps the bytes taken from ``data``. ENOENT without ``create``, EISDIR on a dir."""
        await self._mutate(lambda r: self.tree.write(r, path, _source_iter(data), offset,
                                                     create, truncate, parents, count), flush)

    async def rm(self, path: str, recursive: bool = False, force: bool = False,
                 flush: bool = True) -> None:
        """Remove; a directory needs ``recursive`` (EISDIR otherwise, kubo's message)."""
        await self._mutate(lambda r: self.tree.rm(r, path, recursive, force), flush)

    async def rmdir(self, path: str, flush: bool = True) -> None:
        """Remove an empty directory; ENOTEMPTY / ENOTDIR as POSIX rmdir."""
        await self._mutate(lambda r: self.tree.rmdir(r, path), flush)

    async def mv(self, src: str, dst: str, flush: bool = True) -> None:
        """Move; into ``dst`` when it is an existing directory (kubo)."""
        await self._mutate(lambda r: self.tree.mv(r, src, dst), flush)

    async def cp(self, src: str, dst: str, parents: bool = False, flush: bool = True) -> None:
        """Link ``src`` (``/ipfs/<cid>/...`` or an MFS path) at ``dst``; no bytes copied."""
        await self._mutate(lambda r: self.tree.cp(r, src, dst, parents), flush)

    async def symlink(self, path: str, target: str, flush: bool = True) -> None:
        await self._mutate(lambda r: self.tree.symlink(r, path, target), flush)

    async def flush(self, path: str = "/") -> CID:
        """Persist the current root (see module docstring); return the CID at ``path``."""
        async with self._lock:
            def work() -> CID:
                self._flush_sync()
                return self.tree.resolve(self._root, path)
            return await self._run(work)

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
