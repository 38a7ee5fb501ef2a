"""Modes and mtimes of /s3 files: rclone's ``x-amz-meta-mtime`` on what we write, and the
values set through the mount kept per key and ETag (kept_attrs.py).

Mixed into :class:`~mcpfs.mounts.s3.S3Mount` (it uses the mount's ``attrs``, ``_stat``
and ``_head``).

- Every object we upload carries ``x-amz-meta-mtime`` (Unix seconds with nine decimals,
  as rclone writes and reads it): the time of the last write, or the one set by utimes
  before close (``cp -p``). Other S3 clients, rclone among them, see that mtime.
- That mtime and a mode set by chmod are kept for the object's new ETag, and so are the
  ones set by chmod/utimes after close (``rsync -a`` sets its temp file's times after
  closing it, then renames): no request for those.
- A rename moves the row to the copy's ETag. When the source carries an
  ``x-amz-meta-mtime`` (we wrote it, or rclone) other than the kept mtime, the copy gets
  the kept one (``MetadataDirective=REPLACE``: the rest of the metadata and the content
  type kept); any other object is copied as it is (a REPLACE would drop headers such as
  Cache-Control), its kept mtime staying ours alone.
- Shown: the kept mtime and mode while the object has the ETag they were kept for;
  otherwise LastModified and 0644, as before. ``x-amz-meta-mtime`` of objects written by
  others is not read: listings carry no metadata, so ``ls -l`` would need a HEAD per entry
  (rclone's default), and a file's mtime would then depend on which cache answered.

Errors: set_attrs on a missing key is ENOENT, as any stat; nothing here adds a failure
mode to uploads or renames beyond their own.
"""

from __future__ import annotations

import time
from typing import Any, Final

from ..backends.s3 import ObjectInfo
from .base import FILE, Attr, Writer, joined

MTIME_META: Final = "mtime"  # x-amz-meta-mtime, rclone's key


def mtime_text(mtime_ns: int) -> str:
    """``x-amz-meta-mtime`` as rclone writes it: seconds, a dot, nine decimals."""
    return f"{mtime_ns // 10**9}.{mtime_ns % 10**9:09d}"


def etag_of(info: ObjectInfo | None) -> str | None:
    """An object's ETag without its quotes (None: no object, or no ETag)."""
    return None if info is None else info.bare_etag


class S3Times:
    attrs: Any  # KeptAttrs, set by S3Mount

    def _kept(self, key: str, attr: Attr, info: ObjectInfo | None) -> Attr:
        """``attr`` with the mode and mtime kept for ``key`` (a path as ``joined`` spells
        it) at ``info``'s ETag."""
        return self.attrs.overlay(key, attr, etag_of(info))

    def _kept_mtime(self, key: str, info: ObjectInfo) -> int | None:
        return self.attrs.mtime(key, etag_of(info))

    def _upload_mtime(self, writer: Writer, meta: dict[str, str]) -> int:
        """The mtime an upload of ``writer`` carries (added to ``meta``)."""
        mtime_ns = time.time_ns() if writer.mtime_ns is None else writer.mtime_ns
        meta[MTIME_META] = mtime_text(mtime_ns)
        return mtime_ns

    def _uploaded(self, writer: Writer, info: ObjectInfo, mtime_ns: int) -> int:
        """Keep the writer's mtime and mode (the mode the file showed at open, or one set
        since) for the new ETag; read after the upload, so a utimes that came during it
        (``write_back``: rsync's, after close) is the one kept. Returns that mtime."""
        if writer.mtime_ns is not None:
            mtime_ns = writer.mtime_ns
        etag = etag_of(info)
        if etag is not None:
            self.attrs.set(joined(writer.path), etag, mtime_ns, writer.perm)
        return mtime_ns

    async def set_attrs(self, path: str, mtime_ns: int | None, perm: int | None) -> None:
        """chmod / utimes of an object: kept for its current ETag (no request when a
        listing knows it). Directories keep their defaults."""
        attr, info = await self._stat(path)  # type: ignore[attr-defined]
        if attr.kind != FILE:
            return
        if etag_of(info) is None:
            info = await self._head(path)  # type: ignore[attr-defined]
        etag = etag_of(info)
        if etag is not None:
            self.attrs.set(joined(path), etag, mtime_ns, perm)


__all__ = ["S3Times", "MTIME_META", "mtime_text", "etag_of"]
