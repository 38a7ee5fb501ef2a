"""One process at a time changes a repo's MFS: a lock file beside its root file.

Why: a running daemon keeps MFS state that only it knows about: the directory nodes of
:mod:`mfs_pending` (in memory and in ``mfs-root.blocks``) and the root log it appends to.
A second process opening the same MFS would replay and remove that log under the daemon
and record roots of its own; a ``kill -9`` of the daemon afterwards could then leave a root
whose nodes are gone. The CLI normally goes through the daemon's control socket, but falls
back to the repo when the socket does not answer (another ``XDG_RUNTIME_DIR``, a daemon
too busy to answer in time): then it must get a clear error, not a second writer.

How: ``fcntl.lockf`` (a POSIX record lock, released by the kernel when its process dies,
``kill -9`` included) on ``<root_file>.lock``, whose content is the holder's pid (for the
message). The daemon's flusher holds it for its whole run; a process without a flusher
(the CLI) holds it while it loads MFS and around each change and sync. A POSIX lock belongs
to the process, so a second MFS opened in the same process (tests simulating a restart)
is not refused.

Errors: EBUSY naming the holder's pid when the lock stays taken for ``wait`` seconds.
Concurrency: re-entrant across threads (``_mutex`` guards the depth count and the fd):
while it is held (the flusher's run), another ``held()`` only counts, it never waits, so
MFS takes it around every commit and sync, also on the trio thread.
Blocking: worker threads (or the flusher's start), never the trio loop while it waits.
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

from ...errors import McpfsError

LOCK_SUFFIX: Final = ".lock"
LOCK_WAIT: Final = 5.0  # seconds to wait for another process's short hold (a CLI command)
RETRY: Final = 0.05


class MfsLock:
    def __init__(self, root_file: str | os.PathLike[str]) -> None:
        root = Path(root_file)
        self.path = root.with_name(root.name + LOCK_SUFFIX)
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._depth = 0

    @contextmanager
    def held(self, wait: float | None = None) -> Iterator[None]:
        self.acquire(wait)
        try:
            yield
        finally:
            self.release()

    def acquire(self, wait: float | None = None) -> None:
        """Take the lock (or count one more hold of it); EBUSY after ``wait`` seconds
        (default ``LOCK_WAIT``)."""
        with self._mutex:
            if self._depth:
                self._depth += 1
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                self._lock(fd, LOCK_WAIT if wait is None else wait)
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

    def _lock(self, fd: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise McpfsError(f"cannot lock {self.path}: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                raise McpfsError(
                    f"the MFS of {self.path.parent} is in use by another mcpfs process "
                    f"(pid {self._holder(fd)}), probably a daemon whose control socket "
                    "did not answer here (check MCPFS_HOME / XDG_RUNTIME_DIR, or retry)",
                    errno=errno.EBUSY)
            time.sleep(RETRY)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"


__all__ = ["MfsLock", "LOCK_WAIT"]
