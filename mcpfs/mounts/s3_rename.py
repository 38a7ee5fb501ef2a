"""Renames under ``/s3``: CopyObject + Delete for a file, the same per key for a directory.

Mixed into :class:`~mcpfs.mounts.s3.S3Mount` (it uses the mount's ``backend``, ``_stat``,
``_head``, ``_parent_is_dir``, ``rmdir``, ``_invalidate``, ``_where``, ``_ns_lock``,
``attrs`` and ``_kept_mtime``).
A directory rename copies every key (``RENAME_PARALLEL`` at a time, progress in the log
every ``PROGRESS_EVERY`` keys), then deletes the sources: not atomic; on failure the copies
made so far stay, the sources are untouched, and the first error propagates (EIO...).
Each copy keeps its source's storage class (S3 would store it as STANDARD otherwise) and
the mtime kept for it (s3_times.py).

Concurrency: ``_ns_lock`` (trio.Lock) serializes renames against each other; it is taken
after vfs's OpenFile lock.
"""

from __future__ import annotations

import errno
import logging
import time
from typing import Final

import trio

from ..backends.s3 import ObjectInfo, first_error
from ..errors import McpfsError
from .base import Attr, joined, split
from .s3_times import MTIME_META, etag_of, mtime_text

log = logging.getLogger("mcpfs.mounts.s3")

RENAME_PARALLEL: Final = 16  # concurrent CopyObjects in a directory rename
PROGRESS_EVERY: Final = 1000  # keys between progress lines of a directory rename


class S3Renames:
    async def rename(self, src: str, dst: str) -> None:
        """CopyObject + Delete for a file, the same per key for a directory (see the module
        docstring for what a failure leaves)."""
        s, d = split(src), split(dst)
        if len(s) < 2 or len(d) < 2:
            raise McpfsError(f"/s3/{src}: buckets cannot be renamed", errno=errno.EPERM)
        if s == d:
            return
        if d[:len(s)] == s:
            raise McpfsError("cannot move a directory into itself", errno=errno.EINVAL)
        async with self._ns_lock:
            try:
                await self._rename_locked(src, dst)
            finally:
                self._invalidate(src)
                self._invalidate(dst)

    async def _rename_locked(self, src: str, dst: str) -> None:
        src_attr, _ = await self._stat(src)
        try:
            dst_attr: Attr | None = (await self._stat(dst))[0]
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            dst_attr = None
            await self._parent_is_dir(dst)
        (sb, sk), (db, dk) = self._where(src), self._where(dst)
        if not src_attr.is_dir:
            if dst_attr is not None and dst_attr.is_dir:
                raise McpfsError(f"/s3/{dst}: is a directory", errno=errno.EISDIR)
            info = await self._head(src)
            await self._copy_keeping(src, dst, info, db, dk)
            await self.backend.delete(sb, sk)
            return
        if dst_attr is not None:
            if not dst_attr.is_dir:
                raise McpfsError(f"/s3/{dst}: not a directory", errno=errno.ENOTDIR)
            await self.rmdir(dst)  # ENOTEMPTY when it has keys
        await self._rename_dir(sb, sk + "/", db, dk + "/")

    async def _copy_keeping(self, src: str, dst: str, info: ObjectInfo, db: str,
                            dk: str) -> None:
        """Copy the object ``info`` at ``src`` to ``dk`` in ``db``, keeping its storage
        class, and move its kept mode and mtime to the copy's ETag. An object that carries
        an ``x-amz-meta-mtime`` (ours, rclone's) other than the one kept for it gets the
        kept one on the copy (its metadata replaced: one HEAD more); others are copied as
        they are (s3_times.py). ``info`` from a listing has no metadata: never replaced."""
        src, dst = joined(src), joined(dst)
        mtime = self._kept_mtime(src, info)
        text = None if mtime is None else mtime_text(mtime)
        carried = info.metadata.get(MTIME_META)
        new = await self.backend.copy(
            split(src)[0], info.key, db, dk, info.size, storage_class=info.storage_class,
            metadata={MTIME_META: text} if carried and text and carried != text else None)
        self.attrs.moved(src, dst, False, etag_of(new), was=etag_of(info))

    async def _rename_dir(self, sb: str, sp: str, db: str, dp: str) -> None:
        """Copy every key under ``sp`` to ``dp`` (bounded parallel), then delete them."""
        done: list[str] = []
        limit = trio.CapacityLimiter(RENAME_PARALLEL)
        started = time.monotonic()

        async def one(info: ObjectInfo) -> None:
            target = dp + info.key[len(sp):]
            async with limit:
                if info.key.endswith("/") and not info.size:  # a marker: make a new one
                    await self.backend.put_bytes(db, target, b"")
                else:
                    await self._copy_keeping(f"{sb}/{info.key}", f"{db}/{target}", info,
                                             db, target)
            done.append(info.key)
            if len(done) % PROGRESS_EVERY == 0:
                log.info("rename s3://%s/%s -> s3://%s/%s: %d keys copied (%.1f s)", sb, sp,
                         db, dp, len(done), time.monotonic() - started)
        try:
            async with trio.open_nursery() as nursery:
                async for page in self.backend.walk(sb, sp):
                    for info in page:
                        nursery.start_soon(one, info)
        except BaseExceptionGroup as group:
            err = first_error(group)
            log.error("rename s3://%s/%s failed after %d keys copied; sources kept",
                      sb, sp, len(done))
            raise err from None
        # then directory entries deepest first: no-ops on AWS, but SeaweedFS keeps emptied
        # directories (shown in listings) until their ``dir/`` key is deleted
        dirs = {sp} | {info_key[:i + 1] for info_key in done
                       for i in range(len(sp), len(info_key) - 1) if info_key[i] == "/"}
        await self.backend.delete_many(sb, [k for k in done if k not in dirs] +
                                       sorted(dirs, key=lambda d: -d.count("/")))
        log.info("rename s3://%s/%s -> s3://%s/%s: %d keys in %.1f s", sb, sp, db, dp,
                 len(done), time.monotonic() - started)


__all__ = ["S3Renames"]
