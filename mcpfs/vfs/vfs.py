"""The file system without a kernel: inode-level operations over path-based Mounts.

fuse_ops.py calls one method here per FUSE request; tests call the same methods directly.
A path's first segment picks the Mount (``ipfs``, ``mfs``...); the empty path is the root.
Results are :class:`Entry` values (inode, :class:`~mcpfs.mounts.base.Attr`, timeouts) and
errors are McpfsError with the errno to report; nothing here knows pyfuse3.

Lookup counts: every method returning an Entry has counted one kernel lookup for it
(lookup, create, mkdir, symlink); readdir entries are counted by :meth:`VFS.remember`
when the kernel accepts them; :meth:`VFS.forget` undoes them.

Writes: see handles.py. A file is committed on the ``flush`` of its last writing handle
(the ``close()`` the writer waits on, so EIO/ENOSPC reach it), else on ``fsync`` or on the
last ``release``; a failed commit keeps the spool for the journal's retry. Until committed
a file shows in lookups and listings with its local size. :meth:`VFS.commit_all` commits
what is still pending at unmount.

Concurrency: everything runs on the trio thread; the tables (inodes, handles,
``open_files``) change only between awaits, so no lock guards them. Per-file ordering is
OpenFile.lock's job (handles.py). Copies (a copy's source, ``copy_file_range``): copies.py.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import McpfsError, NotFound, ReadOnly
from ..mounts.base import DIR, FILE, Attr, Mount, StatFS
from ..mounts.root import RootMount
from .copies import Copies
from .open_files import OpenFiles
from .page_cache import PageCache, write_only_direct
from .handles import DirHandle, FileHandle, HandleTable, OpenFile
from .inodes import InodeTable, Node, child_path, parent_of
from .journal import Journal
from .write_back import WriteBack

log = logging.getLogger("mcpfs.vfs")

SOURCE_XATTR = "user.mcpfs.source"  # where a copied file came from (the bridge's record)
RENAME_NOREPLACE = 1  # linux/fs.h
RENAME_EXCHANGE = 2


@dataclass(frozen=True, slots=True)
class Entry:
    ino: int
    attr: Attr
    mode: int
    attr_timeout: float
    entry_timeout: float


class VFS(OpenFiles, Copies):
    def __init__(self, mounts: dict[str, Mount], spool_dir: str | os.PathLike[str],
                 journal: Journal | None = None, bridge: Any = None) -> None:
        """``bridge``: a bridge.Bridge (content identities of reads and commits, native
        routes for copies); None leaves every write to its Mount's own route."""
        self.mounts = mounts
        self.bridge = bridge
        self.root = RootMount(mounts)
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)  # memory spools never make it
        self.journal = journal
        self.inodes = InodeTable()
        self.handles = HandleTable()
        self.open_files: dict[int, OpenFile] = {}  # ino -> write state
        self.page_cache = PageCache()  # whether a read-only open keeps the kernel's pages
        self._sweeping = False  # the journal-row sweeper runs (see _sweep_rows)
        self.write_back = WriteBack(self)  # background commits (its serve() runs them)

    # ---------------------------------------------------------------- routing
    def route(self, path: str) -> tuple[Mount, str]:
        if not path:
            return self.root, ""
        name, _, rest = path.partition("/")
        mount = self.mounts.get(name)
        if mount is None:
            raise NotFound(f"/{path}: no such subtree")
        return mount, rest

    def _writable(self, mount: Mount, path: str) -> None:
        if not mount.capabilities.writable:
            raise ReadOnly(f"/{path}: read-only file system")

    def _entry(self, node: Node, mount: Mount, attr: Attr) -> Entry:
        caps = mount.capabilities_for(self.route(node.path)[1])
        return Entry(node.ino, attr, attr.mode(caps.writable), caps.attr_timeout,
                     caps.entry_timeout)

    async def _attr(self, node: Node) -> tuple[Mount, Attr]:
        mount, sub = self.route(node.path)
        of = self.open_files.get(node.ino)
        if of is not None:
            return mount, of.attr()
        if not node.attached:
            if node.attr is None:
                raise NotFound(f"/{node.path}: deleted")
            return mount, node.attr
        attr = await mount.lookup(sub)
        node.attr = attr
        return mount, attr

    def _pending_at(self, path: str) -> OpenFile | None:
        node = self.inodes.find(path)
        of = self.open_files.get(node.ino) if node is not None else None
        return of if of is not None and not of.unlinked else None

    # ---------------------------------------------------------------- names
    def _pending_below(self, path: str) -> bool:
        """Whether a file under ``path`` is open for writing or waiting for its upload:
        then ``path`` is a directory (not empty), whatever the backend (maybe unreachable)
        says. An open file's node stays in the inode table while attached, so a path with
        no known paths below it has none (O(1): the lookup of each new name in a burst of
        creates, which otherwise scanned every pending file)."""
        if not self.inodes.knows_below(path):
            return False
        return any(of.node.attached for of in self.open_under(path, itself=False))

    async def lookup(self, parent: int, name: str) -> Entry:
        path = child_path(self.inodes.get(parent).path, name)
        of = self._pending_at(path)
        mount, sub = self.route(path)
        if of is not None:
            attr = of.attr()
        elif sub and not mount.local_commit and self.open_files \
                and self._pending_below(path):  # uploads may wait long for the server:
            attr = Attr(DIR)  # the folders of their files need no request meanwhile
        else:
            attr = await mount.lookup(sub)
        return self._entry(self.inodes.remember(path, attr), mount, attr)

    def remember(self, path: str, attr: Attr) -> Entry:
        """Count one kernel lookup of ``path`` (a readdirplus entry the kernel accepted)."""
        mount, _ = self.route(path)
        return self._entry(self.inodes.remember(path, attr), mount, attr)

    def forget(self, ino: int, n: int) -> None:
        self.inodes.forget(ino, n)

    async def getattr(self, ino: int) -> Entry:
        node = self.inodes.get(ino)
        mount, attr = await self._attr(node)
        return self._entry(node, mount, attr)

    async def setattr(self, ino: int, size: int | None = None, fh: int | None = None,
                      other: bool = False, mtime_ns: int | None = None,
                      perm: int | None = None) -> Entry:
        """Truncate when ``size`` is given; a file's new ``mtime_ns`` and ``perm`` go to the
        Mount (kept by /mfs; a file being written keeps them for its commit); other
        owner/time changes (``other``) are accepted and ignored on writable subtrees (see
        docs/SEMANTICS.md). EROFS on read-only subtrees."""
        node = self.inodes.get(ino)
        mount, sub = self.route(node.path)
        if size is not None or other or mtime_ns is not None or perm is not None:
            self._writable(mount, node.path)
        if size is not None:
            await self.write_back.settle(node.path)  # a truncate follows the upload
            of = self.open_files.get(ino)
            if of is not None:
                await of.truncate(size)
            else:
                of = await self._open_file(node, mount, sub, truncate=size == 0)
                of.handles += 1  # ours meanwhile: another opener's close() must not drop it
                try:
                    await of.truncate(size)
                    await self._commit(of)
                finally:
                    of.handles -= 1
                    await self._close_open_file(of)
        if mtime_ns is not None or perm is not None:
            await self._set_attrs(node, mount, sub, mtime_ns, perm)
        return await self.getattr(ino)

    async def _set_attrs(self, node: Node, mount: Mount, sub: str, mtime_ns: int | None,
                         perm: int | None) -> None:
        """chmod/utimes: a file being written keeps them for its commit (the commit reads
        them when it ends, so one set during an upload is kept too); any other goes to the
        Mount. A deleted file's (an fd still open) are accepted and dropped."""
        of = self.open_files.get(node.ino)
        if of is not None:  # shown at once (OpenFile.attr)
            if mtime_ns is not None:
                of.writer.mtime_ns = mtime_ns
            if perm is not None:
                of.writer.perm = perm
            if of.dirty and not of.unlinked:
                return
        if node.attached:
            await mount.set_attrs(sub, mtime_ns, perm)

    async def readlink(self, ino: int) -> str:
        _, attr = await self._attr(self.inodes.get(ino))
        if attr.target is None:
            raise McpfsError("not a symlink", errno=errno.EINVAL)
        return attr.target

    # ---------------------------------------------------------------- directories
    async def opendir(self, ino: int) -> int:
        node = self.inodes.get(ino)
        mount, sub = self.route(node.path)
        entries: dict[str, Attr] = {}
        async for name, attr in mount.listdir(sub):
            entries[name] = attr
        for of in self.open_files.values():  # pending files: local size, new ones too
            if of.node.attached and not of.unlinked and parent_of(of.node.path) == node.path:
                entries[of.node.path.rpartition("/")[2]] = of.attr()
        return self.handles.add(DirHandle(node, list(entries), list(entries.values())))

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, str, Attr]]:
        """(next offset, name, path, attr) of the snapshotted entries from ``start``, lazily:
        the kernel takes a page of entries per call, so each call costs what it returns
        (not a copy of the remaining listing)."""
        handle = self.handles.get(fh)
        names, attrs, folder = handle.names, handle.attrs, handle.node.path
        for i in range(start, len(names)):
            name = names[i]
            yield i + 1, name, child_path(folder, name), attrs[i]

    def releasedir(self, fh: int) -> None:
        self.handles.pop(fh)

    async def mkdir(self, parent: int, name: str) -> Entry:
        path = child_path(self.inodes.get(parent).path, name)
        mount, sub = self.route(path)
        self._writable(mount, path)
        attr = await mount.mkdir(sub)
        await self.write_back.superseded(mount.name, sub)  # a kept write of that name
        self.inodes.detach(path)
        return self._entry(self.inodes.remember(path, attr), mount, attr)

    async def rmdir(self, parent: int, name: str) -> None:
        path = child_path(self.inodes.get(parent).path, name)
        mount, sub = self.route(path)
        self._writable(mount, path)
        await self.write_back.settle(path)
        if self._pending_below(path):
            raise McpfsError(f"/{path}: directory not empty", errno=errno.ENOTEMPTY)
        await mount.rmdir(sub)
        await self.write_back.superseded(mount.name, sub, below=True)
        self.inodes.detach(path)

    async def symlink(self, parent: int, name: str, target: str) -> Entry:
        path = child_path(self.inodes.get(parent).path, name)
        mount, sub = self.route(path)
        self._writable(mount, path)
        if not mount.capabilities.symlinks:
            raise McpfsError(f"/{path}: symlinks not supported", errno=errno.EPERM)
        attr = await mount.symlink(sub, target)
        await self.write_back.superseded(mount.name, sub)  # a kept write of that name
        self.inodes.detach(path)
        return self._entry(self.inodes.remember(path, attr), mount, attr)

    async def unlink(self, parent: int, name: str) -> None:
        path = child_path(self.inodes.get(parent).path, name)
        mount, sub = self.route(path)
        self._writable(mount, path)
        await self.write_back.settle(path)  # the backend must not see the two reordered
        of = self._pending_at(path)
        if of is None or of.writer.existed:  # a never-committed file exists only here
            await mount.unlink(sub)
        await self.write_back.superseded(mount.name, sub)
        if of is not None:
            of.unlinked = True
            await of.drop_row()
        self.inodes.detach(path)
        if self.bridge is not None:
            self.bridge.removed(mount.name, sub)

    async def rename(self, parent_old: int, name_old: str, parent_new: int, name_new: str,
                     flags: int = 0) -> None:
        old = child_path(self.inodes.get(parent_old).path, name_old)
        new = child_path(self.inodes.get(parent_new).path, name_new)
        m_old, s_old = self.route(old)
        m_new, s_new = self.route(new)
        if m_old is not m_new:
            raise McpfsError(f"/{old} -> /{new}: across subtrees", errno=errno.EXDEV)
        self._writable(m_old, old)
        if not m_old.capabilities.rename or not s_old or not s_new:
            raise McpfsError(f"/{old}: cannot rename", errno=errno.EBUSY if not s_old
                             else errno.EPERM)
        if flags & RENAME_EXCHANGE:
            raise McpfsError("RENAME_EXCHANGE is not supported", errno=errno.EINVAL)
        await self.write_back.settle(old)
        await self.write_back.settle(new)
        if flags & RENAME_NOREPLACE:
            try:
                await m_new.lookup(s_new)
            except McpfsError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            else:
                raise McpfsError(f"/{new}: exists", errno=errno.EEXIST)
        src = self._pending_at(old)
        if src is not None and not src.writer.existed:
            await self._commit(src)  # the backend must have the file to move it
        dst = self._pending_at(new)
        await m_old.rename(s_old, s_new)
        if dst is not None:
            dst.unlinked = True
            await dst.drop_row()
        await self.write_back.superseded(m_new.name, s_new, below=True)  # what was kept
        self.inodes.rename(old, new)
        await self._move_rows(new)
        if self.bridge is not None:
            self.bridge.renamed(m_old.name, s_old, s_new)

    # ---------------------------------------------------------------- files
    async def open(self, ino: int, flags: int, pid: int | None = None
                   ) -> tuple[int, FileHandle]:
        """``pid``: the opening process (the bridge matches a copy's source by it)."""
        node = self.inodes.get(ino)
        mount, sub = self.route(node.path)
        writable = (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self._writable(mount, node.path)
            of = await self._open_file(node, mount, sub, truncate=bool(flags & os.O_TRUNC))
            self._copy_source(of, pid)
            handle = FileHandle(node, mount, open_file=of, writable=True,
                                direct_io=write_only_direct(flags))
            of.writers += 1
            of.handles += 1
        elif (of := self.open_files.get(ino)) is not None:
            handle = FileHandle(node, mount, open_file=of)
            of.handles += 1
        else:
            reader = await mount.open_read(sub)
            handle = FileHandle(node, mount, reader=reader,
                                identity=getattr(reader, "identity", None))
            immutable = mount.capabilities_for(sub).immutable
            handle.keep_cache = self.page_cache.opened(node, handle.identity, immutable)
            if self.bridge is not None and isinstance(node.attr, Attr):
                handle.tracker = self.bridge.track_read(mount.name, sub, reader,
                                                        node.attr.size, pid)
        return self.handles.add(handle), handle

    async def create(self, parent: int, name: str, flags: int, pid: int | None = None
                     ) -> tuple[int, Entry]:
        path = child_path(self.inodes.get(parent).path, name)
        mount, sub = self.route(path)
        self._writable(mount, path)
        if self._pending_at(path) is None:
            self.inodes.detach(path)
        node = self.inodes.ensure(path)
        of = await self._open_file(node, mount, sub, truncate=True, create=True)
        self._copy_source(of, pid)
        of.writers += 1
        of.handles += 1
        fh = self.handles.add(FileHandle(node, mount, open_file=of, writable=True,
                                         direct_io=write_only_direct(flags)))
        attr = of.attr()
        return fh, self._entry(self.inodes.remember(path, attr), mount, attr)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle: FileHandle = self.handles.get(fh)
        if handle.open_file is not None:
            return await handle.open_file.read(offset, size)
        assert handle.reader is not None
        data = await handle.reader.read(offset, size)
        if handle.tracker is not None:
            handle.tracker.on_read(offset, data)
        return data

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle: FileHandle = self.handles.get(fh)
        if not handle.writable or handle.open_file is None:
            raise McpfsError("file not open for writing", errno=errno.EBADF)
        of = handle.open_file
        if of.writer_pid is not None:  # the first write: ask for a copy source once more
            if of.copy_source is None:
                self._find_source(of)
            of.writer_pid = None
        return await of.write(offset, data)

    async def flush(self, fh: int) -> None:
        """close(): commit when this is the last writing handle (errors reach close())."""
        handle: FileHandle = self.handles.get(fh)
        of = handle.open_file
        if of is not None and handle.writable and of.writers <= 1 and of.dirty:
            if self.write_back.applies(of) and \
                    await self.write_back.queue(of, self.route(of.node.path)[1]):
                return  # journaled: committed in the background (write_back.py)
            await self._commit(of)

    async def fsync(self, fh: int) -> None:
        handle: FileHandle = self.handles.get(fh)
        if handle.open_file is not None and handle.open_file.dirty:
            await self._commit(handle.open_file)
        sync = getattr(handle.mount, "sync", None)  # /mfs: make the committed root durable
        if sync is not None and handle.writable:
            await sync()

    async def release(self, fh: int) -> None:
        handle: FileHandle = self.handles.pop(fh)
        if handle.reader is not None:
            self.page_cache.closed(handle.node, handle.identity)
            if handle.tracker is not None:
                self.bridge.closed_read(handle.tracker)
            await handle.reader.close()
        of = handle.open_file
        if of is None:
            return
        of.handles -= 1
        if handle.writable:
            of.writers -= 1
        if of.writers <= 0 and of.dirty and not of.unlinked \
                and not self.write_back.pending(of) and not of.retry_waiting:
            try:
                await self._commit(of)
            except McpfsError:
                pass  # logged by OpenFile.commit; the spool is kept for the journal
        await self._close_open_file(of)

    # ---------------------------------------------------------------- xattrs, statfs
    async def getxattr(self, ino: int, name: str) -> bytes:
        if not name.startswith("user."):  # ls -l asks for ACLs and labels per file
            raise McpfsError(f"no attribute {name}", errno=errno.ENODATA)
        node = self.inodes.get(ino)
        mount, sub = self.route(node.path)
        of = self.open_files.get(ino)
        if of is not None and (of.dirty or not node.attached):
            local = {"user.mcpfs.size": str(of.size), "user.mcpfs.backend": mount.name}
            if name not in local:
                raise McpfsError(f"{name}: not until committed", errno=errno.ENODATA)
            return local[name].encode()
        if name == SOURCE_XATTR and self.bridge is not None:
            source = await self.bridge.source_of(mount.name, sub)
            if source is not None:
                return source.encode()
        return await mount.getxattr(sub, name)

    async def listxattr(self, ino: int) -> list[str]:
        node = self.inodes.get(ino)
        mount, sub = self.route(node.path)
        of = self.open_files.get(ino)
        if of is not None and (of.dirty or not node.attached):
            return ["user.mcpfs.backend", "user.mcpfs.size"]
        names = await mount.listxattr(sub)
        if self.bridge is not None and SOURCE_XATTR not in names \
                and await self.bridge.source_of(mount.name, sub) is not None:
            names.append(SOURCE_XATTR)
        return names

    async def statfs(self) -> StatFS:
        for mount in self.mounts.values():
            if mount.capabilities.writable:
                return await mount.statfs()
        return StatFS()

    # ---------------------------------------------------------------- lifecycle
    async def commit_all(self, local: bool | None = None, recovered: bool = True) -> None:
        """Commit every pending file (unmount), background commits included; failures
        are logged and kept for the next start. ``local``: only the files of
        ``local_commit`` subtrees (True: the daemon commits those first, as no server can
        hold them up and its shutdown has a time limit) or only the others (False).
        ``recovered=False``: kept files of a previous run whose upload has not started
        stay kept (their rows wait for the next start: a start that failed)."""
        if local is not True:
            await self.write_back.drain()
        for of in list(self.open_files.values()):
            if local is not None and of.mount.local_commit != local:
                continue
            of.retry_waiting = False  # (a failure now: kept for the next start)
            if of.dirty and not of.unlinked and (recovered or not of.recovered):
                try:
                    await self._commit(of)
                except McpfsError:
                    pass  # (logged by the commit)
                except Exception:  # noqa: BLE001 - unmounting: logged, on to the next
                    log.exception("commit of /%s at unmount", of.node.path)
            if of.handles <= 0:  # a write-back cancelled before its commit
                await self._close_open_file(of)

    async def recover(self) -> list[tuple[str, str, str]]:
        """Replay the journal of a previous run: see recovery.py."""
        from .recovery import recover
        return await recover(self.mounts, self.journal, self._adopt, lambda row: (
            self.write_back.kept(row.mount, row.path, row.id, row.spool)),
            self.write_back.superseded)


__all__ = ["VFS", "Entry", "RENAME_NOREPLACE", "RENAME_EXCHANGE", "FILE"]
