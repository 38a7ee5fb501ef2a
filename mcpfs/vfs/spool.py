"""Spool files: the local copy of a file open for writing, in ``<cache>/spool/``.

A :class:`Spool` owns one file descriptor on one spool file (created 0600, exclusive).
A spool created with ``memory=True`` starts as a byte buffer with no file: small files (the
common case of many small writes) never touch the disk or a worker thread here; the file is
created, and the buffer written to it, once the content grows past ``MEMORY_MAX`` or when
:meth:`materialize` is called (a commit by a Mount that reads ``path``, a kept spool). Its
``on_disk`` hook (vfs/handles.py: the journal row) runs first, in the same worker thread, so
no spool file ever exists on disk without its journal row.
Every file I/O call runs in a worker thread under the spool limiter; a full disk raises
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
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import trio

from ..errors import McpfsError, NoSpace

SPOOL_THREADS = 8  # concurrent spool I/O calls
MEMORY_MAX = 256 * 1024  # bytes a memory spool holds before it becomes a file
RETAIN_MAX = 64 * 1024  # a memory spool this small keeps its bytes once written to its file
# (until the next change), so a write-back commit hashes and uploads them without a thread
# hop to read the file: at most write_back.QUEUED files (16 MiB) wait with them
_limiter: trio.CapacityLimiter | None = None
_opening = threading.Lock()  # the first open of a kept spool's descriptor (Spool._fd)


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
    def __init__(self, path: str | os.PathLike[str], fd: int | None,
                 memory: bytearray | None = None) -> None:
        self.path = str(path)
        self.fd = fd
        self.mem = memory  # the content while no file exists (memory spool)
        self.known_size: int | None = None  # the file's length, while no write changed it
        self.retained: bytes | None = None  # the file's bytes (small), while unchanged
        self.closed = False
        self.parked = False  # an existing file not opened yet (:meth:`kept`)
        self.on_disk: Callable[[], None] | None = None  # run (blocking) before the file exists

    @property
    def in_memory(self) -> bool:
        return self.mem is not None

    # ---------------------------------------------------------------- opening
    @classmethod
    def create_sync(cls, folder: str | os.PathLike[str], memory: bool = False) -> Spool:
        """A new spool in ``folder``; with ``memory`` the file is only named (created by
        :meth:`materialize`)."""
        path = Path(folder) / f"{uuid.uuid4().hex}.spool"
        if memory:  # no I/O at all: the folder is made by materialize_sync
            return cls(path, None, bytearray())
        Path(folder).mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _oserror(exc, "create spool") from None
        return cls(path, fd)

    @classmethod
    async def create(cls, folder: str | os.PathLike[str], memory: bool = False) -> Spool:
        if memory:
            return cls.create_sync(folder, memory=True)
        return await trio.to_thread.run_sync(cls.create_sync, folder, limiter=limiter())

    @classmethod
    def open_sync(cls, path: str | os.PathLike[str]) -> Spool:
        """Reopen an existing spool (journal recovery)."""
        return cls(path, os.open(path, os.O_RDWR | os.O_CLOEXEC))

    @classmethod
    def kept(cls, path: str | os.PathLike[str]) -> Spool:
        """An existing spool whose descriptor is opened by its first I/O (in that call's
        worker thread): journal recovery may hold thousands of kept files waiting for
        their upload, which cost no descriptor until each one is read or committed."""
        spool = cls(path, None)
        spool.parked = True
        return spool

    def park_sync(self) -> None:
        """Close the descriptor of a spool on disk that nobody reads or writes now (a
        file whose upload waits for a retry); the next I/O opens it again (:meth:`_fd`).
        Memory spools and closed ones are left as they are."""
        with _opening:
            fd = self.fd
            if fd is None or self.mem is not None or self.closed:
                return
            self.fd, self.parked = None, True
        os.close(fd)

    def _fd(self) -> int:
        """The descriptor; a kept spool's is opened here (blocking: worker threads, where
        two reads may ask at once: ``_opening`` makes it one open)."""
        if self.fd is None and self.parked:
            with _opening:
                if self.closed:
                    raise McpfsError(f"spool {self.path}: closed", errno=errno.EBADF)
                if self.fd is None:
                    try:
                        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                    except OSError as exc:
                        raise _oserror(exc, f"spool {self.path}") from None
                    self.parked = False
        assert self.fd is not None
        return self.fd

    def materialize_sync(self) -> None:
        """Create the file of a memory spool and write the buffer to it (blocking)."""
        if self.mem is None:
            return
        if self.on_disk is not None:
            self.on_disk()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _oserror(exc, "create spool") from None
        self.fd = fd
        data, self.mem = self.mem, None
        try:
            self._pwrite(0, data)
            self.known_size = len(data)  # (a commit's size: no fstat hop)
            if len(data) <= RETAIN_MAX:
                self.retained = bytes(data)
        except BaseException:
            self.mem = data
            self.fd = None
            os.close(fd)
            os.unlink(self.path)
            raise

    async def materialize(self) -> None:
        if self.mem is not None:
            await trio.to_thread.run_sync(self.materialize_sync, limiter=limiter())

    def getvalue(self) -> bytes:
        """The content of a memory spool."""
        assert self.mem is not None
        return bytes(self.mem)

    def content(self) -> bytes | None:
        """The whole content when it is at hand without file I/O (a memory spool, or a
        small one written to its file and not changed since), else None."""
        return self.getvalue() if self.mem is not None else self.retained

    # ---------------------------------------------------------------- I/O
    def _pwrite(self, offset: int, data: bytes) -> int:
        self.known_size = self.retained = None  # (every write of the file comes here)
        view = memoryview(data)
        done = 0
        fd = self._fd()
        try:
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            raise _oserror(exc, f"spool {self.path}") from None
        return done

    def _mem_write(self, offset: int, data: bytes) -> int:
        mem = self.mem
        assert mem is not None
        if offset > len(mem):
            mem.extend(bytes(offset - len(mem)))
        mem[offset:offset + len(data)] = data
        return len(data)

    async def write(self, offset: int, data: bytes,
                    then: Callable[[bytes], None] | None = None) -> int:
        """pwrite ``data``; ``then(data)`` runs after it in the same worker thread (a
        streaming import's feed, which may block for back-pressure)."""
        if self.mem is not None and offset + len(data) <= MEMORY_MAX and then is None:
            return self._mem_write(offset, data)

        def work() -> int:
            self.materialize_sync()
            n = self._pwrite(offset, data)
            if then is not None:
                then(data)
            return n
        return await trio.to_thread.run_sync(work, limiter=limiter())

    async def read(self, offset: int, size: int) -> bytes:
        if self.mem is not None:
            return bytes(self.mem[offset:offset + size])

        def work() -> bytes:
            try:
                return os.pread(self._fd(), size, offset)
            except OSError as exc:
                raise _oserror(exc, f"spool {self.path}") from None
        return await trio.to_thread.run_sync(work, limiter=limiter())

    async def truncate(self, size: int) -> None:
        if self.mem is not None and size <= MEMORY_MAX:
            if size < len(self.mem):
                del self.mem[size:]
            else:
                self.mem.extend(bytes(size - len(self.mem)))
            return

        def work() -> None:
            self.materialize_sync()
            self.known_size = self.retained = None
            try:
                os.ftruncate(self._fd(), size)
            except OSError as exc:
                raise _oserror(exc, f"spool {self.path}") from None
        await trio.to_thread.run_sync(work, limiter=limiter())

    async def size(self) -> int:
        if self.mem is not None:
            return len(self.mem)
        if self.known_size is not None:
            return self.known_size
        return await trio.to_thread.run_sync(lambda: os.fstat(self._fd()).st_size,
                                             limiter=limiter())

    def replace_sync(self, chunks: Iterable[bytes]) -> int:
        """Make the content exactly ``chunks`` (blocking): the file is created if the spool
        was in memory, then truncated and written from offset 0. Returns the byte count."""
        if self.mem is not None:
            self.mem = bytearray()
            self.materialize_sync()
        self.known_size = self.retained = None
        try:
            os.ftruncate(self._fd(), 0)
        except OSError as exc:
            raise _oserror(exc, f"spool {self.path}") from None
        offset = 0
        for chunk in chunks:
            offset += self._pwrite(offset, chunk)
        return offset

    async def write_from(self, chunks: AsyncIterator[bytes]) -> int:
        """Write ``chunks`` one after another from offset 0; return the byte count."""
        offset = 0
        async for chunk in chunks:
            offset += await self.write(offset, chunk)
        return offset

    def stamp_sync(self, mtime_ns: int | None) -> None:
        """Give the spool file the written file's mtime (blocking; nothing for a memory
        spool or None): a spool kept for the next start carries it to that commit
        (vfs/recovery.py). Best effort: an error leaves the time of the last write."""
        if mtime_ns is None or self.mem is not None:
            return
        try:
            os.utime(self.fd if self.fd is not None else self.path, ns=(mtime_ns, mtime_ns))
        except OSError:
            pass

    def close_sync(self, delete: bool = True, mtime_ns: int | None = None) -> None:
        """Close; ``delete`` removes the file (a memory spool kept is written out first,
        and a kept one gets ``mtime_ns``: :meth:`stamp_sync`)."""
        if self.closed:
            return
        if not delete:
            self.materialize_sync()
            self.stamp_sync(mtime_ns)
        with _opening:  # (a first open of a kept spool is not under way: Spool._fd)
            self.closed = True
        if self.mem is not None:
            return  # a memory spool: no file
        if self.fd is not None:
            os.close(self.fd)
        if delete:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def close(self, delete: bool = True) -> None:
        if self.mem is not None and delete:  # a memory spool: no file to remove
            self.closed = True
            return
        await trio.to_thread.run_sync(self.close_sync, delete, limiter=limiter())


__all__ = ["Spool", "limiter"]
