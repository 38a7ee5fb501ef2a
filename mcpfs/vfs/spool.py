"""Spool files: the local copy of a file open for writing, in ``<cache>/spool/``.

A :class:`Spool` owns one file descriptor on one spool file (created 0600, exclusive).
Every I/O call runs in a worker thread under the spool limiter; a full disk raises
:class:`~mcpfs.errors.NoSpace` (ENOSPC to the writer) after whatever part of the write fit
is on disk, other OS errors a McpfsError with the same errno. ``close(delete=True)`` removes
the file; a spool whose commit failed is closed with ``delete=False`` and stays for the
journal to retry at the next start.

Concurrency: a Spool has no lock; vfs/handles.OpenFile serializes the operations that must
not interleave (fill, truncate, commit) and lets plain reads/writes run concurrently, which
pread/pwrite allow.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from ..errors import McpfsError, NoSpace

SPOOL_THREADS = 8  # concurrent spool I/O calls
_limiter: trio.CapacityLimiter | None = None


def limiter() -> trio.CapacityLimiter:
    """One limiter for all spool I/O of the process (created lazily inside trio)."""
    global _limiter
    if _limiter is None:
        _limiter = trio.CapacityLimiter(SPOOL_THREADS)
    return _limiter


def _oserror(exc: OSError, what: str) -> McpfsError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{what}: no space left on device")
    return McpfsError(f"{what}: {exc.strerror}", errno=exc.errno or errno.EIO)


class Spool:
    def __init__(self, path: str | os.PathLike[str], fd: int) -> None:
        self.path = str(path)
        self.fd = fd
        self.closed = False

    # ---------------------------------------------------------------- opening
    @classmethod
    def create_sync(cls, folder: str | os.PathLike[str]) -> Spool:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"{uuid.uuid4().hex}.spool"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _oserror(exc, "create spool") from None
        return cls(path, fd)

    @classmethod
    async def create(cls, folder: str | os.PathLike[str]) -> Spool:
        return await trio.to_thread.run_sync(cls.create_sync, folder, limiter=limiter())

    @classmethod
    def open_sync(cls, path: str | os.PathLike[str]) -> Spool:
        """Reopen an existing spool (journal recovery)."""
        return cls(path, os.open(path, os.O_RDWR | os.O_CLOEXEC))

    # ---------------------------------------------------------------- I/O
    def _pwrite(self, offset: int, data: bytes) -> int:
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as exc:
            raise _oserror(exc, f"spool {self.path}") from None
        return done

    async def write(self, offset: int, data: bytes) -> int:
        return await trio.to_thread.run_sync(self._pwrite, offset, data, limiter=limiter())

    async def read(self, offset: int, size: int) -> bytes:
        def work() -> bytes:
            try:
                return os.pread(self.fd, size, offset)
            except OSError as exc:
                raise _oserror(exc, f"spool {self.path}") from None
        return await trio.to_thread.run_sync(work, limiter=limiter())

    async def truncate(self, size: int) -> None:
        def work() -> None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                raise _oserror(exc, f"spool {self.path}") from None
        await trio.to_thread.run_sync(work, limiter=limiter())

    async def size(self) -> int:
        return await trio.to_thread.run_sync(lambda: os.fstat(self.fd).st_size,
                                             limiter=limiter())

    async def write_from(self, chunks: AsyncIterator[bytes]) -> int:
        """Write ``chunks`` one after another from offset 0; return the byte count."""
        offset = 0
        async for chunk in chunks:
            offset += await self.write(offset, chunk)
        return offset

    def close_sync(self, delete: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self.fd)
        if delete:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def close(self, delete: bool = True) -> None:
        await trio.to_thread.run_sync(self.close_sync, delete, limiter=limiter())


__all__ = ["Spool", "limiter"]
