"""The Mount protocol: what vfs/ needs of one subtree (``ipfs``, ``mfs``, later ``s3``...).

Paths are relative to the subtree and never start with ``/``: ``""`` is the subtree's root,
``"a/b"`` an entry below it. A Mount knows nothing of inodes, lookup counts, handles or the
kernel; it maps paths onto its backend and raises :class:`~mcpfs.errors.McpfsError`
subclasses (their ``errno`` is what the mount reports). Every blocking backend call runs in
``trio.to_thread.run_sync`` under the mount's own ``CapacityLimiter``.

The default methods of :class:`Mount` refuse changes with EROFS, so a read-only subtree only
implements the reading half. Writes are spooled by vfs/: ``open_write`` may fill the spool
with the current content (lazily, see vfs/handles.py), ``commit`` makes the spooled bytes the
file's content on the backend, all or nothing.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import McpfsError, ReadOnly

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"

START_NS = time.time_ns()  # mtime shown for entries whose backend keeps none

DEFAULT_FILE_PERM = 0o644
DEFAULT_DIR_PERM = 0o755
READONLY_FILE_PERM = 0o444
READONLY_DIR_PERM = 0o555
FILL_PIECE = 1 << 20  # bytes per step when copying remote content into a spool


@dataclass(frozen=True, slots=True)
class Attr:
    """What ``stat`` shows of one entry. ``size`` is content bytes (0 for directories);
    ``cid``/``backend_size`` feed the ``user.mcpfs.*`` xattrs."""

    kind: str  # FILE, DIR or SYMLINK
    size: int = 0
    perm: int | None = None  # permission bits; None -> the mount's default for the kind
    mtime_ns: int = START_NS
    target: str | None = None  # symlinks
    # content identity, when the backend has one: its text, or an object whose str() is
    # the text (a listing's CIDs: their text is made when first asked, not per entry)
    cid: Any = None

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def cid_text(self) -> str | None:
        """The content identity as text (what ``user.mcpfs.cid`` shows), or None."""
        return None if self.cid is None else str(self.cid)

    def mode(self, writable: bool) -> int:
        """Full st_mode (type bits and permissions)."""
        if self.kind == DIR:
            perm = self.perm if self.perm is not None else (
                DEFAULT_DIR_PERM if writable else READONLY_DIR_PERM)
            return stat.S_IFDIR | perm
        if self.kind == SYMLINK:
            return stat.S_IFLNK | 0o777
        perm = self.perm if self.perm is not None else (
            DEFAULT_FILE_PERM if writable else READONLY_FILE_PERM)
        return stat.S_IFREG | perm


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a subtree can do; vfs/ picks cache lifetimes and errnos from it."""

    writable: bool = False
    rename: bool = False
    random_write: bool = False  # writes at any offset (through the spool)
    symlinks: bool = False
    immutable: bool = False  # content at a path never changes: long kernel caches
    attr_timeout: float = 1.0  # seconds the kernel may cache attributes
    entry_timeout: float = 1.0  # seconds the kernel may cache name -> inode


@dataclass(frozen=True, slots=True)
class StatFS:
    block_size: int = 4096
    blocks: int = 0
    blocks_free: int = 0
    blocks_avail: int = 0
    files: int = 0
    files_free: int = 0
    name_max: int = 255


class Reader(Protocol):
    async def read(self, offset: int, size: int) -> bytes: ...
    async def close(self) -> None: ...


class Spool(Protocol):
    """The part of vfs/spool.Spool a Mount uses (a local file holding the new content)."""

    path: str
    async def write_from(self, chunks: AsyncIterator[bytes]) -> int: ...
    async def size(self) -> int: ...
    def content(self) -> bytes | None: ...  # the bytes when at hand without file I/O


@dataclass
class Writer:
    """One pending write of ``path``: the spool vfs/ gives it, and whether it existed."""

    path: str
    spool: Spool
    existed: bool
    extra: dict = field(default_factory=dict)  # mount-private state (e.g. a base CID)
    mtime_ns: int | None = None  # set by utimes since the last write (None: the commit's)
    perm: int | None = None  # set by chmod while open (None: as it was)


XATTR_PREFIX = "user.mcpfs."


class Mount:
    """Base class: read-only, no entries. Subclasses override what they support."""

    name: str = ""
    capabilities = Capabilities()
    # commit() needs no server (the local MFS): the journal's rows are replayed before the
    # mount goes live; others' (a server may hang) wait for their upload behind it
    local_commit = False

    def capabilities_for(self, path: str) -> Capabilities:
        """The capabilities at ``path`` (a subtree may hold immutable parts, e.g. /hf's
        ``@<sha>``); the mount's own by default."""
        return self.capabilities

    # ---------------------------------------------------------------- reading
    async def lookup(self, path: str) -> Attr:
        raise McpfsError(f"{path}: not found", errno=errno.ENOENT)

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        raise McpfsError(f"{path}: not a directory", errno=errno.ENOTDIR)
        yield  # pragma: no cover - makes this an async generator

    async def open_read(self, path: str) -> Reader:
        raise McpfsError(f"{path}: not found", errno=errno.ENOENT)

    def resume_state(self, spool: str) -> Any:
        """What the backend kept beside ``spool`` to resume its upload (an S3 multipart
        upload's id), or None. Read (blocking: a worker thread) before a superseded kept
        spool is removed, so :meth:`abandon_resume` can end what it left open."""
        return None

    async def abandon_resume(self, state: Any) -> None:
        """End what ``state`` (from :meth:`resume_state`) holds open on the server, now
        that nothing will resume it. Errors are logged, never raised."""

    async def getxattr(self, path: str, name: str) -> bytes:
        """``user.mcpfs.cid``, ``.size`` and ``.backend`` from :meth:`lookup`; ENODATA
        for anything else (or a cid the entry has not got)."""
        if not name.startswith(XATTR_PREFIX):  # security.*, system.posix_acl_*: none
            raise McpfsError(f"{path}: no attribute {name}", errno=errno.ENODATA)
        attr = await self.lookup(path)
        value = {
            XATTR_PREFIX + "backend": self.name,
            XATTR_PREFIX + "size": str(attr.size),
            XATTR_PREFIX + "cid": attr.cid_text,
        }.get(name)
        if value is None:
            raise McpfsError(f"{path}: no attribute {name}", errno=errno.ENODATA)
        return value.encode()

    async def listxattr(self, path: str) -> list[str]:
        attr = await self.lookup(path)
        names = [XATTR_PREFIX + "backend", XATTR_PREFIX + "size"]
        if attr.cid:
            names.insert(0, XATTR_PREFIX + "cid")
        return names

    async def statfs(self) -> StatFS:
        return StatFS()

    def refresh(self, path: str) -> None:
        """Drop what this mount caches of ``path`` (the next lookup asks the backend; the
        bridge's ``verify`` re-reads what is there now). Default: nothing cached."""

    # ---------------------------------------------------------------- changing (EROFS)
    def _readonly(self, path: str) -> McpfsError:
        return ReadOnly(f"/{self.name}/{path}: read-only file system")

    async def open_write(self, path: str, spool: Spool, truncate: bool,
                         create: bool = False) -> Writer:
        """Check ``path`` can be written and return its Writer. ``create`` says the kernel
        has just looked the name up and not found it (a subtree may skip its own checks and
        let ``commit`` report a vanished parent)."""
        raise self._readonly(path)

    async def fill_spool(self, writer: Writer) -> None:
        """Copy the current content of ``writer.path`` into the spool (default: stream it
        through :meth:`open_read`)."""
        reader = await self.open_read(writer.path)
        try:
            async def chunks() -> AsyncIterator[bytes]:
                offset = 0
                while True:
                    data = await reader.read(offset, FILL_PIECE)
                    if not data:
                        return
                    offset += len(data)
                    yield data
            await writer.spool.write_from(chunks())
        finally:
            await reader.close()

    async def commit(self, writer: Writer) -> Attr:
        raise self._readonly(writer.path)

    async def unlink(self, path: str) -> None:
        raise self._readonly(path)

    async def mkdir(self, path: str) -> Attr:
        raise self._readonly(path)

    async def rmdir(self, path: str) -> None:
        raise self._readonly(path)

    async def rename(self, src: str, dst: str) -> None:
        raise self._readonly(src)

    async def symlink(self, path: str, target: str) -> Attr:
        raise self._readonly(path)

    async def set_attrs(self, path: str, mtime_ns: int | None, perm: int | None) -> None:
        """chmod / utimes of a file no one is writing (vfs checked it is writable):
        accepted and not stored by default (docs/SEMANTICS.md)."""

    async def warm(self) -> None:
        """Run in the background from the daemon's start, beside the first requests,
        until it returns or the daemon stops (default: nothing). Must not raise."""

    async def aclose(self) -> None:
        """Release backend resources at unmount (default: nothing)."""



def statfs_of(folder: str | os.PathLike[str]) -> StatFS:
    """The local file system holding ``folder`` (blocking: call in a thread)."""
    st = os.statvfs(folder)
    return StatFS(st.f_frsize or st.f_bsize, st.f_blocks, st.f_bfree, st.f_bavail,
                  st.f_files, st.f_ffree, 255)


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def child_path(parent: str, name: str) -> str:
    """``name`` inside ``parent`` (a path as :func:`joined` spells it; "" is the top)."""
    return name if not parent else f"{parent}/{name}"


def joined(path: str) -> str:
    """``path`` with its empty segments dropped and no leading slash: the one spelling of
    a path the mounts key their caches (and kept_attrs.py its rows) by."""
    return "/".join(split(path))


__all__ = ["Attr", "Capabilities", "Mount", "Reader", "Writer", "StatFS", "FILE", "DIR",
           "SYMLINK", "XATTR_PREFIX", "statfs_of", "split", "joined", "child_path"]
