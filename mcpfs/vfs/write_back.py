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
- a failed commit is retried ``ATTEMPTS`` times with a doubling delay (no upload slot held
  while waiting), then every ``RETRY_LATER`` seconds for as long as the daemon runs: the
  file stays an ordinary pending file meanwhile (listed and read as written, a writer
  continues from its bytes, ``rm`` drops it), never the server's older version and never
  waited for (``_retry_later``); a crash or a shutdown leaves its ``failed`` row for the
  next start. An errno in ``PERMANENT`` (denied, lost an If-None-Match race...) is not
  retried: the file is given up for this run and shows what the server has, its spool
  stays with its ``failed`` row and the next start retries it (the error is in the log and
  ``mcpfs status`` lists the row), unless the path is written again or removed first
  (:meth:`superseded`). The writer never sees the error: that is the price of
  write-back, and why it is opt-in. Nothing a commit raises escapes this module.

Kept files of a previous run whose Mount is not ``local_commit`` (vfs/recovery.py) come
here too: :meth:`adopt` makes each one pending before the mount is live, and :meth:`serve`
starts their commits in journal order, with the same retries, so a hung server delays
their upload, never the start.

Files that are not plain spools (a checked copy, whose bytes were compared rather than
written: the bridge's native routes) are committed before close() returns, as without
write-back. At shutdown :meth:`drain` waits for every queued commit (``VFS.commit_all``).

Concurrency: trio thread only. ``_pending`` maps each OpenFile being committed to the Event
set when its commit ended; ``_ending`` holds those Events while the ended commit still
closes its file (spool and journal row), so :meth:`drain` waits for that too. Uploads run
at most ``UPLOADS`` at once (a CapacityLimiter), and at most ``QUEUED`` files wait
(``room``, a Semaphore: close() waits beyond it).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from ..errors import REFUSALS, McpfsError
from .handles import OpenFile
from .recovery import remove_spool

if TYPE_CHECKING:
    from .vfs import VFS

log = logging.getLogger("mcpfs.vfs")

UPLOADS = 4  # background commits in flight at once (rclone's --transfers): a small PUT
# costs ~0.5 ms of CPU (s3_direct), so more in flight cost a local server's creates ~10%
# (1,000 creates of 1 KiB on 2 cores, SeaweedFS: ~245 files/s with 1, ~237 with 2, ~216 with
# 4), while a server 30 ms away takes 4 in flight to store ~130 small files/s, not ~67
QUEUED = 256  # files journaled and not yet committed; a close() past it waits for room (each
# holds its spool's descriptor: a burst of small files must not reach the process's fd limit)
ATTEMPTS = 4  # tries of one background commit in a row (then RETRY_LATER)
RETRY_LATER = 60.0  # seconds between rounds of tries of a file that keeps failing (rclone's
# write-back retries "at exponentially increasing intervals up to 1 minute", for good)
RETRY_DELAY = 1.0  # seconds before the first retry, doubled for each next one
# errnos a retry cannot change: given up at once (denied, lost an If-None-Match race, the
# bucket is gone, refused as invalid)
PERMANENT = REFUSALS


class WriteBack:
    def __init__(self, vfs: VFS, uploads: int = UPLOADS) -> None:
        self.vfs = vfs
        self.limiter = trio.CapacityLimiter(uploads)
        self.room = trio.Semaphore(QUEUED)  # held from queue() to the end of the commit
        # (mount, path) -> (journal row, spool) of writes kept after a failed commit in
        # this run (refused write-backs, close() errors), until superseded
        self.given_up: dict[tuple[str, str], tuple[int, str]] = {}
        self._pending: dict[OpenFile, trio.Event] = {}
        self._ending: set[trio.Event] = set()  # commits no longer pending, still closing
        self._adopted: deque[OpenFile] = deque()  # kept files of a previous run, in order
        self._resuming = False  # a _resume task runs
        self._abandoned: list[tuple[Any, Any]] = []  # (mount, resume state) to end on serve
        self._nursery: trio.Nursery | None = None
        self.retry_delay = RETRY_DELAY
        self.retry_later = RETRY_LATER

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery the commits run in (the daemon's; cancelled at shutdown: a
        commit in progress is shielded and finishes, one waiting for its turn stays
        dirty and is committed by ``VFS.commit_all``)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._start_resume()
            self._start_abandon()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def adopt(self, of: OpenFile) -> None:
        """A kept file of a previous run (``VFS._adopt``, before :meth:`serve`): pending
        from now on (settle() and a new writer wait for it); committed once serve runs."""
        self._pending[of] = trio.Event()
        self._adopted.append(of)
        self._start_resume()  # (after serve started: a recovery run on a live VFS)

    def _start_resume(self) -> None:
        if self._adopted and self._nursery is not None and not self._resuming:
            self._resuming = True
            self._nursery.start_soon(self._resume, name="write-back of recovered files")

    def abandon(self, mount: Any, state: Any) -> None:
        """A superseded kept spool's resume state (``Mount.resume_state``): what it holds
        open on the server is ended in the background once :meth:`serve` runs (before
        the mount is live no request may hold up the start)."""
        self._abandoned.append((mount, state))
        self._start_abandon()

    def _start_abandon(self) -> None:
        if self._nursery is not None:
            while self._abandoned:
                mount, state = self._abandoned.pop(0)
                self._nursery.start_soon(mount.abandon_resume, state,
                                         name=f"end a superseded upload of /{mount.name}")

    def forget(self, of: OpenFile) -> None:
        """An adopted file replaced by a later row of its path before serve."""
        if of in self._adopted:
            self._adopted.remove(of)
            self._pending.pop(of).set()

    async def _resume(self) -> None:
        """Start the commits of the adopted files, in journal order, at most ``QUEUED``
        at once (``room``). Those not started when a shutdown cancels this are no longer
        pending: ``VFS.commit_all`` commits them, as it does a file queued without a
        nursery."""
        try:
            while self._adopted:
                await self.room.acquire()
                if not self._adopted or self._nursery is None:
                    self.room.release()
                    break
                of = self._adopted.popleft()
                self._nursery.start_soon(self._commit, of, self._pending[of], True,
                                         name=f"write-back /{of.node.path}")
        finally:
            self._resuming = False
            self._release_adopted()  # (cancelled: a shutdown)

    def _release_adopted(self) -> None:
        """Adopted files whose commit has not started are no longer pending."""
        while self._adopted:
            self._pending.pop(self._adopted.popleft()).set()

    def applies(self, of: OpenFile) -> bool:
        return (self._nursery is not None and getattr(of.mount, "write_back", False)
                and of.copycheck is None and of.journal is not None
                and not of.unlinked and of.node.attached)

    def pending(self, of: OpenFile) -> bool:
        return of in self._pending

    async def queue(self, of: OpenFile, sub_path: str) -> bool:
        """Journal ``of`` for a background commit and start it; False when it cannot be
        (the caller commits now). Errors writing the spool (ENOSPC) reach close(). The
        file counts as pending from the start, so settle() also waits for this step."""
        while of in self._pending:  # another close() of the file queued it: after that one
            await self._pending[of].wait()
        of.retry_waiting = False
        done = self._pending[of] = trio.Event()
        started = False
        try:
            await self.room.acquire()
            try:
                queued = await of.prepare_write_back(sub_path)
                if queued and self._nursery is not None:
                    self._nursery.start_soon(self._commit, of, done,
                                             name=f"write-back /{of.node.path}")
                    started = True
                # (queued without a nursery: a shutdown began; VFS.commit_all commits it)
                return queued
            finally:
                if not started:
                    self.room.release()
        finally:
            if not started:
                del self._pending[of]
                done.set()

    async def _commit(self, of: OpenFile, done: trio.Event, recovered: bool = False) -> None:
        ended = False  # committed, or given up: the write state can go
        later = False  # failed ATTEMPTS times (not for good): kept here, retried later
        try:
            for attempt in range(ATTEMPTS):
                try:
                    async with self.limiter:
                        await self.vfs._commit(of)
                    ended = True
                    if recovered and not of.dirty:
                        log.info("journal: completed the interrupted write of /%s",
                                 of.node.path)
                    break
                except Exception as exc:  # noqa: BLE001 - a background task: never escapes
                    if not isinstance(exc, McpfsError):
                        log.exception("write-back of /%s", of.node.path)
                    if getattr(exc, "errno", None) in PERMANENT:
                        ended = True
                        self._give_up(of, exc)
                        break
                    if attempt + 1 == ATTEMPTS:
                        later = of.retry_waiting = True
                        log.error("write-back of /%s: %s; the file stays here as written "
                                  "(read from %s) and its upload is tried again every %.0f s",
                                  of.node.path, exc, of.spool.path, self.retry_later)
                        break
                    log.warning("write-back of /%s: %s; retrying", of.node.path, exc)
                    await trio.sleep(self.retry_delay * 2 ** attempt)  # no upload slot held
        finally:
            del self._pending[of]  # (so that _close_open_file closes it)
            self._ending.add(done)
            self.room.release()
            try:  # cancelled (shutdown) before its commit: left for VFS.commit_all
                if later and self._nursery is not None:
                    if of.handles <= 0:
                        of.spool.park_sync()  # no descriptor while it waits
                    self._nursery.start_soon(self._retry_later, of,
                                             name=f"write-back retry /{of.node.path}")
                elif of.handles <= 0 and (ended or not of.dirty):
                    await self.vfs._close_open_file(of)
            finally:
                self._ending.discard(done)
                done.set()

    async def _retry_later(self, of: OpenFile) -> None:
        """After ``RETRY_LATER`` s, queue a file whose upload failed ``ATTEMPTS`` times
        again, unless a writer took it meanwhile (its close queues it), it was removed
        (closed here: nothing to upload) or it is no longer this VFS's (a shutdown
        committed it); a reader holding it then puts it off by a round. Until then it is
        an ordinary pending file, not waited for: it is listed and read as written, a
        writer continues from its bytes, ``rm`` drops it."""
        while True:
            await trio.sleep(self.retry_later)
            if self.vfs.open_files.get(of.node.ino) is not of or of.writers > 0 \
                    or of in self._pending:
                return
            if of.handles <= 0:
                break  # (readers only: the next round; a reader's close queues nothing)
        of.retry_waiting = False
        if of.unlinked or not of.dirty or not of.node.attached:
            await self.vfs._close_open_file(of)
            return
        if not await self.queue(of, self.vfs.route(of.node.path)[1]):
            await self.vfs._close_open_file(of)

    def _give_up(self, of: OpenFile, exc: BaseException) -> None:
        """(Kept, and registered by :meth:`kept`, when its last handle goes.)"""
        log.error("write-back of /%s: %s; gave up until the next start (the file is kept "
                  "in %s, journal row %s)", of.node.path, exc, of.spool.path, of.journal_id)

    async def kept(self, mount: str, sub: str, row: int, spool: str) -> None:
        """A write whose commit failed (a refused write-back, or a ``close()`` that returned
        the error), its spool kept with journal ``row`` for the next start. Registered so
        that a later write of the path that succeeds, its ``rm``, a ``mv`` over it or
        ``rmdir`` of its folder supersedes it (:meth:`superseded`): the next start must
        not replay it over what came after. An earlier kept write of the same path is
        superseded by this one now, for the same reason; journal row ids grow with time,
        so of two the older is dropped whichever registers first. Registered before the
        first await (a writer of the path committing meanwhile then supersedes it)."""
        key = (mount, sub)
        earlier = self.given_up.get(key)
        if earlier is not None and earlier[0] == row:
            return
        if earlier is not None and earlier[0] > row:  # this one is the older write
            await self._drop(key, row, spool)
            return
        self.given_up[key] = (row, spool)
        if earlier is not None:
            await self._drop(key, *earlier)

    async def superseded(self, mount: str, sub: str, below: bool = False) -> None:
        """The path (``below``: or a path under it) was written again, removed or replaced
        since its write-back was given up: the kept spool must not be committed over that
        at the next start (its row and spool are removed). Nothing kept (the usual case):
        returns at once, so every change of a path may call it."""
        if not self.given_up:
            return
        prefix = sub + "/"
        gone = [(key, entry) for key, entry in self.given_up.items() if key == (mount, sub)
                or (below and key[0] == mount and key[1].startswith(prefix))]
        for key, entry in gone:
            if self.given_up.get(key) != entry:  # (dropped, or replaced, meanwhile)
                continue
            del self.given_up[key]
            with trio.CancelScope(shield=True):  # never unregistered with the row left
                await self._drop(key, *entry)

    async def _drop(self, key: tuple[str, str], row: int, spool: str) -> None:
        """Remove a superseded kept write's row and spool. A failure (a full disk: SQLite
        cannot write) is logged, not raised (the caller's write succeeded); the row then
        stays, and the next start replays it (the newer write's row is gone by then)."""
        try:
            if self.vfs.journal is not None:
                await self.vfs.journal.remove(row)
            await trio.to_thread.run_sync(remove_spool, spool)
        except (sqlite3.Error, OSError) as exc:
            log.error("/%s/%s: the superseded kept write (journal row %s) could not be "
                      "removed: %s", *key, row, exc)
            return
        log.info("/%s/%s: the kept write is superseded and removed", *key)

    async def settle(self, path: str) -> None:
        """Wait until no commit is queued for ``path`` or anything below it."""
        while True:
            waits = [done for of, done in self._pending.items()
                     if of.node.path == path or of.node.path.startswith(path + "/")]
            if not waits:
                return
            await waits[0].wait()

    async def outside_write(self, path: str) -> None:
        """A copy made outside the mount (``mcpfs cp``) is about to replace ``path``: a
        queued upload of it lands first. One waiting to be tried again is EBUSY: dropped
        for the copy, it would be lost if the copy failed too (the server is failing), and
        retried after the copy, it would replace it; ``rm`` it, or copy once it landed."""
        await self._not_waiting_retry(path, "copy over it")

    async def outside_read(self, path: str, below: bool = False) -> None:
        """A copy made outside the mount is about to read ``path`` (``below``: or a file
        under it: a recursive copy plans from the backend, which has not seen such a
        file): a queued upload of it lands first. One waiting to be tried again holds
        bytes the backend does not have: EBUSY, rather than copying the older object or
        leaving it out."""
        await self._not_waiting_retry(path, "copy it", below)

    async def _not_waiting_retry(self, path: str, what: str, below: bool = False) -> None:
        await self.settle(path)
        for of in self.vfs.open_under(path, below=below):
            if of.retry_waiting and of.node.attached:
                raise McpfsError(f"/{of.node.path}: written through the mount, its upload "
                                 f"not done yet (tried again later); {what} once it is "
                                 "uploaded", errno=errno.EBUSY)

    async def drain(self) -> None:
        """Wait for every queued commit (shutdown; adopted files not started, e.g. when
        serve never ran, are left to ``VFS.commit_all``)."""
        if self._nursery is None:
            self._release_adopted()
        while self._pending or self._ending:  # (a commit's spool and row go after it)
            await next(iter(self._pending.values() or self._ending)).wait()


__all__ = ["WriteBack", "UPLOADS", "ATTEMPTS"]
