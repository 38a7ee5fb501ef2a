"""A minimal pyfuse3 passthrough file system: the "FUSE in Python" reference for bench/mount.py.

Modelled on pyfuse3's ``examples/passthroughfs.py`` (our own code): every request is answered
by the matching ``os`` call on the backing directory, synchronously on the trio thread (as the
example does: no worker threads, no caches of our own). Inodes are the backing inodes; the
inode -> path map and lookup counts are kept as in the example. Entry/attr timeouts and file
options are pyfuse3's defaults (as in the example), mount options ``pyfuse3.default_options``
(as mcpfs's daemon uses). Reads are ``os.pread`` on a fd opened per ``open``; writes
``os.pwrite``.

``--no-keep-cache`` opens files with ``keep_cache=False`` (the kernel drops the file's page
cache at each open, so every read reaches the process, as mcpfs's /mfs files do); the example
(and pyfuse3's ``FileInfo`` default) keeps it.

Run as a child process: ``python -m bench.passthrough SOURCE_DIR MOUNTPOINT [--no-keep-cache]``;
it prints
``ready`` once mounted and serves until unmounted (``fusermount3 -u``) or SIGTERM/SIGINT.
:class:`PassthroughProcess` is the parent's handle (start, wait until live, unmount, kill).
"""

from __future__ import annotations

import errno
import os
import signal
import stat as stat_mod
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

# ---------------------------------------------------------------- parent side
READY_TIMEOUT = 20.0


class PassthroughProcess:
    """``with PassthroughProcess(source, mountpoint, log) as pt: ...`` mounts and unmounts."""

    def __init__(self, source: Path, mountpoint: Path, log_path: Path,
                 keep_cache: bool = True) -> None:
        self.source = source
        self.mountpoint = mountpoint
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.passthrough", str(source), str(mountpoint)]
            + ([] if keep_cache else ["--no-keep-cache"]),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
            text=True)
        assert self.proc.stdout
        line = self.proc.stdout.readline().strip()
        deadline = time.monotonic() + READY_TIMEOUT
        while line == "ready" and not os.path.ismount(mountpoint):
            if time.monotonic() > deadline:
                line = "timeout"
            time.sleep(0.01)
        if line != "ready":
            self.close()
            raise RuntimeError(f"passthrough did not mount ({line or 'child exited'}; see "
                               f"{log_path})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if os.path.ismount(self.mountpoint):
            if subprocess.run(["fusermount3", "-u", str(self.mountpoint)],
                              capture_output=True).returncode:
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> PassthroughProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- child side
def _make_ops():
    import pyfuse3
    from pyfuse3 import FUSEError

    class Passthrough(pyfuse3.Operations):
        enable_writeback_cache = False

        def __init__(self, source: str, keep_cache: bool = True) -> None:
            super().__init__()
            self._keep_cache = keep_cache
            self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
            self._lookups: dict[int, int] = defaultdict(int)
            self._fds: dict[int, int] = {}  # fh (= fd) -> inode
            self._dirs: dict[int, tuple[str, list]] = {}  # dir fh -> (path, [(name, stat)])

        # -- helpers
        def _path(self, inode: int) -> str:
            try:
                return self._paths[inode]
            except KeyError:
                raise FUSEError(errno.ENOENT) from None

        def _remember(self, path: str, st: os.stat_result) -> None:
            self._paths[st.st_ino] = path
            self._lookups[st.st_ino] += 1

        def _attrs(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
            out = pyfuse3.EntryAttributes()
            for name in ("st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev",
                         "st_size", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
                setattr(out, name, getattr(st, name))
            out.generation = 0
            out.st_blksize = 512
            out.st_blocks = (st.st_size + 511) // 512
            return out

        def _stat(self, path: str = "", fd: int | None = None) -> os.stat_result:
            try:
                return os.fstat(fd) if fd is not None else os.lstat(path)
            except OSError as exc:
                raise FUSEError(exc.errno) from None

        # -- names
        async def lookup(self, parent_inode, name, ctx=None):
            path = os.path.join(self._path(parent_inode), os.fsdecode(name))
            st = self._stat(path)
            if name not in (b".", b".."):
                self._remember(path, st)
            return self._attrs(st)

        async def forget(self, inode_list):
            for inode, n in inode_list:
                left = self._lookups.get(inode, 0) - n
                if left > 0:
                    self._lookups[inode] = left
                else:
                    self._lookups.pop(inode, None)
                    if inode != pyfuse3.ROOT_INODE and inode not in self._fds.values():
                        self._paths.pop(inode, None)

        async def getattr(self, inode, ctx=None):
            return self._attrs(self._stat(self._path(inode)))

        async def setattr(self, inode, attr, fields, fh, ctx):
            path = self._path(inode)
            try:
                if fields.update_size:
                    if fh is not None:
                        os.ftruncate(fh, attr.st_size)
                    else:
                        os.truncate(path, attr.st_size)
                if fields.update_mode:
                    os.chmod(path, stat_mod.S_IMODE(attr.st_mode))
                if fields.update_atime or fields.update_mtime:
                    st = os.lstat(path)
                    os.utime(path, None, follow_symlinks=False, ns=(
                        attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                        attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns))
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            return await self.getattr(inode)

        async def readlink(self, inode, ctx):
            try:
                return os.fsencode(os.readlink(self._path(inode)))
            except OSError as exc:
                raise FUSEError(exc.errno) from None

        # -- directories: read completely at opendir (the example re-reads it on every
        # readdir call, quadratic for big directories), served from that snapshot
        async def opendir(self, inode, ctx):
            path = self._path(inode)
            try:
                names = sorted(os.listdir(path))
                entries = [(n, os.lstat(os.path.join(path, n))) for n in names]
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            fh = self._next_dir = getattr(self, "_next_dir", 0) + 1
            self._dirs[fh] = (path, entries)
            return fh

        async def readdir(self, fh, start_id, token):
            path, entries = self._dirs[fh]
            for i in range(start_id, len(entries)):
                name, st = entries[i]
                if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(st), i + 1):
                    break
                self._remember(os.path.join(path, name), st)

        async def releasedir(self, fh):
            self._dirs.pop(fh, None)

        async def mkdir(self, parent_inode, name, mode, ctx):
            path = os.path.join(self._path(parent_inode), os.fsdecode(name))
            try:
                os.mkdir(path, mode & ~ctx.umask)
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            st = self._stat(path)
            self._remember(path, st)
            return self._attrs(st)

        async def rmdir(self, parent_inode, name, ctx):
            try:
                os.rmdir(os.path.join(self._path(parent_inode), os.fsdecode(name)))
            except OSError as exc:
                raise FUSEError(exc.errno) from None

        async def unlink(self, parent_inode, name, ctx):
            try:
                os.unlink(os.path.join(self._path(parent_inode), os.fsdecode(name)))
            except OSError as exc:
                raise FUSEError(exc.errno) from None

        async def rename(self, parent_old, name_old, parent_new, name_new, flags, ctx):
            if flags:
                raise FUSEError(errno.EINVAL)
            old = os.path.join(self._path(parent_old), os.fsdecode(name_old))
            new = os.path.join(self._path(parent_new), os.fsdecode(name_new))
            try:
                st = os.lstat(old)
                os.rename(old, new)
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            if st.st_ino in self._paths:
                self._paths[st.st_ino] = new

        async def symlink(self, parent_inode, name, target, ctx):
            path = os.path.join(self._path(parent_inode), os.fsdecode(name))
            try:
                os.symlink(os.fsdecode(target), path)
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            st = self._stat(path)
            self._remember(path, st)
            return self._attrs(st)

        # -- files
        async def open(self, inode, flags, ctx):
            try:
                fd = os.open(self._path(inode), flags & ~os.O_CREAT)
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            self._fds[fd] = inode
            return pyfuse3.FileInfo(fh=fd, keep_cache=self._keep_cache)

        async def create(self, parent_inode, name, mode, flags, ctx):
            path = os.path.join(self._path(parent_inode), os.fsdecode(name))
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, mode & ~ctx.umask)
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            st = self._stat(fd=fd)
            self._remember(path, st)
            self._fds[fd] = st.st_ino
            return pyfuse3.FileInfo(fh=fd, keep_cache=self._keep_cache), self._attrs(st)

        async def read(self, fh, off, size):
            return os.pread(fh, size, off)

        async def write(self, fh, off, buf):
            return os.pwrite(fh, buf, off)

        async def flush(self, fh):
            pass

        async def fsync(self, fh, datasync):
            (os.fdatasync if datasync else os.fsync)(fh)

        async def release(self, fh):
            self._fds.pop(fh, None)
            os.close(fh)

        async def statfs(self, ctx):
            st = os.statvfs(self._paths[pyfuse3.ROOT_INODE])
            out = pyfuse3.StatvfsData()
            for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                         "f_ffree", "f_favail", "f_namemax"):
                setattr(out, name, getattr(st, name))
            return out

    return pyfuse3, Passthrough


def main() -> int:
    import trio
    source, mountpoint = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    pyfuse3, Passthrough = _make_ops()
    options = set(pyfuse3.default_options) | {"fsname=passthrough", "subtype=passthrough"}
    pyfuse3.init(Passthrough(source, "--no-keep-cache" not in sys.argv[3:]), mountpoint, options)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

            nursery.start_soon(on_signal)
            print("ready", flush=True)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    unmounted = False
    try:
        trio.run(serve)
        unmounted = not os.path.ismount(mountpoint)
    finally:
        pyfuse3.close(unmount=not unmounted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
