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
from .ipfs import CidReader, attr_of, block_errors, ipfs_call

THREADS = 4  # concurrent reader calls for /mfs (MFS mutations have their own limiter)
MFS_TIMEOUT = 1.0  # kernel attr/entry cache lifetime: MFS can change under us (CLI, socket)


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

    # ---------------------------------------------------------------- reading
    def _resolve_sync(self, path: str) -> CID:
        return self.mfs.tree.resolve(self.mfs.root(), mfs_path(path))

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
            return sorted((link.name or "", attr_of(self.reader.stat(link.cid)))
                          for link in self.reader.list_dir(cid))
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
    async def open_write(self, path: str, spool: Any, truncate: bool) -> Writer:
        """Check that ``path`` can take a file (EISDIR on a directory, ENOENT/ENOTDIR on a
        bad parent); the spool is filled lazily by vfs through :meth:`fill_spool`."""
        segs = split(path)
        if not segs:
            raise McpfsError("/mfs: is a directory", errno=errno.EISDIR)
        try:
            attr = await self.lookup(path)
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            parent = await self.lookup("/".join(segs[:-1]))
            if not parent.is_dir:
                raise McpfsError(f"/mfs/{path}: parent is not a directory",
                                 errno=errno.ENOTDIR) from None
            return Writer(path, spool, existed=False)
        if attr.is_dir:
            raise McpfsError(f"/mfs/{path}: is a directory", errno=errno.EISDIR)
        return Writer(path, spool, existed=True, extra={"size": attr.size})

    async def commit(self, writer: Writer) -> Attr:
        """Import the spool as the file's new content and flush the MFS root. On failure
        MFS is unchanged (its mutations are all-or-nothing) and the error propagates."""
        fh = await trio.to_thread.run_sync(open, writer.spool.path, "rb")
        try:
            with block_errors(f"commit /mfs/{writer.path}"):
                await self.mfs.write(mfs_path(writer.path), fh, create=True, truncate=True)
        finally:
            await trio.to_thread.run_sync(fh.close)
        return await self.lookup(writer.path)

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
