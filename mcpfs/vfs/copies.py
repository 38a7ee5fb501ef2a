"""How vfs serves copies: a copy's source found for a new file, and ``copy_file_range``.

:class:`Copies` is part of :class:`~mcpfs.vfs.vfs.VFS` (a base class, so the copy logic
lives in one module). Two ways a file becomes a copy of another file of the mount:

- A process writes a file while it reads another one (``cp``'s read/write loop, ``cat a >
  b``): the bridge names the source (``bridge.candidate``, by pid) at open and again at the
  first write. If the destination can take it natively (a DAG into /mfs, an S3 object into
  /s3: ``native_route``) and nothing was read yet, the new file gets a
  :class:`~mcpfs.bridge.copycheck.CopyCheck`: each write is compared with the bytes just
  read instead of being spooled.
- ``copy_file_range`` (coreutils ``cp`` within one file system; fuse_copy_range.py):
  :meth:`Copies.copy_range`. A range copied to the same offset of a file that is a checked
  copy of the source handle's file, up to where the copy has reached, is counted without
  reading a byte (``OpenFile.copy_unread``): ``cp`` of a 1 GiB DAG into /mfs is one request
  and a link at close. Anything else is copied inside the daemon, through the source's
  Reader and the destination's spool, ``COPY_RANGE_MAX`` bytes per request at most (the
  kernel asks again for the rest), with the same checks as ordinary writes.

Errors: what read and write raise (EIO, ENOSPC...); EBADF when the destination is not open
for writing. A failure part-way leaves what was written so far, like a short write.

Concurrency: trio thread only; per-file ordering is OpenFile.lock's (handles.py).
"""

from __future__ import annotations

import errno
from typing import Any, Final

from ..bridge.copycheck import CopyCheck, native_route
from ..bridge.core import ipfs_location, plain_version
from ..errors import McpfsError
from .handles import FileHandle, OpenFile

COPY_RANGE_MAX: Final = 16 << 20  # bytes one copy_file_range request copies through the spool
COPY_PIECE: Final = 1 << 20  # bytes per read/write inside such a request


class Copies:
    bridge: Any
    handles: Any

    # ---------------------------------------------------------------- copy sources
    def _copy_source(self, of: OpenFile, pid: int | None) -> None:
        """Ask the bridge whether the process writing ``of`` is copying a file it reads
        (then a copy into /mfs only hashes while it is written: see bridge/core.py). Asked
        at open and again at the first write: ``cat a > b`` opens b (in the shell's child)
        before cat opens a."""
        if self.bridge is None or of.copy_source is not None or of.handles:
            return
        of.writer_pid = pid
        self._find_source(of)
        if of.copy_source is not None:
            self._start_check(of, of.copy_source, window=True)

    def _start_check(self, of: OpenFile, source: Any, window: bool) -> bool:
        """Make ``of`` (empty, nothing written) a checked copy of ``source`` if the
        destination can take it natively. ``window``: writes will be compared with reads,
        so the source must not have been read yet (it keeps what it reads from now on)."""
        if not (of.filled and of.size == 0) or of.copycheck is not None:
            return False
        route = native_route(of.mount.name, source)
        if route is None or (window and not source.keep_window()):
            return False
        of.copycheck = CopyCheck(source, route, lambda: self._open_source(source))
        of.writer.extra.pop("hash_only", None)
        if route == "mfs-link":
            source.stop_hashing()  # the DAG itself is linked; its identity comes later
        return True

    async def _open_source(self, source: Any):
        """A Reader of exactly the bytes ``source`` tracked (a checked copy's fallback reads
        them again): a DAG by its CID (an /mfs path may name other bytes by now), anything
        else at its location; ESTALE when that holds another version now (then the copy
        fails as a whole rather than take bytes the writer never wrote)."""
        location = source.location
        if source.ipfs_cid is not None and source.ipfs_cid == source.version \
                and "ipfs" in self.mounts:  # type: ignore[attr-defined]
            location = ipfs_location(source.ipfs_cid)
        mount, sub = self.route(location.strip("/"))  # type: ignore[attr-defined]
        reader = await mount.open_read(sub)
        now = plain_version(getattr(reader, "identity", None))
        if source.version is not None and now is not None and now != source.version:
            await reader.close()
            raise McpfsError(f"{source.location} changed since it was read",
                             errno=errno.ESTALE)
        return reader

    def _find_source(self, of: OpenFile) -> None:
        source = self.bridge.candidate(of.writer_pid, f"/{of.node.path}")
        if source is None:
            return
        of.copy_source, of.writer_pid = source, None
        if source.ipfs_cid is not None and of.stream is None:
            of.writer.extra["hash_only"] = True

    # ---------------------------------------------------------------- copy_file_range
    async def copy_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int,
                         length: int) -> int:
        """Copy up to ``length`` bytes from handle ``fh_in`` at ``off_in`` to ``fh_out`` at
        ``off_out``; the count copied (0 at the source's end), see the module docstring."""
        src: FileHandle = self.handles.get(fh_in)
        dst: FileHandle = self.handles.get(fh_out)
        if not dst.writable or dst.open_file is None:
            raise McpfsError("file not open for writing", errno=errno.EBADF)
        if length <= 0:
            return 0
        of = dst.open_file
        tracker = src.tracker
        if tracker is not None and off_in == off_out:
            if off_in == 0 and self.bridge is not None and of.size == 0:
                check = of.copycheck
                if check is not None and check.source is not tracker and not check.verified:
                    check.source.window = None  # the pid's guess; the request names the source
                    of.copycheck = None
                if of.copycheck is None and self._start_check(of, tracker, window=False):
                    of.copy_source, of.writer_pid = tracker, None
            copied = await of.copy_unread(tracker, off_in, length)
            if copied is not None:
                return copied
        done, limit = 0, min(length, COPY_RANGE_MAX)
        while done < limit:
            data = await self.read(fh_in, off_in + done,  # type: ignore[attr-defined]
                                   min(COPY_PIECE, limit - done))
            if not data:
                break
            done += await self.write(fh_out, off_out + done, data)  # type: ignore[attr-defined]
        return done


__all__ = ["Copies", "COPY_RANGE_MAX"]
