"""Open files and directories: kernel file handles, and the write state shared per inode.

A :class:`FileHandle` is one ``open()``; a :class:`DirHandle` one ``opendir()`` with the
listing snapshotted at open, so readdir offsets stay stable. Every handle that writes to an
inode shares that inode's :class:`OpenFile`: one spool, one logical size, one dirty flag,
so a reader through another handle sees what was written (close-to-open within the host).

An OpenFile's spool is filled with the file's current content lazily, on the first read,
write or truncate that needs it; a truncate to 0 (or O_TRUNC, or a new file) skips the copy.
:meth:`OpenFile.commit` hands the spool to the Mount (after a journal row says so) and is
all-or-nothing on the backend; on failure the row is marked failed and the spool is kept.

Streaming: while every write extends a file that started empty (a new file, O_TRUNC, a
truncate to 0) and the Mount offers ``start_stream(writer)`` (/mfs), the bytes also feed an
import running as they arrive: started once the file outgrows the memory spool
(``spool.MEMORY_MAX``), fed in the same worker-thread hop as the spool write (the feed
blocks when the importer is behind: back-pressure), and handed to the Mount's ``commit``
in ``writer.extra["stream"]`` when the file is still purely sequential. Any other write or
truncate abandons it (``stream.abandon()``) and the commit imports the spool as before.
A stream that writes blocks (``stream.keeps_bytes``: its DAG holds every byte fed) is
*unspooled*: the writes after it started go only to the import (no spool pwrite, no
worker-thread hop while its queue has room), which halves the bytes a ``cp`` into /mfs
writes to disk. Anything that needs the bytes back (a read, a write elsewhere, a truncate,
a failed commit kept for the journal's retry) first finishes the import and writes its DAG
into the spool (``_respool``). An import that fails (a full disk) has lost the bytes: the
write is dropped as a whole and its error (ENOSPC, EIO) reaches the writer. Unspooled, the
journal row never says ``committing`` (the spool could not be committed again), so a crash
before close() returned loses the file, as with a memory commit.
A memory spool is committed from memory when the Mount says ``memory_commit`` (the journal
row then stays ``open``: nothing on disk could be re-committed after a crash, and close()
has not returned); other Mounts get the spool written out first.

Journal rows: ``open`` from creation, ``committing`` from the start of a commit until the
next change (or the final close, which removes the row), ``failed`` after a failed commit.
A memory spool has no row until it goes to disk (``Spool.on_disk``: the row is added in the
same worker-thread hop, before the file exists) or stays open for ``PENDING_ROW_DELAY``
(:meth:`OpenFile.add_row`, called by vfs's sweeper, so ``mcpfs status`` lists a file held
open as a pending write): a small file written and closed at once never costs a journal
insert and delete, and a crash loses nothing the journal could have recovered (an ``open``
row is discarded at start; a memory commit is all-or-nothing in MFS).

Concurrency and lock order: ``OpenFile.lock`` (trio.Lock) serializes everything that changes
the spool or reads it whole (fill, write, truncate, commit); plain reads take no lock
(pread on a file being extended is safe). It is taken before any Mount lock (MFS's own).
Tables are touched only from the trio thread.
"""

from __future__ import annotations

import errno
import itertools
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import McpfsError
from ..quick_lock import QuickLock
from ..mounts.base import FILE, Attr, Mount, Reader, Writer
from .inodes import Node
from .journal import COMMITTING, FAILED, OPEN, Journal
from .spool import MEMORY_MAX, Spool
from .spool import limiter as spool_limiter
from .streaming import Streaming

log = logging.getLogger("mcpfs.vfs")

PENDING_ROW_DELAY = 0.5  # seconds a memory spool stays open before it gets its journal row


class OpenFile(Streaming):
    def __init__(self, mount: Mount, node: Node, spool: Spool, writer: Writer, size: int,
                 filled: bool, journal: Journal | None, journal_id: int | None) -> None:
        self.mount = mount
        self.node = node
        self.spool = spool
        self.writer = writer
        self.size = size  # logical size: what stat shows while pending
        self.filled = filled
        self.dirty = not writer.existed  # a new file must be committed even if empty
        self.unlinked = False
        self.writers = 0
        self.handles = 0
        self.lock = QuickLock()  # (no scheduler round when free: quick_lock.py)
        self.journal = journal
        self.journal_id = journal_id
        self.row_state = OPEN  # the journal row's state as last written
        if journal is not None and journal_id is None and spool.in_memory:
            spool.on_disk = self._add_row_sync  # the row comes with the spool file
        self.opened = trio.current_time()
        self.sequential = filled and size == 0  # every write so far appended to empty
        self.stream: Any = None  # the Mount's streaming import, while sequential
        self.unspooled = False  # the spool lacks what ``stream`` holds (module docstring)
        self.lost: McpfsError | None = None  # why an unspooled write was dropped (sticky)
        self.bridge: Any = None  # the bridge (set by vfs): identities and native routes
        self.copy_source: Any = None  # the bridge's ReadTracker of the file copied in
        self.writer_pid: int | None = None  # who opened it, until the first write
        self.copycheck: Any = None  # a bridge.copycheck.CopyCheck: writes only compared
        self.recovered = False  # a kept file of a previous run (VFS._adopt)
        self.retry_waiting = False  # its upload failed; write-back tries again later

    def _add_row_sync(self) -> None:
        """The journal row of a memory spool about to be written to disk (worker thread,
        from ``Spool.materialize_sync``; the spool's callers hold ``lock`` or are the last
        close, so no other row change runs meanwhile)."""
        if self.journal is not None and self.journal_id is None:
            self.journal_id = self.journal.add_sync(self.mount.name, self.writer.path,
                                                    self.spool.path)
            self.row_state = OPEN

    async def add_row(self) -> None:
        """The journal row of a memory spool held open (``PENDING_ROW_DELAY``): only so that
        ``mcpfs status`` shows the write as pending (recovery discards ``open`` rows)."""
        async with self.lock:
            await self._add_row_locked()

    async def _add_row_locked(self) -> None:
        if self.journal is None or self.journal_id is not None or self.spool.closed \
                or not self.spool.in_memory:
            return
        row = await self.journal.add(self.mount.name, self.writer.path, self.spool.path)
        if self.spool.closed:  # discarded meanwhile (discard takes no lock)
            await self.journal.remove(row)
            return
        self.journal_id = row
        self.row_state = OPEN

    async def _redirty(self) -> None:
        """A change after a commit: the row must say OPEN again (a committing row would be
        re-committed at the next start with a half-written spool). Called under ``lock``."""
        if self.row_state != OPEN and self.journal is not None and self.journal_id is not None:
            await self.journal.set(self.journal_id, OPEN)
            self.row_state = OPEN

    def attr(self) -> Attr:
        base = self.node.attr if isinstance(self.node.attr, Attr) else Attr(FILE)
        writer = self.writer
        perm = base.perm if writer.perm is None else writer.perm
        mtime = base.mtime_ns if writer.mtime_ns is None else writer.mtime_ns
        return Attr(FILE, self.size, perm, mtime, cid=None if self.dirty else base.cid)

    async def _fill_locked(self) -> None:
        if not self.filled:
            await self.mount.fill_spool(self.writer)
            self.filled = True

    async def _end_copycheck(self) -> None:
        """Back to an ordinary spooled write: the bytes accepted so far go into the spool
        (read again from the source). If that fails the write is lost as a whole (the
        file is dropped, nothing partial is committed) and EIO is raised. Under ``lock``."""
        check, self.copycheck = self.copycheck, None
        if not check.verified and check.route == "mfs-link" and self.stream is None:
            # e.g. the source came from the kernel's page cache (no read reached us): the
            # streaming import only hashes, and the commit still links when they match
            self.writer.extra["hash_only"] = True
        try:
            await check.materialize(self.spool)
        except (McpfsError, OSError) as exc:
            self.unlinked = True
            log.error("copy into /%s/%s: cannot read the source again (%s); the file is "
                      "dropped", self.mount.name, self.writer.path, exc)
            raise McpfsError(f"copy source unreadable: {exc}", errno=errno.EIO) from None

    async def _commit_copy(self, sub_path: str) -> Attr | None:
        """Commit a checked copy natively; None (the copy check ended, the spool filled)
        when the file is not the whole source or the native route failed. Under ``lock``."""
        check = self.copycheck
        extra = None
        if check.complete(self.size) and self.bridge is not None:
            extra = await self.bridge.native_extra(check, self.size)
        if extra is not None:
            self.writer.path = sub_path
            self.writer.extra.update(extra)
            try:
                attr = await self.mount.commit(self.writer)
            except McpfsError as exc:
                log.info("native copy into /%s/%s failed (%s): spooling it", self.mount.name,
                         sub_path, exc)
            else:
                self.copycheck = None
                self.dirty = False
                self.writer.existed = True
                self.node.attr = attr
                self.bridge.after_commit(self.mount.name, sub_path, self.writer, attr)
                self._clear_route()
                return attr
            self._clear_route()
        await self._end_copycheck()
        return None

    def _clear_route(self) -> None:
        for key in ("identity", "source", "route", "link", "copy_from", "ipfs_cid",
                    "version", "imported", "hash_only", "content_size", "copy_only"):
            self.writer.extra.pop(key, None)  # a later commit decides afresh

    async def read(self, offset: int, size: int) -> bytes:
        if self.lost is not None:
            raise self.lost
        if self.copycheck is not None:
            async with self.lock:
                if self.copycheck is not None:
                    await self._end_copycheck()
        if self.unspooled:
            async with self.lock:
                if self.unspooled:
                    await self._leave_stream()
        if not self.filled:
            async with self.lock:
                await self._fill_locked()
        if offset >= self.size:
            return b""
        return await self.spool.read(offset, min(size, self.size - offset))

    async def write(self, offset: int, data: bytes) -> int:
        async with self.lock:
            if self.lost is not None:
                raise self.lost
            self.writer.mtime_ns = time.time_ns()  # what the commit keeps (mounts/mfs.py)
            if self.copycheck is not None:
                if offset == self.size and self.copycheck.accept(offset, data):
                    self.size += len(data)
                    self.dirty = True
                    return len(data)
                await self._end_copycheck()
            await self._fill_locked()
            await self._redirty()
            if self.sequential and offset != self.size:
                await self._leave_stream()
            if offset > self.size:  # a hole: make the spool's length the logical size first
                await self.spool.truncate(self.size)
            feed = None
            if self.sequential:
                if self.stream is None and offset + len(data) > MEMORY_MAX:
                    await self._start_stream()
                if self.unspooled:
                    await self._feed(data)
                    self.size += len(data)
                    self.dirty = True
                    return len(data)
                if self.stream is not None:
                    feed = self.stream.feed
            n = await self.spool.write(offset, data, feed)
            self.size = max(self.size, offset + n)
            self.dirty = True
            return n

    async def copy_unread(self, source: Any, offset: int, length: int) -> int | None:
        """``copy_file_range`` of ``source``'s bytes to the same ``offset``: counted, not
        read, when this file is a checked copy of ``source`` that has reached ``offset``
        (copies.py); None otherwise (the caller copies the bytes)."""
        async with self.lock:
            check = self.copycheck
            if check is None or check.source is not source or offset != self.size:
                return None
            count = check.accept_unread(offset, length)
            if count is not None:
                self.size += count
                self.dirty = True
            return count

    async def truncate(self, size: int) -> None:
        async with self.lock:
            if self.lost is not None:
                if size != 0:
                    raise self.lost
                self.lost, self.unlinked = None, False  # O_TRUNC: a new start, nothing lost
            self.writer.mtime_ns = time.time_ns()
            if self.copycheck is not None:
                await self._end_copycheck()
            if size == 0:
                self.filled = True
            if size != self.size or not (self.sequential and size == 0):
                await self._leave_stream(keep=size != 0)
            if size == 0 and self.stream is None:
                self.sequential = True  # empty again: the next writes may stream
            await self._fill_locked()
            await self._redirty()
            await self.spool.truncate(size)
            self.size = size
            self.dirty = True

    async def commit(self, sub_path: str) -> Attr | None:
        """Make the spool the content of ``sub_path`` if anything changed; None otherwise.
        Raises what the Mount raised (the data stays in the spool)."""
        async with self.lock:
            if self.lost is not None:
                raise self.lost
            if not self.dirty or self.unlinked:
                return None
            if self.copycheck is not None:
                attr = await self._commit_copy(sub_path)
                if attr is not None:
                    return attr
            streamed = await self._finish_unspooled() if self.unspooled else None
            await self._fill_locked()
            moved, self.writer.path = self.writer.path != sub_path, sub_path
            memory = self.spool.in_memory and getattr(self.mount, "memory_commit", False)
            if not memory and streamed is None:
                await self.spool.materialize()
            if self.stream is not None:  # still purely sequential: the DAG is being built
                self.writer.extra["stream"], self.stream = self.stream, None
                self.sequential = False  # consumed: later appends go through the spool
            if not memory and streamed is None and self.journal is not None \
                    and self.journal_id is not None \
                    and (moved or self.row_state not in (COMMITTING, FAILED)):  # a retry:
                # the row stays as it is (its attempts count runs: recovery.py)
                await self.journal.set(self.journal_id, COMMITTING, sub_path)
                self.row_state = COMMITTING
            if self.bridge is not None:  # identity, and maybe a native route
                await self.bridge.before_commit(self.mount.name, sub_path, self.writer,
                                                self.copy_source, self.size)
            try:
                attr = await self.mount.commit(self.writer)
            except BaseException as exc:
                if streamed is not None:  # the retry needs the bytes: from the DAG
                    with trio.CancelScope(shield=True):
                        try:
                            await self._respool(streamed)
                        except McpfsError:
                            raise exc from None  # dropped (logged): nothing to retry
                await self.spool.materialize()  # kept for the journal's retry
                if self.journal is not None and self.journal_id is not None \
                        and self.row_state != FAILED:  # one failed attempt per run counts
                    with trio.CancelScope(shield=True):
                        await self.journal.set(self.journal_id, FAILED)
                    self.row_state = FAILED
                if isinstance(exc, McpfsError):
                    log.error("commit of /%s/%s failed: %s", self.mount.name, sub_path, exc)
                raise
            # The row stays "committing" while handles remain: a crash now re-commits the
            # same complete spool (harmless); the next change sets it back to "open".
            if streamed is not None:  # the spool holds a prefix at most: the next read or
                await self.spool.truncate(0)  # write refills it from the committed file
                self.filled = False
            self.dirty = False
            self.writer.existed = True
            self.node.attr = attr
            if self.bridge is not None:
                self.bridge.after_commit(self.mount.name, sub_path, self.writer, attr)
            self._clear_route()
            return attr

    async def prepare_write_back(self, sub_path: str) -> bool:
        """Before close() returns without committing (vfs/write_back.py): the spool on
        disk with its journal row saying ``committing``, so a crash from now on commits it
        at the next start. False (nothing changed) for what must be committed now: a
        checked copy or an unspooled stream (their spool is not the content)."""
        async with self.lock:
            journal = self.journal
            if self.copycheck is not None or self.unspooled or journal is None \
                    or not self.dirty or self.unlinked:
                return False
            await self._fill_locked()
            self.writer.path = sub_path

            def work() -> None:  # one worker-thread hop: file, row, state
                self.spool.materialize_sync()  # on_disk adds the row of a memory spool
                if self.journal_id is None:
                    self.journal_id = journal.add_sync(self.mount.name, sub_path,
                                                       self.spool.path)
                journal.set_sync(self.journal_id, COMMITTING, sub_path)
                self.spool.stamp_sync(self.writer.mtime_ns)  # a crash: the commit's mtime
            await trio.to_thread.run_sync(work, limiter=spool_limiter())
            self.row_state = COMMITTING
            return True

    async def drop_row(self) -> None:
        """The file is gone (unlinked, or replaced by a rename): its journal row goes now,
        so no start commits it again (a row stays ``committing`` after a commit while
        readers hold the file); the spool stays for the handles still open."""
        journal, row = self.journal, self.journal_id
        if journal is not None and row is not None:
            self.journal_id = None
            await journal.remove(row)

    async def discard(self) -> None:
        """Close and remove the spool and the journal row (nothing left to commit): one
        worker-thread hop for both. A row the journal cannot delete (its disk is full) is
        left, logged: with its spool gone, the next start discards it."""
        journal, row = self.journal, self.journal_id
        if self.stream is not None:
            self.stream.abandon()
            self.stream = None
        if self.spool.in_memory and (journal is None or row is None):  # no file, no row
            self.spool.close_sync(delete=True)
            return

        def work() -> None:
            self.spool.close_sync(delete=True)
            if journal is not None and row is not None:
                try:
                    journal.remove_sync(row)
                except sqlite3.Error as exc:
                    log.warning("journal row %s of /%s/%s left (%s): the next start "
                                "discards it", row, self.mount.name, self.writer.path, exc)
        await trio.to_thread.run_sync(work, limiter=spool_limiter())

    async def keep(self) -> None:
        """Close the spool but keep it (a failed commit, retried at the next start)."""
        if self.stream is not None:
            self.stream.abandon()
            self.stream = None
        await trio.to_thread.run_sync(self.spool.close_sync, False, self.writer.mtime_ns,
                                      limiter=spool_limiter())


@dataclass(eq=False)
class FileHandle:
    node: Node
    mount: Mount
    reader: Reader | None = None
    open_file: OpenFile | None = None
    writable: bool = False
    fh: int = 0
    keep_cache: bool = False  # the kernel may keep the inode's page cache (see VFS.open)
    direct_io: bool = False  # the kernel passes writes through, not via its page cache
    identity: str | None = None  # content identity this handle reads (reader handles)
    tracker: Any = None  # the bridge's ReadTracker of a reader handle


@dataclass(eq=False)
class DirHandle:
    """A directory's entries as listed at opendir: two parallel lists (no object per entry;
    an entry's path is made when readdir hands it out, next to the inode that keeps it)."""

    node: Node
    names: list[str] = field(default_factory=list)
    attrs: list[Attr] = field(default_factory=list)
    fh: int = 0


class HandleTable:
    """fh -> handle (trio thread only)."""

    def __init__(self) -> None:
        self._handles: dict[int, Any] = {}
        self._ids = itertools.count(1)

    def add(self, handle: Any) -> int:
        handle.fh = next(self._ids)
        self._handles[handle.fh] = handle
        return handle.fh

    def get(self, fh: int) -> Any:
        try:
            return self._handles[fh]
        except KeyError:
            raise McpfsError(f"bad file handle {fh}", errno=errno.EBADF) from None

    def pop(self, fh: int) -> Any:
        handle = self.get(fh)
        del self._handles[fh]
        return handle

    def __len__(self) -> int:
        return len(self._handles)


__all__ = ["OpenFile", "FileHandle", "DirHandle", "HandleTable"]
