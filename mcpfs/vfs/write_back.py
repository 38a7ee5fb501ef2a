"""Write-back: close() returns once a file is journaled; its commit runs in the background.

For a Mount whose ``write_back`` is true (``[s3] write_back = true``, like rclone's
``--vfs-cache-mode writes``), the last ``flush`` of a file does not wait for the upload:
:meth:`WriteBack.queue` writes the spool to disk with its journal row saying ``committing``
(one worker-thread hop), so from then on a crash re-commits it at the next start (vfs/
recovery.py), and starts the commit in this module's nursery. Until the commit is done:

- the file stays in ``VFS.open_files``: lookups, ``ls`` and ``stat`` show it with its local
  size, and opens for reading are served from its spool;
- a new writer, a truncate or an fsync waits for the commit (``OpenFile.lock``, which the
  commit holds), and ``unlink``/``rename`` of it (or of a directory above it) wait for
  :meth:`settle`, so the backend never sees them out of order;
- a failed commit is retried ``ATTEMPTS`` times with a doubling delay, then given up for
  this run: the spool stays with its ``failed`` row and the next start retries it (the
  error is in the log and ``mcpfs status`` lists the row). The writer never sees it: that
  is the price of write-back, and why it is opt-in.

Files that are not plain spools (a checked copy, whose bytes were compared rather than
written: the bridge's native routes) are committed before close() returns, as without
write-back. At shutdown :meth:`drain` waits for every queued commit (``VFS.commit_all``).

Concurrency: trio thread only. ``_pending`` maps each OpenFile being committed to the Event
set when its commit ended; uploads run at most ``UPLOADS`` at once (a CapacityLimiter), and
at most ``QUEUED`` files wait (``room``, a Semaphore: close() waits beyond it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ..errors import McpfsError
from .handles import OpenFile

if TYPE_CHECKING:
    from .vfs import VFS

log = logging.getLogger("mcpfs.vfs")

UPLOADS = 2  # background commits in flight at once: each PutObject costs ~1 ms of boto3 CPU
# under the GIL, so more starve the FUSE loop on a small machine (500 creates of 1 KiB:
# 478 files/s with 1 in flight, 399 with 2, 256 with 4, 210 with 8 on 2 cores)
QUEUED = 256  # files journaled and not yet committed; a close() past it waits for room (each
# holds its spool's descriptor: a burst of small files must not reach the process's fd limit)
ATTEMPTS = 4  # tries of one background commit before it waits for the next start
RETRY_DELAY = 1.0  # seconds before the first retry, doubled for each next one


class WriteBack:
    def __init__(self, vfs: VFS, uploads: int = UPLOADS) -> None:
        self.vfs = vfs
        self.limiter = trio.CapacityLimiter(uploads)
        self.room = trio.Semaphore(QUEUED)  # held from queue() to the end of the commit
        self._pending: dict[OpenFile, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.retry_delay = RETRY_DELAY

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery the commits run in (the daemon's; cancelled at shutdown: a
        commit in progress is shielded and finishes, one waiting for its turn stays
        dirty and is committed by ``VFS.commit_all``)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def applies(self, of: OpenFile) -> bool:
        return (self._nursery is not None and getattr(of.mount, "write_back", False)
                and of.copycheck is None and of.journal is not None)

    def pending(self, of: OpenFile) -> bool:
        return of in self._pending

    async def queue(self, of: OpenFile, sub_path: str) -> bool:
        """Journal ``of`` for a background commit and start it; False when it cannot be
        (the caller commits now). Errors writing the spool (ENOSPC) reach close()."""
        if of in self._pending:  # not expected (writes wait for that commit): wait for it
            await self._pending[of].wait()
        await self.room.acquire()
        try:
            queued = await of.prepare_write_back(sub_path)
        except BaseException:
            self.room.release()
            raise
        if not queued or self._nursery is None:  # (a shutdown began meanwhile: the row
            self.room.release()  # says committing, and VFS.commit_all commits it)
            return queued
        self._pending[of] = trio.Event()
        self._nursery.start_soon(self._commit, of, name=f"write-back /{of.node.path}")
        return True

    async def _commit(self, of: OpenFile) -> None:
        done = self._pending[of]
        ended = False  # committed, or given up: the write state can go
        try:
            async with self.limiter:
                for attempt in range(ATTEMPTS):
                    try:
                        await self.vfs._commit(of)
                        ended = True
                        break
                    except McpfsError as exc:
                        if attempt + 1 == ATTEMPTS:
                            ended = True
                            log.error("write-back of /%s: %s; gave up until the next start "
                                      "(the file is kept in the spool, journal row %s)",
                                      of.node.path, exc, of.journal_id)
                        else:
                            log.warning("write-back of /%s: %s; retrying", of.node.path, exc)
                            await trio.sleep(self.retry_delay * 2 ** attempt)
        finally:
            del self._pending[of]
            self.room.release()
            try:  # cancelled (shutdown) before its commit: left for VFS.commit_all
                if of.handles <= 0 and (ended or not of.dirty):
                    await self.vfs._close_open_file(of)
            finally:
                done.set()

    async def settle(self, path: str) -> None:
        """Wait until no commit is queued for ``path`` or anything below it."""
        while True:
            waits = [done for of, done in self._pending.items()
                     if of.node.path == path or of.node.path.startswith(path + "/")]
            if not waits:
                return
            await waits[0].wait()

    async def drain(self) -> None:
        """Wait for every queued commit (shutdown)."""
        while self._pending:
            await next(iter(self._pending.values())).wait()


__all__ = ["WriteBack", "UPLOADS", "ATTEMPTS"]
