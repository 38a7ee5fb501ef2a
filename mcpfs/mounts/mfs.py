"""``/mfs/...``: the repo's Mutable File System (kubo's ``ipfs files``), read-write.

Reads take a snapshot of the current MFS root (``MFS.root()``) and resolve through the
reader: an open file keeps reading the CID it resolved at open (close-to-open). Changes go
through the :class:`~mcpfs.backends.ipfs.mfs.MFS` methods, each of which links the new DAG
and flushes the root (blocks synced, root file replaced atomically) before returning.

``commit`` makes the written bytes the file's content with the MFS import params, so a
file's CID equals ``mcpfs add -n`` of the same bytes with those params, by one of three
routes: a file written purely sequentially from offset 0 past the memory spool was imported
as it arrived (:class:`StreamImport`, started by vfs through :meth:`MfsMount.start_stream`)
and is linked with ``MFS.link`` (no re-import); a small file still in its memory spool is
imported from memory; anything else (random writes, truncates, an import that failed)
imports the spool file (``mfs.write(..., truncate=True)``).

A StreamImport runs ``import_chunks`` in its own thread (files can stay open for any time,
so it does not occupy a pool worker) holding ``gc_lock.writing()`` until it finishes or is
abandoned, so a GC cannot remove blocks it has written or deduplicated against; a file held
open for long therefore delays ``repo gc``. It takes pieces from a bounded queue
(``STREAM_QUEUE`` pieces): ``feed`` blocks when the importer is behind (back-pressure on
the writer). Abandoned or failed imports leave unreferenced blocks for the next GC.

Files' modes and mtimes set through the mount (chmod, utimes) and the mtime of each commit
are kept beside the DAG, tied to the file's CID (kept_attrs.py): CIDs stay those of the bytes.

POSIX rename is built from MFS's kubo-style ``mv`` (which moves *into* an existing
directory): an existing empty target directory is removed first (ENOTEMPTY if it has
entries), a file onto a directory is EISDIR, a directory onto a file ENOTDIR.

Errors: ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY from MFS; missing/corrupt blocks EIO with
a log line (see ipfs.block_errors); ENOSPC when the blockstore's disk is full.

Concurrency: ``_ns_lock`` (trio.Lock) makes rename's check-then-move one step against other
namespace changes made through this mount; MFS's own lock (taken inside each MFS call) comes
after it. Reader work runs in threads under ``limiter``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from cachetools import LRUCache

from ..backends.ipfs.cid import CID
from ..backends.ipfs.importer import Imported
from ..backends.ipfs.stream_import import StreamImport
from ..errors import McpfsError
from .base import (DIR, FILE, Attr, Capabilities, Mount, StatFS, Writer, child_path, joined,
                   split, statfs_of)
from .ipfs import CidReader, Listings, attr_of, block_errors, ipfs_call
from .kept_attrs import KeptAttrs

THREADS = 4  # concurrent reader calls for /mfs (MFS mutations have their own limiter)

log = logging.getLogger("mcpfs.mounts.mfs")
MFS_TIMEOUT = 1.0  # kernel attr/entry cache lifetime: MFS can change under us (CLI, socket)
ATTRS_DB = "mfs-attrs.sqlite"  # in the repo: modes and mtimes of files (kept_attrs.py)
FILE_ATTRS = 65536  # Attrs of files by CID (immutable), for lookups and opens without I/O


class SpoolSource:
    """A file-like over a spool path for ``MFS.write``: opened on the first ``read`` (in
    MFS's worker thread), closed at end of file or by :meth:`close`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self._fh: Any = None
        self._done = False

    def read(self, n: int) -> bytes:
        if self._done:
            return b""
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed at EOF / close()
        data = self._fh.read(n)
        self.size += len(data)
        if not data:
            self.close()
        return data

    def close(self) -> None:
        self._done = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def mfs_path(path: str) -> str:
    return "/" + joined(path)


class MfsMount(Mount):
    name = "mfs"
    capabilities = Capabilities(writable=True, rename=True, random_write=True, symlinks=True,
                                attr_timeout=MFS_TIMEOUT, entry_timeout=MFS_TIMEOUT)
    memory_commit = True  # vfs may hand commit() a spool still in memory
    local_commit = True  # the repo is on this machine (vfs/recovery.py)

    def __init__(self, repo: Any, limiter: trio.CapacityLimiter | None = None) -> None:
        """``repo``: a backends.ipfs.node.Repo; its ``mfs`` is opened here (reads the root
        file: call from a worker thread or at startup)."""
        self.repo = repo
        self.mfs = repo.mfs
        self.reader = repo.reader
        self.limiter = limiter or trio.CapacityLimiter(THREADS)
        self._ns_lock = trio.Lock()
        self.listings = Listings(self.reader)
        # file Attr by CID (content-addressed: never stale); filled in worker threads, read
        # on the trio thread: guarded by _attrs_lock
        self._file_attrs: LRUCache[CID, Attr] = LRUCache(FILE_ATTRS)
        # (root CID, path) -> (CID, Attr) of paths resolved through the reader (a directory
        # not decoded in this process: after a restart, or a HAMT): never stale either, as
        # a new root is a new key. Same lock.
        self._resolved: LRUCache[tuple[CID, str], tuple[CID, Attr]] = LRUCache(FILE_ATTRS)
        self._attrs_lock = threading.Lock()
        self.attrs = KeptAttrs(repo.root / ATTRS_DB)  # modes and mtimes (trio thread only)

    # ---------------------------------------------------------------- reading
    def _resolve_sync(self, path: str) -> CID:
        """The CID at ``path`` under the current root, through cached listings."""
        cid = self.mfs.root()
        segs = split(path)
        for i, name in enumerate(segs):
            if self.mfs.tree.kind(cid) != "directory":
                raise McpfsError(f"/mfs/{'/'.join(segs[:i])}: not a directory",
                                 errno=errno.ENOTDIR)
            child = self._child(cid, name)
            if child is None:
                raise McpfsError(f"/mfs/{path}: no such file", errno=errno.ENOENT)
            cid = child
        return cid

    def _child(self, cid: CID, name: str) -> CID | None:
        """MFS's decoded directory when cached (a directory MFS just wrote: no decoding of
        its new block), else the listing cache, else the reader."""
        state = self.mfs.tree.dirs.get(cid)
        if state is not None:
            entry = state.get(name)
            return entry[0] if entry is not None else None
        return self.listings.child(cid, name)

    def _attr(self, cid: CID) -> Attr:
        state = self.mfs.tree.dirs.get(cid)
        if state is not None:  # a directory: its Attr without decoding its block
            mtime = state.mtime
            return Attr(DIR, 0, None if state.mode is None else state.mode & 0o777,
                        **({"mtime_ns": mtime[0] * 10**9 + (mtime[1] or 0)} if mtime else {}),
                        cid=cid)  # (its text made when asked)
        attr = attr_of(self.reader.stat(cid))
        with self._attrs_lock:
            self._file_attrs[cid] = attr
        return attr

    async def resolve(self, path: str) -> tuple[CID, Attr]:
        hit = self._peek(path)
        if hit is not None:
            return hit

        def work() -> tuple[CID, Attr]:
            root = self.mfs.root()
            cid = self._resolve_sync(path)
            found = cid, self._attr(cid)
            if self.mfs.root() == root:  # resolved under ``root`` throughout
                with self._attrs_lock:
                    self._resolved[(root, path)] = found
            return found
        return await ipfs_call(self.limiter, work, f"/mfs/{path}")

    def _peek(self, path: str) -> tuple[CID, Attr] | None:
        """(CID, Attr) at ``path`` from caches alone (MFS's decoded directories, the
        listings, the file Attrs): no I/O, so on the trio thread. ENOENT for a name a cached
        directory lacks (the lookup before every create); None when it needs the reader
        (which also gives the ENOTDIR of a path through a file)."""
        cid = self.mfs.root()
        with self._attrs_lock:
            known = self._resolved.get((cid, path))
        if known is not None:
            return known
        attr: Attr | None = None
        for name in split(path):
            state = self.mfs.tree.dirs.get(cid)
            entry: Any = state.get(name) if state is not None else None
            if state is None:
                listing = self.listings.peek(cid)
                if listing is None:
                    return None
                entry = listing.get(name)
            if entry is None:
                raise McpfsError(f"/mfs/{path}: no such file", errno=errno.ENOENT)
            cid, attr = entry[0], (entry[1] if state is None else None)
        if cid in self.mfs.tree.dirs:
            return cid, self._attr(cid)
        if attr is None:
            with self._attrs_lock:
                attr = self._file_attrs.get(cid)
        return (cid, attr) if attr is not None else None

    def _cached(self, path: str) -> Attr | None:
        """:meth:`_peek`'s Attr (None when it needs I/O)."""
        hit = self._peek(path)
        return hit[1] if hit is not None else None

    async def lookup(self, path: str) -> Attr:
        attr = self._cached(path)
        if attr is None:
            attr = (await self.resolve(path))[1]
        return self.attrs.overlay(joined(path), attr)

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        def work() -> tuple[list[str], dict[str, tuple[CID, Attr]]]:
            cid = self._resolve_sync(path)
            if self.mfs.tree.kind(cid) != "directory":
                raise McpfsError(f"/mfs/{path}: not a directory", errno=errno.ENOTDIR)
            listing = self.listings.get(cid)  # (sorted names: no tuple per entry)
            return sorted(listing), listing
        folder = joined(path)
        names, listing = await ipfs_call(self.limiter, work, f"list /mfs/{path}")
        kept = self.attrs if self.attrs else None  # (no path string per entry without)
        for name in names:
            attr = listing[name][1]
            yield name, attr if kept is None else kept.overlay(child_path(folder, name), attr)

    async def open_read(self, path: str) -> CidReader:
        cid, attr = await self.resolve(path)
        if attr.kind != FILE:
            raise McpfsError(f"/mfs/{path}: is a directory", errno=errno.EISDIR)
        return CidReader(self.reader, cid, self.limiter, attr.size)

    def attach_stats(self, stats: Any) -> None:
        """Count the embedded node's block reads/writes in ``stats`` (Stats.backend)."""
        self.repo.attach_stats(stats)

    async def warm(self) -> None:
        """Save the files' modes and mtimes every few seconds (kept_attrs.py)."""
        await self.attrs.run()

    async def aclose(self) -> None:
        """Unmount: make the MFS root durable (blocks fsynced, root file synced) and save
        the files' modes and mtimes."""
        try:
            with block_errors("sync /mfs"):
                await self.mfs.flush()
        finally:
            await self.attrs.close()

    async def sync(self) -> None:
        """fsync(2) of a file: make the committed MFS root durable now."""
        with block_errors("sync /mfs"):
            await self.mfs.flush()

    async def statfs(self) -> StatFS:
        return await trio.to_thread.run_sync(statfs_of, self.repo.root, limiter=self.limiter)

    # ---------------------------------------------------------------- writing
    async def open_write(self, path: str, spool: Any, truncate: bool,
                         create: bool = False) -> Writer:
        """Check that ``path`` can take a file (EISDIR on a directory, ENOENT/ENOTDIR on a
        bad parent; skipped for a name the kernel just created); the spool is filled lazily
        by vfs through :meth:`fill_spool`."""
        segs = split(path)
        if not segs:
            raise McpfsError("/mfs: is a directory", errno=errno.EISDIR)
        if create:
            return Writer(path, spool, existed=False)

        def probe() -> Attr | None:  # one hop: the target, else its parent must be a dir
            try:
                return self._attr(self._resolve_sync(path))
            except McpfsError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            parent = self._resolve_sync("/".join(segs[:-1]))
            if self.mfs.tree.kind(parent) != "directory":
                raise McpfsError(f"/mfs/{path}: parent is not a directory", errno=errno.ENOTDIR)
            return None
        attr = await ipfs_call(self.limiter, probe, f"open /mfs/{path}")
        if attr is None:
            return Writer(path, spool, existed=False)
        if attr.is_dir:
            raise McpfsError(f"/mfs/{path}: is a directory", errno=errno.EISDIR)
        return Writer(path, spool, existed=True, extra={"size": attr.size})

    def start_stream(self, writer: Writer) -> StreamImport:
        """A streaming import for a file being written sequentially from offset 0; with
        ``writer.extra["hash_only"]`` (the bridge expects to link a known DAG) it only
        computes the CID and writes no block."""
        if writer.extra.get("hash_only"):
            return StreamImport.hashing(self.mfs.params)
        gc_lock = getattr(self.mfs, "_gc_lock", None)
        return StreamImport(self.mfs.tree.import_pieces,
                            hold=gc_lock.writing if gc_lock is not None else None,
                            read_back=lambda imported: self.mfs.tree.read_range(
                                imported.cid, 0, None),
                            name="mfs-stream-import")

    async def commit(self, writer: Writer) -> Attr:
        """:meth:`_commit_content`, then the file's mtime (the writer's, else now) and mode
        (the writer's, else the one it had) are kept for its new CID."""
        attr = await self._commit_content(writer)
        if attr.cid is None:  # not in the caches: one resolve
            try:
                attr = dataclasses.replace(attr, cid=str((await self.resolve(writer.path))[0]))
            except McpfsError as exc:  # committed all the same: only the times are not kept
                log.info("/mfs/%s: committed; its mtime and mode not kept (%s)",
                         writer.path, exc)
                return attr
        key = joined(writer.path)
        mtime = time.time_ns() if writer.mtime_ns is None else writer.mtime_ns
        self.attrs.set(key, attr.cid_text, mtime, writer.perm)
        return self.attrs.overlay(key, attr)

    async def set_attrs(self, path: str, mtime_ns: int | None, perm: int | None) -> None:
        """chmod / utimes of a committed file: kept for its current CID. Directories and
        symlinks keep their defaults (the change is accepted and not stored)."""
        cid, attr = await self.resolve(path)
        if attr.kind == FILE:
            self.attrs.set(joined(path), str(cid), mtime_ns, perm)

    def moved_outside(self, src: str, dst: str, is_dir: bool) -> None:
        """MFS moved ``src`` to ``dst`` (MFS paths) on a request that did not come through
        the mount (``mcpfs files mv``): the kept modes and mtimes move with it."""
        self.attrs.moved(joined(src), joined(dst), is_dir)

    def removed_outside(self, path: str) -> None:
        """MFS removed ``path`` (and anything beneath) outside the mount."""
        self.attrs.removed(joined(path), is_dir=True)

    def written_outside(self, path: str, before: str | None, after: str) -> None:
        """MFS wrote the file at ``path`` outside the mount (``mcpfs files write`` or
        ``cp``): it was the CID ``before`` (None: new) and is ``after``. It shows the time
        of that write, as a write through the mount does (not the daemon's start), and
        keeps the mode it showed."""
        key = joined(path)
        self.attrs.set(key, after, time.time_ns(), self.attrs.perm(key, before))

    async def _commit_content(self, writer: Writer) -> Attr:
        """Make the written bytes the file's content (see the module docstring for the
        routes) and commit the MFS root. ``writer.extra`` may carry, from the bridge,
        ``link`` = (CID, tsize) of a DAG already in the blockstore holding the same bytes
        (linked, nothing imported) or ``imported``, a finished streaming import. On failure
        MFS is unchanged (its mutations are all-or-nothing) and the error propagates."""
        path = mfs_path(writer.path)
        link: tuple[CID, int] | None = writer.extra.pop("link", None)
        imported: Imported | None = writer.extra.pop("imported", None)
        stream: StreamImport | None = writer.extra.pop("stream", None)
        with block_errors(f"commit /mfs/{writer.path}"):
            if link is not None:
                cid, tsize = link
                await self.mfs.link(path, cid, tsize)
                size = writer.extra.pop("content_size", None)
                return Attr(FILE, await writer.spool.size() if size is None else size,
                            cid=str(cid))
            if imported is None and stream is not None and not stream.only_hash:
                imported = await trio.to_thread.run_sync(stream.finish)
            elif stream is not None:
                stream.abandon()
            if imported is not None:
                await self.mfs.link(path, imported.cid, imported.tsize)
                log.debug("commit %s: linked the streamed import of %s", imported.cid, path)
                return Attr(FILE, imported.size, cid=str(imported.cid))
            spool = writer.spool
            if getattr(spool, "in_memory", False):
                data = spool.getvalue()
                await self.mfs.write(path, data, create=True, truncate=True)
                return self._committed(writer.path, len(data))
            source = SpoolSource(spool.path)
            try:
                await self.mfs.write(path, source, create=True, truncate=True)
            finally:
                source.close()
        return self._committed(writer.path, source.size)

    async def import_from(self, path: str, pieces: AsyncIterator[bytes]) -> Attr:
        """Import ``pieces`` (a transfer's source, read as it arrives) as the file at
        ``path`` (parents created) and link it: one streaming import, blocks written as
        the bytes come. Nothing changes in MFS if reading or importing fails."""
        stream = self.start_stream(Writer(path, None, False))  # type: ignore[arg-type]
        try:
            async for piece in pieces:
                await trio.to_thread.run_sync(stream.feed, piece, limiter=self.limiter)
            imported = await trio.to_thread.run_sync(stream.finish)
        except BaseException:
            stream.abandon()
            raise
        if imported is None:
            raise McpfsError(f"/mfs/{path}: import failed", errno=errno.EIO)
        with block_errors(f"import /mfs/{path}"):
            await self.mfs.link(mfs_path(path), imported.cid, imported.tsize, parents=True)
        return Attr(FILE, imported.size, cid=str(imported.cid))

    async def link_dag(self, path: str, cid: CID, tsize: int) -> None:
        """Make the DAG ``cid`` (already in the blockstore) the file at ``path``, parents
        created: a copy that moves no byte."""
        with block_errors(f"link /mfs/{path}"):
            await self.mfs.link(mfs_path(path), cid, tsize, parents=True)

    def _committed(self, path: str, size: int) -> Attr:
        """The Attr of a file just written, with its CID when the caches hold it (MFS just
        re-encoded the parent directory, so they usually do; no I/O)."""
        try:
            hit = self._peek(path)
        except McpfsError:
            hit = None
        return Attr(FILE, size, cid=str(hit[0]) if hit is not None else None)

    async def unlink(self, path: str) -> None:
        with block_errors(f"unlink /mfs/{path}"):
            await self.mfs.rm(mfs_path(path))
        self.attrs.removed(joined(path))

    async def mkdir(self, path: str) -> Attr:
        with block_errors(f"mkdir /mfs/{path}"):
            await self.mfs.mkdir(mfs_path(path))
        return Attr(DIR)

    async def rmdir(self, path: str) -> None:
        with block_errors(f"rmdir /mfs/{path}"):
            await self.mfs.rmdir(mfs_path(path))
        self.attrs.removed(joined(path), is_dir=True)

    async def symlink(self, path: str, target: str) -> Attr:
        with block_errors(f"symlink /mfs/{path}"):
            await self.mfs.symlink(mfs_path(path), target)
        return await self.lookup(path)

    async def rename(self, src: str, dst: str) -> None:
        """POSIX rename within /mfs (see the module docstring)."""
        async with self._ns_lock:
            src_attr = await self.lookup(src)
            try:
                dst_attr: Attr | None = await self.lookup(dst)
            except McpfsError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                dst_attr = None
            if split(dst)[:len(split(src))] == split(src) and split(dst) != split(src):
                raise McpfsError("cannot move a directory into itself", errno=errno.EINVAL)
            if dst_attr is not None:
                if split(src) == split(dst):
                    return
                if dst_attr.is_dir and not src_attr.is_dir:
                    raise McpfsError(f"/mfs/{dst}: is a directory", errno=errno.EISDIR)
                if src_attr.is_dir and not dst_attr.is_dir:
                    raise McpfsError(f"/mfs/{dst}: not a directory", errno=errno.ENOTDIR)
                if dst_attr.is_dir:
                    await self.rmdir(dst)  # ENOTEMPTY when it has entries
            with block_errors(f"rename /mfs/{src}"):
                await self.mfs.mv(mfs_path(src), mfs_path(dst))
            self.attrs.moved(joined(src), joined(dst), src_attr.is_dir)


__all__ = ["MfsMount", "mfs_path"]
