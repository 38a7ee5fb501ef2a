"""The kernel side: pyfuse3 requests -> one VFS call each, McpfsError -> FUSEError.

This is the only module that imports pyfuse3 and the only place errors become errnos for
the kernel (``_errors``): a McpfsError reports its ``errno``, an OSError its own, anything
else is logged with its traceback and reported as EIO. Names arrive as bytes and are decoded
with ``os.fsdecode`` (surrogateescape), so any byte string round-trips.

Lifecycle: :func:`mount` (``pyfuse3.init``: the mount syscall; blocking, short) ->
:func:`serve` (``pyfuse3.main`` in the daemon's nursery; returns when the file system is
unmounted from outside) -> :func:`close` (``pyfuse3.close``: lazy unmount if still mounted).

Concurrency: pyfuse3 runs each request in its own trio task on the daemon's trio thread;
all state lives in vfs/ (see its notes).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat as stat_mod
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from . import fuse_copy_range, fuse_noflush, fuse_slots
from .errors import McpfsError
from .stats import Stats
from .vfs import VFS, Entry
from .vfs.inodes import parent_of

log = logging.getLogger("mcpfs.fuse")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
MAX_TASKS = 64  # concurrent requests pyfuse3 may run (each a trio task)
BLOCK = 512  # st_blocks unit
# st_blksize: cp, cat and dd size their buffers by it, and the kernel passes a write of up
# to max_write (1 MiB, libfuse's default) through as one request: 1 MiB writes take 1024
# requests per GiB instead of 8192 (cp of 1 GiB into /mfs: 3.1 s -> 1.3 s here)
IO_BLOCK = 1024 * 1024
READ_AHEAD_KIB = 1024  # the kernel's read-ahead for the mount (tune_read_ahead)


# ops whose first argument is a file or directory handle
HANDLE_OPS = frozenset({"read", "write", "flush", "fsync", "release", "copy_file_range",
                        "readdir", "releasedir"})
# Errnos that are answers, not failures: a lookup of a missing name, a missing xattr, an
# xattr namespace we do not have.
EXPECTED_ERRNOS = frozenset({errno.ENOENT, errno.ENODATA, errno.ENOTSUP})


def _errors(fn: F) -> F:
    """Map errors to FUSEError (see the module docstring) and record the op in the stats."""
    op = fn.__name__.lstrip("_")  # ``_getxattr`` is recorded as ``getxattr``

    @functools.wraps(fn)
    async def wrapper(self: FuseOps, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        failed = False
        result = None
        mount = self._mount_name(op, args) if self.stats is not None else ""
        try:
            result = await fn(self, *args, **kwargs)
            return result
        except pyfuse3.FUSEError as exc:
            failed = exc.errno not in EXPECTED_ERRNOS
            raise
        except McpfsError as exc:
            failed = exc.errno not in EXPECTED_ERRNOS
            if exc.errno == errno.EIO:
                log.warning("%s: %s", op, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            failed = True
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            failed = True
            log.exception("%s failed", op)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            if self.stats is not None:
                nbytes = len(result) if op == "read" and result else (
                    result if op in ("write", "copy_file_range") and isinstance(result, int)
                    else 0)
                self.stats.record(mount, op, nbytes, time.perf_counter() - started, failed)
    return wrapper  # type: ignore[return-value]


class FuseOps(pyfuse3.Operations):
    enable_writeback_cache = False
    supports_dot_lookup = True

    def __init__(self, vfs: VFS, stats: Stats | None = None) -> None:
        super().__init__()
        self.vfs = vfs
        self.stats = stats
        self.uid = os.getuid()
        self.gid = os.getgid()

    def _mount_name(self, op: str, args: tuple) -> str:
        """The subtree an op touched ("root" for the top directory), for the stats."""
        try:
            if op == "statfs":
                return "root"
            node = self.vfs.handles.get(args[0]).node if op in HANDLE_OPS \
                else self.vfs.inodes.get(args[0])
            return node.path.split("/", 1)[0] or "root"
        except Exception:  # noqa: BLE001 - a released handle or forgotten inode
            return "unknown"

    def _attrs(self, entry: Entry) -> pyfuse3.EntryAttributes:
        out = pyfuse3.EntryAttributes()
        attr = entry.attr
        out.st_ino = entry.ino
        out.generation = 0
        out.entry_timeout = entry.entry_timeout
        out.attr_timeout = entry.attr_timeout
        out.st_mode = entry.mode
        out.st_nlink = 2 if stat_mod.S_ISDIR(entry.mode) else 1
        out.st_uid = self.uid
        out.st_gid = self.gid
        out.st_rdev = 0
        out.st_size = attr.size
        out.st_blksize = IO_BLOCK
        out.st_blocks = (attr.size + BLOCK - 1) // BLOCK
        out.st_atime_ns = out.st_mtime_ns = out.st_ctime_ns = attr.mtime_ns
        return out

    # ---------------------------------------------------------------- names
    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None):
        text = os.fsdecode(name)
        if text == ".":
            return self._attrs(await self.vfs.getattr(parent_inode))
        if text == "..":
            path = parent_of(self.vfs.inodes.get(parent_inode).path)
            node = self.vfs.inodes.remember(path)
            return self._attrs(await self.vfs.getattr(node.ino))
        return self._attrs(await self.vfs.lookup(parent_inode, text))

    async def forget(self, inode_list) -> None:
        for ino, n in inode_list:
            self.vfs.forget(ino, n)

    @_errors
    async def getattr(self, inode: int, ctx: Any = None):
        return self._attrs(await self.vfs.getattr(inode))

    @_errors
    async def setattr(self, inode: int, attr, fields, fh, ctx):
        size = attr.st_size if fields.update_size else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None  # *_NOW: pyfuse3's now
        perm = attr.st_mode & 0o777 if fields.update_mode else None  # no set-id/sticky bits
        other = any((fields.update_uid, fields.update_gid, fields.update_atime,
                     getattr(fields, "update_ctime", False)))
        return self._attrs(await self.vfs.setattr(inode, size, fh, other, mtime, perm))

    @_errors
    async def readlink(self, inode: int, ctx):
        return os.fsencode(await self.vfs.readlink(inode))

    # ---------------------------------------------------------------- directories
    @_errors
    async def opendir(self, inode: int, ctx):
        return await self.vfs.opendir(inode)

    @_errors
    async def readdir(self, fh: int, start_id: int, token) -> None:
        for next_id, name, path, attr in self.vfs.readdir(fh, start_id):
            entry = self.vfs.remember(path, attr)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(entry), next_id):
                self.vfs.forget(entry.ino, 1)
                break

    @_errors
    async def releasedir(self, fh: int) -> None:
        self.vfs.releasedir(fh)

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx):
        return self._attrs(await self.vfs.mkdir(parent_inode, os.fsdecode(name)))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx) -> None:
        await self.vfs.rmdir(parent_inode, os.fsdecode(name))

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx) -> None:
        await self.vfs.unlink(parent_inode, os.fsdecode(name))

    @_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags,
                     ctx) -> None:
        await self.vfs.rename(parent_inode_old, os.fsdecode(name_old), parent_inode_new,
                              os.fsdecode(name_new), flags)

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx):
        return self._attrs(await self.vfs.symlink(parent_inode, os.fsdecode(name),
                                                  os.fsdecode(target)))

    @_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise McpfsError("hard links are not supported", errno=errno.EPERM)

    # ---------------------------------------------------------------- files
    def _info(self, fh: int, handle) -> pyfuse3.FileInfo:
        # keep_cache and direct_io: VFS.open decided (see write_only_direct there)
        return pyfuse3.FileInfo(fh=fh, keep_cache=handle.keep_cache,
                                direct_io=handle.direct_io)

    @_errors
    async def open(self, inode: int, flags: int, ctx):
        fh, handle = await self.vfs.open(inode, flags, getattr(ctx, "pid", None))
        return self._info(fh, handle)

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx):
        fh, entry = await self.vfs.create(parent_inode, os.fsdecode(name), flags,
                                          getattr(ctx, "pid", None))
        return self._info(fh, self.vfs.handles.get(fh)), self._attrs(entry)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.vfs.read(fh, off, size)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.vfs.write(fh, off, buf)

    @_errors
    async def copy_file_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int,
                              length: int, flags: int) -> int:
        """Called through fuse_copy_range.py (pyfuse3 has no such handler)."""
        if flags:
            raise McpfsError("copy_file_range flags", errno=errno.EINVAL)
        return await self.vfs.copy_range(fh_in, off_in, fh_out, off_out, length)

    @_errors
    async def flush(self, fh: int) -> None:
        await self.vfs.flush(fh)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.vfs.fsync(fh)

    @_errors
    async def release(self, fh: int) -> None:
        await self.vfs.release(fh)

    # ---------------------------------------------------------------- xattrs, statfs
    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx):
        # Only user.* names exist here. Any other namespace (security.selinux,
        # system.posix_acl_access, trusted.*) is not supported: ENOTSUP, without a VFS call
        # (counted in the stats). ls -l asks every entry for the first two, and coreutils
        # stops asking for the rest of the device once it sees ENOTSUP (ENODATA would mean
        # "supported, none here": two requests per entry, 20,000 for ls -l of 10,000
        # entries, 0.33 s). ENOSYS would stop the kernel asking, but for user.* too.
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        return await self.vfs.getxattr(inode, os.fsdecode(name))

    @_errors
    async def listxattr(self, inode: int, ctx):
        return [os.fsencode(n) for n in await self.vfs.listxattr(inode)]

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx):
        raise McpfsError("extended attributes are read-only", errno=errno.ENOTSUP)

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx):
        raise McpfsError("extended attributes are read-only", errno=errno.ENOTSUP)

    @_errors
    async def statfs(self, ctx):
        st = await self.vfs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = st.block_size
        out.f_blocks, out.f_bfree, out.f_bavail = st.blocks, st.blocks_free, st.blocks_avail
        out.f_files, out.f_ffree, out.f_favail = st.files, st.files_free, st.files_free
        out.f_namemax = st.name_max
        return out


def mount(ops: FuseOps, mountpoint: str, debug: bool = False) -> None:
    """The mount syscall (raises McpfsError with a one-line reason when it fails)."""
    options = set(pyfuse3.default_options)
    options |= {"fsname=mcpfs", "subtype=mcpfs"}
    if debug:
        options.add("debug")
    fuse_slots.prepare()  # the slow part, before the mount is visible
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as exc:
        raise McpfsError(f"cannot mount {mountpoint}: {exc}") from None
    try:
        # before the first request is served
        fuse_copy_range.install(ops.copy_file_range)
        fuse_noflush.install()
    except BaseException:  # e.g. Ctrl-C right now: never leave a mount nobody serves
        pyfuse3.close(unmount=True)
        raise


async def serve() -> None:
    """Answer kernel requests until the file system is unmounted (or we are cancelled)."""
    async with fuse_copy_range.serving():
        await pyfuse3.main(min_tasks=1, max_tasks=MAX_TASKS)


def tune_read_ahead(mountpoint: str, kib: int = READ_AHEAD_KIB) -> bool:
    """Raise the kernel's read-ahead for this mount to ``kib`` (its backing device's
    ``read_ahead_kb``; FUSE starts at 128 KiB), so a sequential read arrives in 1 MiB
    requests (libfuse's max_pages), a quarter as many as before. Only after INIT is
    answered (the kernel lowers the value to what INIT agreed). Best effort: needs write
    access to /sys (root); False, logged at debug level, otherwise. Blocking (a worker
    thread; it reads /proc/self/mountinfo, which sends no request to us)."""
    path = os.path.abspath(mountpoint)  # the parent resolved (the mount itself is ours)
    target = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    for ch in "\\ \t\n":  # mountinfo writes these as octal escapes
        target = target.replace(ch, f"\\{ord(ch):03o}")
    try:
        with open("/proc/self/mountinfo") as fh:
            devs = [fields[2] for fields in map(str.split, fh) if fields[4] == target]
        if not devs:
            raise OSError(errno.ENOENT, "not in mountinfo")
        with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w") as fh:
            fh.write(str(kib))
    except OSError as exc:
        log.debug("read-ahead of %s left as it is (%s)", mountpoint, exc)
        return False
    return True


def close(unmount: bool = True) -> None:
    pyfuse3.close(unmount=unmount)


__all__ = ["FuseOps", "mount", "serve", "close", "tune_read_ahead"]
