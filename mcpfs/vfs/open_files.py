"""The write state of open files: an OpenFile per inode, made, committed and closed.

:class:`OpenFiles` is part of :class:`~mcpfs.vfs.vfs.VFS` (a base class, so the life of an
OpenFile lives in one module; it uses the VFS's ``open_files``, ``journal``, ``spool_dir``,
``bridge``, ``inodes``, ``write_back`` and ``route``). An OpenFile is made by the first
open for writing (``_open_file``: a spool, in memory for Mounts that commit from memory,
and a journal row), committed by ``_commit`` (shielded: never half-recorded) and dropped by
``_close_open_file`` when its last handle is gone and no background commit holds it (the
spool is kept only when a commit failed). ``_sweep_rows`` gives memory spools held open a
journal row, so ``mcpfs status`` lists them.

Errors: what the Mount and the spool raise (EIO, ENOSPC...); a failed open leaves nothing.
Concurrency: trio thread only; ``open_files`` changes between awaits (see vfs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import trio

from ..mounts.base import Attr, Mount, Writer
from .handles import PENDING_ROW_DELAY, OpenFile
from .inodes import Node
from .journal import COMMITTING, FAILED
from .recovery import remove_spool
from .spool import Spool
from .spool import limiter as spool_limiter

log = logging.getLogger("mcpfs.vfs")


class OpenFiles:
    open_files: dict[int, OpenFile]
    journal: Any
    write_back: Any

    async def _open_file(self, node: Node, mount: Mount, sub: str, truncate: bool,
                         create: bool = False) -> OpenFile:
        """The inode's write state, created with a fresh spool (and journal row) if needed.
        ``create``: the kernel just found no such name (Mount.open_write may skip checks)."""
        of = self.open_files.get(node.ino)
        while of is not None and self.write_back.pending(of):
            await self.write_back.settle(node.path)  # a new writer starts after the upload
            of = self.open_files.get(node.ino)
        if of is not None:
            if truncate:  # counted as a handle meanwhile: a close() of the last other one
                of.handles += 1  # during the truncate must not drop this write state
                try:
                    await of.truncate(0)
                except BaseException:
                    of.handles -= 1  # failed: nobody takes it
                    with trio.CancelScope(shield=True):
                        await self._close_open_file(of)
                    raise
                of.handles -= 1
            return of  # (the caller counts its handle before its next await)
        node.cache_id = None  # written through the mount: the page cache is not one CID's
        journal = self.journal

        def make() -> tuple[Spool, int | None]:  # one worker-thread hop for both
            spool = Spool.create_sync(self.spool_dir)
            try:
                return spool, journal.add_sync(mount.name, sub, spool.path) if journal else None
            except BaseException:
                spool.close_sync(delete=True)
                raise
        if getattr(mount, "memory_commit", False):
            # A memory spool: no I/O, no hop; its journal row comes with its file, or from
            # the sweeper when it stays open (handles.py).
            spool, jid = Spool.create_sync(self.spool_dir, memory=True), None
            if journal is not None and not self._sweeping:
                self._sweeping = True
                trio.lowlevel.spawn_system_task(self._sweep_rows, name="mcpfs-journal-rows")
        else:
            spool, jid = await trio.to_thread.run_sync(make, limiter=spool_limiter())
        of = None
        try:
            writer = await mount.open_write(sub, spool, truncate, create)
            size = 0
            if writer.existed and not truncate:
                size = writer.extra.get("size")
                if size is None:
                    size = (await mount.lookup(sub)).size
            if node.ino not in self.open_files:  # else a concurrent opener got there first
                of = OpenFile(mount, node, spool, writer, size,
                              filled=truncate or not writer.existed, journal=self.journal,
                              journal_id=jid)
        finally:
            if of is None:  # failed, or not needed: the spool and its row go
                with trio.CancelScope(shield=True):
                    await OpenFile(mount, node, spool, Writer(sub, spool, False), 0, True,
                                   journal, jid).discard()
        if of is None:  # (not failed): share the other opener's write state
            return await self._open_file(node, mount, sub, truncate, create)
        of.bridge = self.bridge
        if writer.existed and writer.perm is None and isinstance(node.attr, Attr):
            writer.perm = node.attr.perm  # the mode it showed: kept by its commit
        if truncate:
            of.dirty = True
        self.open_files[node.ino] = of
        node.open_file = of
        return of

    async def _sweep_rows(self) -> None:
        """Give memory spools held open for ``PENDING_ROW_DELAY`` their journal row (so
        ``mcpfs status`` lists them); ends when no file is open (restarted by the next)."""
        try:
            while self.open_files:
                await trio.sleep(PENDING_ROW_DELAY / 2)
                now = trio.current_time()
                for of in list(self.open_files.values()):
                    if of.journal_id is None and of.spool.in_memory \
                            and now - of.opened >= PENDING_ROW_DELAY:
                        try:
                            await of.add_row()
                        except Exception:  # noqa: BLE001 - observability only; a system task
                            log.exception("journal row of /%s/%s", of.mount.name,
                                          of.writer.path)
                            of.opened = float("inf")  # do not retry every tick
        finally:
            self._sweeping = False

    async def _adopt(self, row: Any, mount: Mount, size: int, mtime_ns: int) -> None:
        """Make a journal row of a previous run a pending write of ``mount`` (recovery.py,
        before the mount is live): an OpenFile with no handle over the kept spool (opened
        by its first read or by the upload), queued for a background commit when the
        write-back's nursery starts. A later row for the same path (rows come in order)
        replaces an earlier one, whose row and spool go: it was superseded."""
        node = self.inodes.ensure(f"{mount.name}/{row.path}" if row.path else mount.name)
        earlier = self.open_files.pop(node.ino, None)
        if earlier is not None:  # its resume state too (an S3 upload id: that upload is
            self.write_back.forget(earlier)  # aborted once write-back serves)
            state = await trio.to_thread.run_sync(mount.resume_state, earlier.spool.path)
            await earlier.discard()
            await trio.to_thread.run_sync(remove_spool, earlier.spool.path)
            if state is not None:
                self.write_back.abandon(mount, state)
            log.warning("journal: /%s/%s was written again before its kept write was "
                        "uploaded: the older one is dropped", mount.name, row.path)
        spool = Spool.kept(row.spool)
        of = OpenFile(mount, node, spool, Writer(row.path, spool, True, mtime_ns=mtime_ns),
                      size, filled=True, journal=self.journal, journal_id=row.id)
        of.dirty = of.recovered = True
        of.row_state = COMMITTING  # (a failed row too: its first failure now counts a run)
        self.open_files[node.ino] = of
        node.open_file = of
        self.write_back.adopt(of)

    def open_under(self, path: str, itself: bool = True, below: bool = True
                   ) -> Iterator[OpenFile]:
        """The files open, not unlinked, at ``path`` (with ``itself``) or under it (with
        ``below``). Nothing may await while the caller iterates."""
        prefix = path + "/"
        return (of for of in self.open_files.values() if not of.unlinked and (
            itself and of.node.path == path or below and of.node.path.startswith(prefix)))

    async def _move_rows(self, path: str) -> None:
        """The journal rows of the files open at or under ``path`` (just renamed there)
        name their new path: a row keeps ``committing`` after a commit while handles
        remain, and a crash must not bring the file back at its old name."""
        if self.journal is None or not self.open_files:
            return
        moves = [(of.journal_id, self.route(of.node.path)[1])
                 for of in self.open_under(path) if of.journal_id is not None]
        if moves:
            await self.journal.move(moves)

    async def _close_open_file(self, of: OpenFile) -> None:
        """Last handle gone: drop the write state; keep the spool only if a commit failed."""
        if of.handles > 0 or self.write_back.pending(of) or (
                of.retry_waiting and of.dirty and not of.unlinked):  # (write_back.py)
            return
        self.open_files.pop(of.node.ino, None)
        of.node.open_file = None
        with trio.CancelScope(shield=True):
            if of.dirty and not of.unlinked:
                if of.journal_id is not None and of.row_state in (COMMITTING, FAILED):
                    # kept for the next start (an open row is discarded there), until
                    # superseded; registered at once
                    await self.write_back.kept(of.mount.name, of.writer.path,
                                               of.journal_id, of.spool.path)
                await of.keep()
            else:
                await of.discard()
        if of.node.lookups <= 0:
            self.inodes.drop(of.node)

    async def _commit(self, of: OpenFile) -> None:
        if of.lost is not None:  # a dropped streamed write: its error, at every close()
            raise of.lost
        if of.unlinked or not of.node.attached:
            return
        _, sub = self.route(of.node.path)
        of.node.cache_id = None  # new content: the next open drops the kernel's page cache
        with trio.CancelScope(shield=True):  # never leave a half-recorded commit behind
            await of.commit(sub)
            await self.write_back.superseded(of.mount.name, sub)


__all__ = ["OpenFiles"]
