"""/mfs on a real mount: cp, cat, ls -l, mkdir -p, rm -r, mv, truncate, append, overwrite,
random writes, symlinks, touch, xattrs, mmap; the listing equals `mcpfs files ls`."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
import shutil
import stat
import time

import pytest

from mcpfs.backends.ipfs.node import Repo
from mcpfs.backends.ipfs.pins import walk_dag
from mcpfs.config import paths
from mcpfs.vfs import page_cache
from tests.conftest import pattern_bytes

from .conftest import mcpfs, mount_ops, run


def test_cp_cat_ls_and_files_ls(mnt, tmp_path):
    src = tmp_path / "src.bin"
    data = pattern_bytes(3_000_000, 11)
    src.write_bytes(data)
    m = mnt / "mfs"
    run("mkdir", "-p", str(m / "a/b/c"))
    run("cp", str(src), str(m / "a/b/c/file.bin"))
    run("cp", str(src), str(m / "top.bin"))
    assert (m / "a/b/c/file.bin").read_bytes() == data
    assert run("cmp", str(src), str(m / "top.bin")).returncode == 0
    long = run("ls", "-l", str(m)).stdout
    assert f" {len(data)} " in long and "top.bin" in long
    assert sorted(os.listdir(m)) == sorted(mcpfs("files", "ls", "/").stdout.split())
    assert sorted(os.listdir(m / "a/b/c")) == mcpfs("files", "ls", "/a/b/c").stdout.split()
    cid = run("getfattr", "--only-values", "-n", "user.mcpfs.cid", str(m / "top.bin")).stdout
    assert cid == mcpfs("add", "-n", "-Q", str(src)).stdout.strip()
    assert os.getxattr(m / "top.bin", "user.mcpfs.size") == str(len(data)).encode()
    assert os.getxattr(m / "top.bin", "user.mcpfs.backend") == b"mfs"
    with open(m / "top.bin", "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[2_000_000:2_000_010] == data[2_000_000:2_000_010]


def test_rm_r_mv_and_exdev(mnt):
    m = mnt / "mfs"
    run("mkdir", "-p", str(m / "x/y"))
    (m / "x/y/f").write_bytes(b"f")
    (m / "x/g").write_bytes(b"g")
    run("mv", str(m / "x/g"), str(m / "g2"))
    run("mv", str(m / "x"), str(m / "x2"))
    assert sorted(os.listdir(m)) == ["g2", "x2"]
    assert (m / "x2/y/f").read_bytes() == b"f"
    with pytest.raises(OSError) as info:
        os.rename(m / "g2", mnt / "ipfs" / "g2")
    assert info.value.errno == errno.EXDEV
    run("rm", "-r", str(m / "x2"))
    run("rm", str(m / "g2"))
    assert os.listdir(m) == [] and mcpfs("files", "ls", "/").stdout == ""


def test_truncate_append_overwrite_random_writes(mnt):
    f = mnt / "mfs" / "f.txt"
    run("sh", "-c", f"echo hello > {f} && echo world >> {f}")
    assert f.read_text() == "hello\nworld\n"
    run("truncate", "-s", "5", str(f))
    assert f.read_bytes() == b"hello"
    run("truncate", "-s", "8", str(f))
    assert f.read_bytes() == b"hello\0\0\0"
    with open(f, "r+b") as fh:  # overwrite in place
        fh.seek(1)
        fh.write(b"ELL")
    assert f.read_bytes() == b"hELLo\0\0\0"
    model = bytearray(pattern_bytes(1_000_000, 4))
    (mnt / "mfs" / "r.bin").write_bytes(model)
    rng = random.Random(7)
    fd = os.open(mnt / "mfs" / "r.bin", os.O_RDWR)
    try:
        for _ in range(50):
            off = rng.randrange(0, 1_100_000)
            piece = os.urandom(rng.randrange(1, 70_000))
            os.pwrite(fd, piece, off)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + len(piece)] = piece
        assert os.pread(fd, len(model) + 10, 0) == bytes(model)
    finally:
        os.close(fd)
    assert (mnt / "mfs" / "r.bin").read_bytes() == bytes(model)
    assert os.stat(mnt / "mfs" / "r.bin").st_size == len(model)


def test_symlinks_and_touch(mnt):
    m = mnt / "mfs"
    run("touch", str(m / "t"))
    assert os.stat(m / "t").st_size == 0
    run("touch", str(m / "t"))  # existing: utimensat is accepted
    (m / "target").write_text("pointed at\n")
    run("ln", "-s", "target", str(m / "link"))
    assert os.readlink(m / "link") == "target"
    assert run("cat", str(m / "link")).stdout == "pointed at\n"
    assert run("stat", "-c", "%F", str(m / "link")).stdout.strip() == "symbolic link"
    run("rm", str(m / "link"))
    assert sorted(os.listdir(m)) == ["t", "target"]


def _committed_names(mnt) -> list[str]:
    """The names in MFS's last committed root: the root log's last record, as a restart
    would load it, listed through /ipfs (no fork: see the next test; and not by opening
    the MFS, which another process may not do while the daemon runs: mfs_lock)."""
    from mcpfs.backends.ipfs.mfs_root import RootFiles
    root, _ = RootFiles(paths().repo_dir / "mfs-root").load(lambda cid: True)
    return sorted(os.listdir(mnt / "ipfs" / str(root))) if root is not None else []


def test_pending_write_visible_with_local_size(mnt):
    path = mnt / "mfs" / "pending.bin"
    with open(path, "wb") as fh:
        fh.write(b"x" * 5000)
        fh.flush()
        assert os.stat(path).st_size == 5000
        assert "pending.bin" in os.listdir(mnt / "mfs")
        assert os.getxattr(path, "user.mcpfs.size") == b"5000"
        assert _committed_names(mnt) == []  # not committed before close
    assert _committed_names(mnt) == ["pending.bin"]
    assert mcpfs("files", "read", "/pending.bin").stdout == "x" * 5000


def test_fork_exec_commits_an_open_file(mnt):
    """Deviation (docs/SEMANTICS.md): every close() of a descriptor flushes, including the
    implicit close of an inherited descriptor at exec, so the content so far is committed."""
    path = mnt / "mfs" / "forked.txt"
    with open(path, "w") as fh:
        fh.write("before fork\n")
        fh.flush()
        assert _committed_names(mnt) == []
        run("true")  # fork + exec: the child's copy of the descriptor is closed
        assert _committed_names(mnt) == ["forked.txt"]
        fh.write("after\n")
    assert path.read_text() == "before fork\nafter\n"
    assert mcpfs("files", "read", "/forked.txt").stdout == "before fork\nafter\n"


def test_python_file_io(mnt):
    p = mnt / "mfs" / "py.txt"
    with open(p, "w") as fh:
        for i in range(1000):
            print(i, file=fh)
    with open(p) as fh:
        assert fh.read().splitlines() == [str(i) for i in range(1000)]
    with open(p, "a") as fh:
        fh.write("end\n")
    assert p.read_text().endswith("999\nend\n")
    with pytest.raises(IsADirectoryError):
        open(mnt / "mfs", "w")
    with pytest.raises(FileNotFoundError):
        open(mnt / "mfs" / "no" / "such", "w")


def test_cp_of_a_large_file_is_imported_as_it_arrives(daemon, tmp_path):
    """cp writes front to back: the DAG is built while the bytes arrive and linked at
    close (no re-import of the spool); the CID equals `mcpfs add -n`."""
    mnt = daemon.start({"MCPFS_LOG": "DEBUG"})
    src = tmp_path / "large.bin"
    data = pattern_bytes(5_000_000, 17)
    src.write_bytes(data)
    run("cp", str(src), str(mnt / "mfs" / "large.bin"))
    cid = os.getxattr(mnt / "mfs" / "large.bin", "user.mcpfs.cid").decode()
    assert cid == mcpfs("add", "-n", "-Q", str(src)).stdout.strip()
    assert "linked the streamed import of /large.bin" in daemon.log_text()
    assert (mnt / "mfs" / "large.bin").read_bytes() == data
    with open(mnt / "mfs" / "large.bin", "r+b") as fh:  # random write: spool import
        fh.seek(4_000_000)
        fh.write(b"patched")
    patched = data[:4_000_000] + b"patched" + data[4_000_007:]
    assert (mnt / "mfs" / "large.bin").read_bytes() == patched
    src.write_bytes(patched)
    assert os.getxattr(mnt / "mfs" / "large.bin", "user.mcpfs.cid").decode() == \
        mcpfs("add", "-n", "-Q", str(src)).stdout.strip()


def test_many_small_files_committed_without_fsync_survive_kill_9(daemon):
    """A commit records its root without fsync (the flusher syncs every ~1 s): a kill -9
    right after close() keeps every closed file; a clean unmount leaves the synced root
    file naming the last root."""
    mnt = daemon.start()
    d = mnt / "mfs" / "many"
    d.mkdir()
    for i in range(200):
        (d / f"f{i:03d}").write_bytes(b"%d" % i)
    daemon.kill9()
    repo = Repo(paths().repo_dir)
    names = [e["Name"] for e in repo.mfs.tree.ls(repo.mfs.root(), "/many")]
    assert names == [f"f{i:03d}" for i in range(200)]
    assert len(list(walk_dag(repo.store, repo.mfs.root()))) == 202  # root, dir, 200 files
    mnt = daemon.start()
    assert len(os.listdir(mnt / "mfs" / "many")) == 200
    (mnt / "mfs" / "last").write_bytes(b"last")
    daemon.stop()  # unmount: the flusher's final sync
    repo = Repo(paths().repo_dir)
    synced = repo.mfs.records.read_synced()
    assert synced == repo.mfs.root() and repo.mfs.tree.lookup(synced, ["last"]) is not None
    assert not repo.mfs.records.log_path.exists()


def test_cp_into_mfs_writes_1_mib_requests(mnt, tmp_path):
    """st_blksize is 1 MiB, so cp's buffer is, and the kernel passes each buffer through as
    one write request (8 per 8 MiB, not 64 of 128 KiB)."""
    src = tmp_path / "eight.bin"
    data = pattern_bytes(8 << 20, 12)
    src.write_bytes(data)
    before = mount_ops()
    run("cp", str(src), str(mnt / "mfs" / "eight.bin"))
    writes = mount_ops()[("mfs", "write")] - before.get(("mfs", "write"), 0)
    assert writes <= 9, writes
    assert os.stat(mnt / "mfs" / "eight.bin").st_blksize == 1 << 20
    assert (mnt / "mfs" / "eight.bin").read_bytes() == data


@pytest.mark.skipif(os.geteuid() != 0, reason="/sys/class/bdi is root's to write")
def test_the_mount_reads_ahead_in_1_mib_requests(mnt, tmp_path):
    """The daemon raises the kernel's read-ahead for its mount (root here), so a cold
    sequential read arrives in 1 MiB requests."""
    with open("/proc/self/mountinfo") as fh:
        dev = [line.split()[2] for line in fh if line.split()[4] == str(mnt)][-1]
    with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as fh:
        assert fh.read().strip() == "1024"
    data = pattern_bytes(16 << 20, 13)
    src = tmp_path / "sixteen.bin"
    src.write_bytes(data)
    mcpfs("files", "write", "--create", "/sixteen.bin", str(src))
    before = mount_ops()
    with open(mnt / "mfs" / "sixteen.bin", "rb") as fh:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert fh.read() == data
    reads = mount_ops()[("mfs", "read")] - before.get(("mfs", "read"), 0)
    assert reads <= 20, reads  # 16 of 1 MiB (64 of 256 KiB before)


def test_ls_l_asks_for_security_labels_and_acls_once_per_device(mnt):
    """security.selinux and system.posix_acl_access are ENOTSUP (not ENODATA), so ls -l
    stops asking after the first entry: 2 requests for 200 entries instead of 400."""
    d = mnt / "mfs" / "many"
    d.mkdir()
    for i in range(200):
        (d / f"f{i:03}").write_bytes(b"x")
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as info:
            os.getxattr(d / "f000", name)
        assert info.value.errno == errno.ENOTSUP
    assert os.getxattr(d / "f000", "user.mcpfs.size") == b"1"
    before = mount_ops()
    listing = run("ls", "-l", str(d)).stdout
    asked = mount_ops().get(("mfs", "getxattr"), 0) - before.get(("mfs", "getxattr"), 0)
    assert listing.count(" f") == 200 and "?" not in listing.split("\n", 2)[1]
    assert asked <= 4, asked


@pytest.mark.skipif(tuple(map(int, os.uname().release.split(".")[:2])) < (5, 19),
                    reason="FOPEN_NOFLUSH needs Linux 5.19")
def test_a_read_only_close_sends_no_flush_and_a_writing_one_does(mnt):
    """fuse_noflush.py: read-only opens are answered with FOPEN_NOFLUSH, so their close()
    does not wait for a FLUSH round trip; a writer's close still flushes, which is where
    its commit and its errors happen."""
    path = mnt / "mfs" / "noflush.txt"
    path.write_bytes(b"hello")
    before = mount_ops()
    for _ in range(5):
        fd = os.open(path, os.O_RDONLY)
        assert os.read(fd, 5) == b"hello"
        os.close(fd)
    after = mount_ops()
    assert after[("mfs", "open")] - before.get(("mfs", "open"), 0) == 5
    assert after.get(("mfs", "flush"), 0) == before.get(("mfs", "flush"), 0)
    fd = os.open(path, os.O_RDWR)  # writable, even if unwritten: flushed
    os.close(fd)
    with open(path, "ab") as fh:
        fh.write(b" world")
    assert mount_ops()[("mfs", "flush")] - after.get(("mfs", "flush"), 0) == 2
    assert path.read_bytes() == b"hello world"


def _cached_pages(fd: int, size: int) -> int:
    """How many of the first ``size`` bytes' pages of ``fd``'s file are in the page cache
    (mincore of a shared read-only map; nothing is read)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) == 0
        return sum(v & 1 for v in vec)
    finally:
        libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))


@pytest.mark.skipif(page_cache.KERNEL < page_cache.DIRECT_WRITES_SINCE,
                    reason="direct_io for write-only opens needs Linux 6.6")
def test_write_only_descriptors_bypass_the_page_cache(mnt):
    """A write-only open is direct_io (vfs/page_cache.py): its writes reach the daemon
    without a copy in the page cache, and a reader of the pending bytes reads them anew; a
    reader opened before the writer keeps reading the content it opened. A read-write
    descriptor's writes stay cached (mmap needs it)."""
    path = mnt / "mfs" / "direct.bin"
    old, new = pattern_bytes(1 << 20, 21), pattern_bytes(256 << 10, 22)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # a create: direct_io too
    try:
        with open(path, "rb", buffering=0) as reader:
            assert os.pwrite(fd, old, 0) == len(old)
            assert _cached_pages(reader.fileno(), len(old)) == 0
    finally:
        os.close(fd)
    fd = os.open(path, os.O_WRONLY)
    try:
        with open(path, "rb", buffering=0) as reader:  # reads the pending bytes
            assert reader.read(len(new)) == old[:len(new)]
            assert os.pwrite(fd, new, 0) == len(new)
            assert _cached_pages(reader.fileno(), len(new)) == 0
            assert os.pread(reader.fileno(), len(new), 0) == new
    finally:
        os.close(fd)
    with open(path, "rb", buffering=0) as reader:  # opened before the writer
        assert reader.read() == new + old[len(new):]
        fd = os.open(path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, old[:len(new)], 0) == len(new)
            assert os.pread(reader.fileno(), len(new), 0) == new
        finally:
            os.close(fd)
        assert os.pread(reader.fileno(), len(new), 0) == new
    assert path.read_bytes() == old
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, new[:4 << 12], 0) == 4 << 12
        assert _cached_pages(fd, 4 << 12) == 4
    finally:
        os.close(fd)
    assert path.read_bytes()[:4 << 12] == new[:4 << 12]


@pytest.mark.skipif(shutil.which("rsync") is None,
                    reason="rsync not installed (make test installs it)")
def test_modes_and_mtimes_stick_so_rsync_skips_what_it_copied(daemon, tmp_path):
    """mounts/kept_attrs.py: rsync -a, cp -p and chmod +x keep their modes and mtimes, across
    a restart, so a second rsync copies nothing; the CIDs stay those of the bytes."""
    old = 1_600_000_000_123_456_789
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    script = src / "d" / "run.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    data = src / "data.bin"
    data.write_bytes(pattern_bytes(300_000, 5))
    data.chmod(0o600)
    os.utime(data, ns=(old, old))
    daemon.start()
    m = daemon.mnt / "mfs"

    def rsync() -> str:
        return run("rsync", "-a", "--stats", f"{src}/", f"{m}/r/").stdout
    assert "Number of regular files transferred: 2" in rsync()
    got = os.stat(m / "r" / "data.bin")
    assert (got.st_mtime_ns, stat.S_IMODE(got.st_mode)) == (old, 0o600)
    assert run(str(m / "r" / "d" / "run.sh")).stdout == "ran\n"
    assert "Number of regular files transferred: 0" in rsync()
    cid = os.getxattr(m / "r" / "data.bin", "user.mcpfs.cid").decode()
    assert cid == mcpfs("add", "-n", "-Q", str(data)).stdout.strip()
    run("cp", "-p", str(data), str(m / "p.bin"))
    run("chmod", "+x", str(m / "p.bin"))
    daemon.stop()
    daemon.start()
    assert "Number of regular files transferred: 0" in rsync()
    got = os.stat(m / "p.bin")
    assert (got.st_mtime_ns, stat.S_IMODE(got.st_mode)) == (old, 0o711)
    assert run(str(m / "r" / "d" / "run.sh")).stdout == "ran\n"


def test_mcpfs_files_mv_and_rm_carry_the_kept_modes_and_mtimes(mnt):
    """`mcpfs files mv` through the daemon moves what chmod/utimes kept (into a directory
    too, kubo's rule); `mcpfs files rm` drops it: the same bytes put back there later show
    the defaults."""
    old = 1_600_000_000_123_456_789
    m = mnt / "mfs"
    (m / "d").mkdir()
    (m / "x.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(m / "x.sh", 0o750)
    os.utime(m / "x.sh", ns=(old, old))
    cid = os.getxattr(m / "x.sh", "user.mcpfs.cid").decode()
    mcpfs("files", "mv", "/x.sh", "/y.sh")
    got = os.stat(m / "y.sh")
    assert (stat.S_IMODE(got.st_mode), got.st_mtime_ns) == (0o750, old)
    mcpfs("files", "mv", "/y.sh", "/d")  # into the directory
    got = os.stat(m / "d" / "y.sh")
    assert (stat.S_IMODE(got.st_mode), got.st_mtime_ns) == (0o750, old)
    mcpfs("files", "rm", "-r", "/d")
    mcpfs("files", "mkdir", "/d")
    mcpfs("files", "cp", f"/ipfs/{cid}", "/d/y.sh")  # the same bytes (CID) at that path
    time.sleep(1.2)  # the kernel's 1 s entry and attribute cache of d/y.sh runs out
    assert stat.S_IMODE(os.stat(m / "d" / "y.sh").st_mode) == 0o644  # not the kept 0750


def test_mcpfs_files_write_and_cp_show_the_time_of_the_write(mnt, tmp_path):
    """A file written or copied with `mcpfs files` through the daemon shows the time of
    that write in the mount, as a write through the mount does (not the daemon's start
    time), and a rewritten file keeps the mode it showed (chmod +x stays runnable)."""
    m = mnt / "mfs"
    (m / "run.sh").write_text("#!/bin/sh\necho one\n")
    os.chmod(m / "run.sh", 0o755)
    src = tmp_path / "two.sh"
    src.write_text("#!/bin/sh\necho two\n")
    start = time.time_ns()
    mcpfs("files", "write", "--truncate", "/run.sh", str(src))
    mcpfs("files", "cp", "/run.sh", "/copy.sh")
    mcpfs("files", "write", "--create", "/new.txt", str(src))
    end = time.time_ns()
    time.sleep(1.2)  # the kernel's 1 s attribute cache of run.sh runs out
    for name, mode in (("run.sh", 0o755), ("copy.sh", 0o644), ("new.txt", 0o644)):
        got = os.stat(m / name)
        assert (name, stat.S_IMODE(got.st_mode)) == (name, mode)
        assert start <= got.st_mtime_ns <= end, name
    assert run(str(m / "run.sh")).stdout == "two\n"
