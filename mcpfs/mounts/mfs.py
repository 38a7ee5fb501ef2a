"""``/mfs/...``: the repo's Mutable File System (kubo's ``ipfs files``), read-write.

Reads take a snapshot of the current MFS root (``MFS.root()``) and resolve through the
reader: an open file keeps reading the CID it resolved at open (close-to-open). Changes go
through the :class:`~mcpfs.backends.ipfs.mfs.MFS` methods, each of which links the new DAG
and flushes the root (blocks synced, root file replaced atomically) before returning.

``commit`` imports the whole spool file with the MFS import params (``mfs.write(...,
truncate=True)``), so a file's CID equals ``mcpfs add -n`` of the same bytes with those params.

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

import errno
from collections.abc import AsyncIterator
from typing import Any

import trio

from ..backends.ipfs.cid import CID
from ..errors import McpfsError
from .base import DIR, FILE, Attr, Capabilities, Mount, StatFS, Writer, split, statfs_of
from .ipfs import CidReader, Listings, attr_of, block_errors, ipfs_call

THREADS = 4  # concurrent reader calls for /mfs (MFS mutations have their own limiter)
MFS_TIMEOUT = 1.0  # kernel attr/entry cache lifetime: MFS can change under us (CLI, socket)


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
    return "/" + "/".join(split(path))


class MfsMount(Mount):
    name = "mfs"
    capabilities = Capabilities(writable=True, rename=True, random_write=True, symlinks=True,
                                attr_timeout=MFS_TIMEOUT, entry_timeout=MFS_TIMEOUT)

    def __init__(self, repo: Any, limiter: trio.CapacityLimiter | None = None) -> None:
        """``repo``: a backends.ipfs.node.Repo; its ``mfs`` is opened here (reads the root
        file: call from a worker thread or at startup)."""
        self.repo = repo
        self.mfs = repo.mfs
        self.reader = repo.reader
        self.limiter = limiter or trio.CapacityLimiter(THREADS)
        self._ns_lock = trio.Lock()
        self.listings = Listings(self.reader)

    # ---------------------------------------------------------------- reading
    def _resolve_sync(self, path: str) -> CID:
        """The CID at ``path`` under the current root, through cached listings."""
        cid = self.mfs.root()
        segs = split(path)
        for i, name in enumerate(segs):
            if self.mfs.tree.kind(cid) != "directory":
                raise McpfsError(f"/mfs/{'/'.join(segs[:i])}: not a directory",
                                 errno=errno.ENOTDIR)
            child = self.listings.child(cid, name)
            if child is None:
                raise McpfsError(f"/mfs/{path}: no such file", errno=errno.ENOENT)
            cid = child
        return cid

    async def resolve(self, path: str) -> tuple[CID, Attr]:
        def work() -> tuple[CID, Attr]:
            cid = self._resolve_sync(path)
            return cid, attr_of(self.reader.stat(cid))
        return await ipfs_call(self.limiter, work, f"/mfs/{path}")

    async def lookup(self, path: str) -> Attr:
        return (await self.resolve(path))[1]

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        def work() -> list[tuple[str, Attr]]:
            cid = self._resolve_sync(path)
            if self.mfs.tree.kind(cid) != "directory":
                raise McpfsError(f"/mfs/{path}: not a directory", errno=errno.ENOTDIR)
            return sorted((name, attr) for name, (_, attr) in self.listings.get(cid).items())
        for name, attr in await ipfs_call(self.limiter, work, f"list /mfs/{path}"):
            yield name, attr

    async def open_read(self, path: str) -> CidReader:
        cid, attr = await self.resolve(path)
        if attr.kind != FILE:
            raise McpfsError(f"/mfs/{path}: is a directory", errno=errno.EISDIR)
        return CidReader(self.reader, cid, self.limiter)

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
                return attr_of(self.reader.stat(self._resolve_sync(path)))
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

    async def commit(self, writer: Writer) -> Attr:
        """Import the spool as the file's new content and flush the MFS root. On failure
        MFS is unchanged (its mutations are all-or-nothing) and the error propagates. The
        spool file is opened and read inside MFS's worker thread (no extra hops)."""
        source = SpoolSource(writer.spool.path)
        try:
            with block_errors(f"commit /mfs/{writer.path}"):
                await self.mfs.write(mfs_path(writer.path), source, create=True, truncate=True)
        finally:
            source.close()
        return Attr(FILE, source.size)

    async def unlink(self, path: str) -> None:
        with block_errors(f"unlink /mfs/{path}"):
            await self.mfs.rm(mfs_path(path))

    async def mkdir(self, path: str) -> Attr:
        with block_errors(f"mkdir /mfs/{path}"):
            await self.mfs.mkdir(mfs_path(path))
        return Attr(DIR)

    async def rmdir(self, path: str) -> None:
        with block_errors(f"rmdir /mfs/{path}"):
            await self.mfs.rmdir(mfs_path(path))

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


__all__ = ["MfsMount", "mfs_path"]
