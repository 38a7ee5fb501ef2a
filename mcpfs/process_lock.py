"""A lock one process holds on a file: a POSIX record lock, released by the kernel when
that process dies (``kill -9`` included).

How: ``fcntl.lockf`` on ``path``, whose content is the holder's pid (for the message).
A POSIX lock belongs to the process, so a second ProcessLock on the same file in the same
process is not refused (tests simulating a restart). Uses: the MFS writer lock
(backends/ipfs/mfs_lock.py) and the daemon lock (daemon.py: one daemon per state dir, held
until its last upload has ended).

Errors: EBUSY with :meth:`ProcessLock.busy`'s message when the lock stays taken for
``wait`` seconds. Concurrency: re-entrant across threads (``_mutex`` guards the depth count
and the fd): while it is held, another ``held()`` only counts, it never waits.
Blocking: worker threads (or a start), never the trio loop while it waits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from .errors import McpfsError

RETRY: Final = 0.05  # seconds between tries while another process holds it


class ProcessLock:
    default_wait = 5.0  # seconds acquire() waits when not told

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._depth = 0

    def busy(self, holder: str) -> str:
        """The EBUSY message, naming the holder's pid."""
        return f"{self.path} is held by another process (pid {holder})"

    @contextmanager
    def held(self, wait: float | None = None) -> Iterator[None]:
        self.acquire(wait)
        try:
            yield
        finally:
            self.release()

    def acquire(self, wait: float | None = None) -> None:
        """Take the lock (or count one more hold of it); EBUSY after ``wait`` seconds
        (default ``default_wait``)."""
        with self._mutex:
            if self._depth:
                self._depth += 1
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                self._lock(fd, self.default_wait if wait is None else wait)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._depth = fd, 1

    def release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                os.close(self._fd)  # (closing the descriptor releases the lock)
                self._fd = None

    def holder(self) -> str | None:
        """The pid of another process holding the lock now, else None (tried without
        waiting, and let go at once when free: for ``mcpfs status``)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return None if self._try(fd) else self._holder(fd)
        except McpfsError:
            return None
        finally:
            os.close(fd)  # (releases it if it was taken here)

    def _try(self, fd: int) -> bool:
        """Take the lock on ``fd`` without waiting: False when another process has it."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise McpfsError(f"cannot lock {self.path}: {exc.strerror}") from None

    def _lock(self, fd: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while not self._try(fd):
            if time.monotonic() >= deadline:
                raise McpfsError(self.busy(self._holder(fd)), errno=errno.EBUSY)
            time.sleep(RETRY)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"


__all__ = ["ProcessLock"]
