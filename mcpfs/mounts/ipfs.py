"""``/ipfs/<cid>[/path]``: any DAG the local node has, read-only.

``lookup("")`` is the subtree root, whose listing is the pinned roots (recursive and direct;
indirect pins are not walked). ``<cid>`` is decoded first: an invalid CID is ENOENT, a valid
one resolves through named links (plain and HAMT directories). Content never changes at a
path, so resolutions are cached (LRU, no invalidation) and the kernel gets long timeouts.

Errors: a missing block is EIO (logged as a warning naming the block: the embedded node has
no network yet, so the "bounded wait" for a fetch is zero; ``fetcher`` is the hook where a
bitswap fetch with a deadline will go); a corrupt block is EIO with a log line naming its
CID; a malformed node is EIO; a missing name is ENOENT; a path through a file is ENOTDIR;
every change is EROFS (the base class).

Concurrency: reader/store calls run in worker threads under ``limiter``. ``_resolved`` is
touched only from the trio thread (never inside the worker functions), so it needs no lock.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
from cachetools import LRUCache

from ..backends.ipfs.cid import CID, DAG_PB, RAW
from ..backends.ipfs.reader import NodeInfo, UnixFSReader
from ..errors import BlockNotFound, CorruptBlock, InvalidInput, McpfsError, NotFound
from .base import (DIR, FILE, SYMLINK, Attr, Capabilities, Mount, StatFS, joined, split,
                   statfs_of)
from .prefetch import MiB, Prefetcher

log = logging.getLogger("mcpfs.mounts.ipfs")

T = TypeVar("T")
THREADS = 8  # concurrent reader calls for /ipfs
RESOLVE_CACHE = 65536  # path -> (CID, Attr) entries kept
LISTING_CACHE_ENTRIES = 200_000  # directory entries kept in listing caches (per mount)
IMMUTABLE_TIMEOUT = 86400.0  # kernel attr/entry cache lifetime for content-addressed paths
LOCAL_MAX_WINDOW = 16 * MiB  # read-ahead of a sequential reader of local blocks (4 chunk
# reads of 4 MiB in flight; more threads only contend for the 2 cores and the GIL)


@contextmanager
def block_errors(what: str) -> Iterator[None]:
    """Missing and corrupt blocks become EIO with one log line naming the block; malformed
    nodes EIO; other McpfsErrors pass unchanged."""
    try:
        yield
    except CorruptBlock as exc:
        log.error("%s: %s", what, exc)
        raise McpfsError(str(exc), errno=errno.EIO) from None
    except BlockNotFound as exc:
        log.warning("%s: %s", what, exc)
        raise McpfsError(str(exc), errno=errno.EIO) from None
    except InvalidInput as exc:
        log.error("%s: malformed content: %s", what, exc)
        raise McpfsError(str(exc), errno=errno.EIO) from None


async def ipfs_call(limiter: trio.CapacityLimiter, fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` (reader/store work) in a worker thread under :func:`block_errors`."""
    with block_errors(what):
        return await trio.to_thread.run_sync(fn, limiter=limiter)


def attr_of(info: NodeInfo, cid_text: str | None = None) -> Attr:
    """Attr of a UnixFS node (``raw`` nodes of other codecs show as files of the block)."""
    mtime = info.mtime[0] * 10**9 + (info.mtime[1] or 0) if info.mtime else None
    extra: dict[str, Any] = {"cid": cid_text or info.cid}  # its text made when asked
    if mtime is not None:
        extra["mtime_ns"] = mtime
    if info.mode is not None:
        extra["perm"] = info.mode & 0o777
    if info.type == "directory":
        return Attr(DIR, 0, **extra)
    if info.type == "symlink":
        return Attr(SYMLINK, info.size, target=info.target, **extra)
    return Attr(FILE, info.size, **extra)


class Listings:
    """Directory listings by directory CID (content-addressed: never stale), in an LRU
    bounded by the total number of entries, each with a name index for lookups. Called
    from worker threads; ``_lock`` guards the LRU, listings are built outside it."""

    def __init__(self, reader: UnixFSReader, max_entries: int = LISTING_CACHE_ENTRIES) -> None:
        self.reader = reader
        self._lock = threading.Lock()
        self._cache: LRUCache[CID, dict[str, tuple[CID, Attr]]] = \
            LRUCache(max_entries, getsizeof=lambda v: max(1, len(v)))

    def get(self, cid: CID) -> dict[str, tuple[CID, Attr]]:
        """name -> (child CID, child Attr) of the directory ``cid``, in listing order
        (blocking)."""
        with self._lock:
            hit = self._cache.get(cid)
        if hit is not None:
            return hit
        out = {link.name or "": (link.cid, attr_of(self.reader.stat(link.cid)))
               for link in self.reader.list_dir(cid)}
        with self._lock:
            if len(out) <= self._cache.maxsize:
                self._cache[cid] = out
        return out

    def peek(self, cid: CID) -> dict[str, tuple[CID, Attr]] | None:
        """The cached listing of ``cid``, or None: no I/O, so safe on the trio thread."""
        with self._lock:
            return self._cache.get(cid)

    def child(self, cid: CID, name: str) -> CID | None:
        """The CID named ``name`` in directory ``cid`` (cached listing, else the reader)."""
        with self._lock:
            hit = self._cache.get(cid)
        if hit is not None:
            entry = hit.get(name)
            return entry[0] if entry is not None else None
        link = self.reader.find(cid, name)
        return link.cid if link is not None else None


class CidReader:
    """Random-access reads of one immutable file (or a raw block of any codec).

    A UnixFS file (or raw leaf) of known ``size`` is read through the shared
    :class:`~mcpfs.mounts.prefetch.Prefetcher`: sequential reads are answered from its
    window on the trio thread (no worker-thread hop per FUSE read) while the next chunks are
    read ahead in worker threads; a random read fetches only what it asks for. Read-ahead
    memory counts against the prefetcher's process-wide budget; local blocks need a small
    window (``LOCAL_MAX_WINDOW``). ``identity`` (the CID) lets vfs/ keep the kernel's page
    cache across opens of unchanged content."""

    def __init__(self, reader: UnixFSReader, cid: CID, limiter: trio.CapacityLimiter,
                 size: int | None = None) -> None:
        self.reader = reader
        self.cid = cid
        self.identity = str(cid)
        self.limiter = limiter
        self.prefetcher: Prefetcher | None = None
        if size is not None and cid.codec in (DAG_PB, RAW):
            self.prefetcher = Prefetcher(self._fetch, size, max_window=LOCAL_MAX_WINDOW,
                                         name=f"/ipfs/{cid}")

    def _read(self, offset: int, size: int) -> bytes:
        if self.cid.codec in (DAG_PB, RAW):
            return self.reader.read(self.cid, offset, size)
        return self.reader.store.get(self.cid)[offset:offset + size]

    async def _fetch(self, start: int, end: int) -> bytes:
        return await ipfs_call(self.limiter, lambda: self._read(start, end - start),
                               f"read {self.cid}")

    async def read(self, offset: int, size: int) -> bytes:
        if self.prefetcher is not None:
            try:
                return await self.prefetcher.read(offset, size)
            except McpfsError:
                pass  # maybe a bad block elsewhere in the chunk: try exactly what is asked
        return await self._fetch(offset, offset + size)

    async def close(self) -> None:
        if self.prefetcher is not None:
            await self.prefetcher.close()


class IpfsMount(Mount):
    name = "ipfs"
    capabilities = Capabilities(immutable=True, attr_timeout=IMMUTABLE_TIMEOUT,
                                entry_timeout=IMMUTABLE_TIMEOUT)

    def __init__(self, repo: Any, limiter: trio.CapacityLimiter | None = None,
                 fetcher: Callable[[CID], Any] | None = None) -> None:
        """``repo``: a backends.ipfs.node.Repo (reader, store, pins). ``fetcher``: reserved
        for the network (an async fetch of a missing block under a deadline)."""
        self.repo = repo
        self.reader: UnixFSReader = repo.reader
        self.limiter = limiter or trio.CapacityLimiter(THREADS)
        self.fetcher = fetcher
        self._resolved: LRUCache[str, tuple[CID, Attr]] = LRUCache(RESOLVE_CACHE)
        self.listings = Listings(self.reader)

    async def resolve(self, path: str) -> tuple[CID, Attr]:
        """(CID, Attr) at ``<cid>/a/b``; ENOENT for an invalid CID or a missing name."""
        segs = split(path)
        path = "/".join(segs)
        hit = self._resolved.get(path)
        if hit is not None:
            return hit
        try:
            root = CID.decode(segs[0])
        except InvalidInput:
            raise NotFound(f"/ipfs/{path}: not a valid CID") from None

        def work() -> tuple[CID, Attr]:
            cid = self.reader.resolve(root, segs[1:]) if len(segs) > 1 else root
            return cid, attr_of(self.reader.stat(cid), segs[0] if len(segs) == 1 else None)
        result = await ipfs_call(self.limiter, work, f"/ipfs/{path}")
        self._resolved[path] = result
        return result

    async def lookup(self, path: str) -> Attr:
        if not split(path):
            return Attr(DIR)
        return (await self.resolve(path))[1]

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        if not split(path):
            for name, attr in await self._pinned():
                yield name, attr
            return
        cid, attr = await self.resolve(path)
        if not attr.is_dir:
            raise McpfsError(f"/ipfs/{path}: not a directory", errno=errno.ENOTDIR)

        entries = await ipfs_call(self.limiter, lambda: self.listings.get(cid),
                                  f"list /ipfs/{path}")
        base = joined(path)
        for name, (child_cid, child) in entries.items():
            self._resolved[f"{base}/{name}"] = (child_cid, child)
            yield name, child

    async def _pinned(self) -> list[tuple[str, Attr]]:
        def work() -> list[tuple[str, Attr]]:
            out = []
            for cid, _kind, _name in [*self.repo.pins.ls("recursive"),
                                      *self.repo.pins.ls("direct")]:
                try:
                    out.append((str(cid), attr_of(self.reader.stat(cid))))
                except McpfsError as exc:  # a pin whose root is unreadable still lists
                    log.warning("pinned root %s: %s", cid, exc)
                    out.append((str(cid), Attr(DIR, cid=str(cid))))
            return out
        return await ipfs_call(self.limiter, work, "list /ipfs")

    async def open_read(self, path: str) -> CidReader:
        cid, attr = await self.resolve(path)
        if attr.kind != FILE:
            raise McpfsError(f"/ipfs/{path}: is a directory", errno=errno.EISDIR)
        return CidReader(self.reader, cid, self.limiter, attr.size)

    async def getxattr(self, path: str, name: str) -> bytes:
        if name == "user.mcpfs.size" and split(path):
            cid, attr = await self.resolve(path)
            if attr.is_dir:  # a directory's size: the cumulative size of its DAG
                info = await ipfs_call(self.limiter, lambda: self.reader.stat(cid), path)
                return str(info.cumulative_size).encode()
        return await super().getxattr(path, name)

    async def statfs(self) -> StatFS:
        return await trio.to_thread.run_sync(statfs_of, self.repo.root, limiter=self.limiter)


__all__ = ["IpfsMount", "CidReader", "ipfs_call", "attr_of", "block_errors",
           "Listings"]
