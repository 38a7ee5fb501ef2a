"""The fast paths of the mount, without a kernel: keep_cache across opens of unchanged
content, reads through the prefetcher, lazy readdir, the getxattr shortcut, the inode
table's child index."""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest

from mcpfs.fuse_ops import FuseOps
from mcpfs.mounts import ipfs as ipfs_mount
from mcpfs.stats import Stats
from mcpfs.vfs import page_cache
from mcpfs.vfs.inodes import InodeTable
from tests.conftest import pattern_bytes

from .conftest import add_bytes


async def open_close(drv, path: str) -> bool:
    """keep_cache of one read-only open (then released)."""
    fh, handle = await drv.vfs.open(await drv.ino(path), os.O_RDONLY)
    await drv.vfs.release(fh)
    return handle.keep_cache


# ---------------------------------------------------------------- keep_cache
async def test_keep_cache_on_reopen_of_unchanged_mfs_file(drv):
    await drv.write_file("mfs/f", b"one")
    assert not await open_close(drv, "mfs/f")  # first open: cache of unknown content
    assert await open_close(drv, "mfs/f")  # same CID: the page cache stays
    assert await open_close(drv, "mfs/f")


async def test_no_keep_cache_after_a_write_through_the_mount(drv):
    await drv.write_file("mfs/f", b"one")
    await open_close(drv, "mfs/f")
    assert await open_close(drv, "mfs/f")
    await drv.write_file("mfs/f", b"two!")  # O_TRUNC write + commit on the same inode
    assert not await open_close(drv, "mfs/f")
    assert await drv.cat("mfs/f") == b"two!"
    assert await open_close(drv, "mfs/f")
    # setattr truncate (no handle open): also a commit
    ino = await drv.ino("mfs/f")
    await drv.vfs.setattr(ino, size=1)
    assert not await open_close(drv, "mfs/f")


async def test_no_keep_cache_after_a_change_outside_the_mount(drv):
    await drv.write_file("mfs/f", b"one")
    await open_close(drv, "mfs/f")
    assert await open_close(drv, "mfs/f")
    await drv.repo.mfs.write("/f", b"changed by the CLI", truncate=True)
    assert not await open_close(drv, "mfs/f")
    assert await open_close(drv, "mfs/f")


async def test_no_keep_cache_while_an_older_reader_is_open(drv):
    await drv.write_file("mfs/f", b"one")
    ino = await drv.ino("mfs/f")
    old_fh, old = await drv.vfs.open(ino, os.O_RDONLY)  # reads CID of "one"
    await drv.repo.mfs.write("/f", b"two", truncate=True)
    assert not await open_close(drv, "mfs/f")  # new content: cache dropped
    assert not await open_close(drv, "mfs/f")  # the old reader may refill it meanwhile
    assert await drv.vfs.read(old_fh, 0, 10) == b"one"
    await drv.vfs.release(old_fh)
    assert not await open_close(drv, "mfs/f")  # whatever it read may be cached: drop once
    assert await open_close(drv, "mfs/f")


async def test_writable_and_pending_opens_never_keep_cache(drv):
    await drv.write_file("mfs/f", b"one")
    await open_close(drv, "mfs/f")
    ino = await drv.ino("mfs/f")
    wfh, w = await drv.vfs.open(ino, os.O_WRONLY)
    rfh, r = await drv.vfs.open(ino, os.O_RDONLY)  # served from the pending write state
    assert not w.keep_cache and not r.keep_cache
    await drv.vfs.release(rfh)
    await drv.vfs.release(wfh)
    assert not await open_close(drv, "mfs/f")  # opened for writing: dropped once


@pytest.mark.skipif(page_cache.KERNEL < page_cache.DIRECT_WRITES_SINCE,
                    reason="direct_io for write-only opens needs Linux 6.6")
async def test_write_only_opens_bypass_the_page_cache(drv):
    """direct_io for write-only opens and creates (cp's target), through FuseOps to the
    kernel's answer; read-write and read-only opens keep the page cache."""
    await drv.write_file("mfs/f", b"one")
    ops = FuseOps(drv.vfs)
    ino = await drv.ino("mfs/f")
    got = {}
    for name, flags in (("w", os.O_WRONLY), ("wt", os.O_WRONLY | os.O_TRUNC),
                        ("rw", os.O_RDWR), ("r", os.O_RDONLY)):
        info = await ops.open(ino, flags, None)
        got[name] = info.direct_io
        await ops.release(info.fh)
    root = await drv.ino("mfs")
    for name, flags in (("create w", os.O_WRONLY), ("create rw", os.O_RDWR)):
        info, _ = await ops.create(root, name.encode(), 0o644, flags | os.O_CREAT, None)
        got[name] = info.direct_io
        await ops.release(info.fh)
    assert got == {"w": True, "wt": True, "rw": False, "r": False,
                   "create w": True, "create rw": False}


def test_direct_writes_wait_for_a_kernel_that_invalidates_their_range():
    w = os.O_WRONLY | os.O_CREAT
    assert page_cache.write_only_direct(w, kernel=(6, 6))
    assert page_cache.write_only_direct(w, kernel=(7, 0))
    assert not page_cache.write_only_direct(w, kernel=(6, 5))
    assert not page_cache.write_only_direct(w, kernel=(0, 0))  # unknown: write-through
    assert not page_cache.write_only_direct(os.O_RDWR, kernel=(6, 18))
    assert page_cache.kernel_version("6.18.44-fc-v1272") == (6, 18)
    assert page_cache.kernel_version("4.19-rc1") == (4, 19)
    assert page_cache.kernel_version("weird") == (0, 0)


async def test_ipfs_files_always_keep_cache(drv):
    cid = add_bytes(drv.repo, b"immutable").cid
    assert await open_close(drv, f"ipfs/{cid}")
    assert await open_close(drv, f"ipfs/{cid}")


async def test_fuse_ops_passes_keep_cache_to_the_kernel(drv):
    await drv.write_file("mfs/f", b"one")
    ops = FuseOps(drv.vfs)
    ino = await drv.ino("mfs/f")
    infos = []
    for _ in range(2):
        info = await ops.open(ino, os.O_RDONLY, None)
        infos.append(info.keep_cache)
        await ops.release(info.fh)
    assert infos == [False, True]


# ---------------------------------------------------------------- reads
async def test_sequential_reads_come_from_the_prefetch_window(drv, monkeypatch):
    data = pattern_bytes(6 * 1024 * 1024 + 17, 5)
    await drv.repo.mfs.write("/big", data, create=True)
    hops = []
    real = ipfs_mount.ipfs_call

    async def counting(limiter, fn, what):
        hops.append(what)
        return await real(limiter, fn, what)
    monkeypatch.setattr(ipfs_mount, "ipfs_call", counting)
    piece = 128 * 1024
    assert await drv.cat("mfs/big", piece) == data
    reads = -(-len(data) // piece)
    fetches = [h for h in hops if h.startswith("read ")]
    assert len(fetches) <= reads // 4, (len(fetches), reads)  # not one hop per FUSE read


async def test_random_reads_fetch_only_what_is_asked(drv):
    data = pattern_bytes(8 * 1024 * 1024, 6)
    await drv.repo.mfs.write("/big", data, create=True)
    fh, handle = await drv.vfs.open(await drv.ino("mfs/big"), os.O_RDONLY)
    try:
        for off in (5_000_000, 123_457, 7_000_001, 2_000_000):
            assert await drv.vfs.read(fh, off, 4096) == data[off:off + 4096]
        p = handle.reader.prefetcher
        assert p.fetched <= 4 * 4096 and p.requests == 4
    finally:
        await drv.vfs.release(fh)
    assert handle.reader.prefetcher.buffered == 0  # closed: nothing held


async def test_a_bad_block_fails_only_the_reads_that_need_it(drv, caplog):
    # The prefetcher reads whole chunks: a corrupt block later in the chunk must not fail a
    # read of intact bytes before it.
    data = pattern_bytes(3 * 262144, 7)
    imported = add_bytes(drv.repo, data)
    pb, _ = drv.repo.reader.unixfs_node(imported.cid)
    assert len(pb.links) == 3
    drv.repo.flatfs.path_of(pb.links[1].cid).write_bytes(b"garbage")
    fh, _ = await drv.vfs.open(await drv.ino(f"ipfs/{imported.cid}"), os.O_RDONLY)
    try:
        assert await drv.vfs.read(fh, 0, 4096) == data[:4096]
        assert await drv.errno_of(drv.vfs.read(fh, 262144 + 10, 4096)) == errno.EIO
        assert await drv.vfs.read(fh, 2 * 262144, 4096) == data[2 * 262144:][:4096]
    finally:
        await drv.vfs.release(fh)


# ---------------------------------------------------------------- directories
async def test_readdir_of_a_large_directory_pages_lazily(drv):
    entries = {f"f{i:05d}": b"x" for i in range(3000)}
    for name in list(entries)[:3]:
        await drv.repo.mfs.write(f"/big/{name}", b"x", create=True, parents=True)
    for name in list(entries)[3:]:
        await drv.repo.mfs.write(f"/big/{name}", b"x", create=True, parents=True, flush=False)
    await drv.repo.mfs.flush()
    fh = await drv.vfs.opendir(await drv.ino("mfs/big"))
    try:
        handle = drv.vfs.handles.get(fh)
        handle.names = CountingList(handle.names)
        got, start = [], 0
        while True:  # the kernel: one page (~25 readdirplus entries) per call
            page = []
            for item in drv.vfs.readdir(fh, start):
                page.append(item)
                if len(page) == 25:
                    break
            if not page:
                break
            got += page
            start = page[-1][0]
        assert [name for _, name, _, _ in got] == sorted(entries)
        assert [off for off, _, _, _ in got] == list(range(1, 3001))
        # each call costs what it returns, not a copy of the rest of the listing
        assert handle.names.touched <= 3000 + 3000 // 25 + 1
    finally:
        drv.vfs.releasedir(fh)


async def test_directory_ops_are_counted_for_their_subtree(drv):
    # readdir and releasedir get a directory handle, not an inode: counted under the
    # subtree of the directory it lists (they were "unknown", or another inode's subtree)
    await drv.repo.mfs.mkdir("/d")
    for i in range(3):
        await drv.write_file(f"mfs/d/f{i}", b"x")
    stats = Stats()
    ops = FuseOps(drv.vfs, stats)
    for path, mount in (("mfs/d", "mfs"), ("", "root")):
        fh = await ops.opendir(await drv.ino(path) if path else 1, None)
        drv.vfs.readdir = lambda fh, start: iter(())  # the kernel's part is not wanted here
        await ops.readdir(fh, 0, None)
        await ops.releasedir(fh)
        del drv.vfs.readdir
        got = stats.snapshot()["Mounts"]
        assert {op: v["Count"] for op, v in got[mount]["Ops"].items()
                if op.endswith("dir")} == {"opendir": 1, "readdir": 1, "releasedir": 1}
    assert "unknown" not in stats.snapshot()["Mounts"]


class CountingList(list):
    touched = 0

    def __getitem__(self, i):
        self.touched += (len(range(*i.indices(len(self)))) if isinstance(i, slice) else 1)
        return super().__getitem__(i)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


# ---------------------------------------------------------------- xattrs
@pytest.mark.parametrize("name", [b"security.selinux", b"system.posix_acl_access",
                                  b"system.posix_acl_default", b"trusted.x"])
async def test_getxattr_of_foreign_namespaces_is_not_supported(drv, name):
    # ls -l asks every entry for the first two; ENOTSUP (not ENODATA) makes coreutils stop
    # asking for the rest of the device. Answered without a VFS call, counted as an answer.
    await drv.write_file("mfs/f", b"one")
    ino = await drv.ino("mfs/f")
    stats = Stats()
    ops = FuseOps(drv.vfs, stats)

    async def boom(*args):
        raise AssertionError("asked the VFS")
    drv.vfs.getxattr = boom
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getxattr(ino, name, None)
    assert info.value.errno == errno.ENOTSUP
    op = stats.snapshot()["Mounts"]["mfs"]["Ops"]["getxattr"]
    assert op["Count"] == 1 and op["Errors"] == 0


async def test_getxattr_of_user_names_still_answers(drv):
    await drv.write_file("mfs/f", b"one")
    stats = Stats()
    ops = FuseOps(drv.vfs, stats)
    ino = await drv.ino("mfs/f")
    assert await ops.getxattr(ino, b"user.mcpfs.size", None) == b"3"
    assert stats.snapshot()["Mounts"]["mfs"]["Ops"]["getxattr"]["Count"] == 1
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getxattr(ino, b"user.other", None)
    assert info.value.errno == errno.ENODATA


# ---------------------------------------------------------------- inode table
class NoScan(dict):
    def __iter__(self):
        raise AssertionError("scanned every known path")

    def keys(self):
        raise AssertionError("scanned every known path")


def test_detach_of_a_name_with_nothing_below_does_not_scan():
    # create/unlink/mkdir detach their name: O(1), not a scan of every known path.
    t = InodeTable()
    for i in range(100):
        t.remember(f"mfs/d/f{i}")
    t.remember("mfs/d/sub/x/y")  # "mfs/d/sub" and "mfs/d/sub/x" are not known themselves
    t.remember("mfs/other")
    t.by_path = NoScan(t.by_path)
    t.detach("mfs/d/f7")
    t.detach("mfs/d/new")  # unknown
    t.rename("mfs/d/f8", "mfs/d/f9")  # a file onto a file
    assert t.find("mfs/d/f7") is None and t.find("mfs/d/f8") is None
    assert t.find("mfs/d/f9").path == "mfs/d/f9"
    t.by_path = dict(dict.items(t.by_path))
    moved = t.find("mfs/d/sub/x/y")
    t.rename("mfs/d", "mfs/e")  # a directory with known paths below: scans, moves all
    assert t.find("mfs/e/sub/x/y") is moved and moved.path == "mfs/e/sub/x/y"
    assert t.find("mfs/d/f10") is None and t.find("mfs/e/f10").path == "mfs/e/f10"
    t.detach("mfs/e/sub")  # unknown node, known descendants
    assert t.find("mfs/e/sub/x/y") is None and not moved.attached
    t.detach("mfs/e")
    assert set(t.by_path) == {"", "mfs/other"}
    assert t._below == {"": 1, "mfs": 1}


def test_descendant_counts_follow_forget_and_drop():
    t = InodeTable()
    a = t.remember("mfs/a")
    b = t.remember("mfs/a/b")
    t.forget(a.ino, 1)  # the directory's node goes; its known child stays reachable
    assert t.find("mfs/a") is None
    t.rename("mfs/a", "mfs/z")
    assert b.path == "mfs/z/b" and t.find("mfs/z/b") is b
    t.forget(b.ino, 1)
    assert set(t.by_path) == {""} and t._below == {}


async def test_per_path_capabilities_give_immutable_parts_long_caches(tmp_path):
    """A mount with an immutable part (like /hf's @<sha>): entries there get its long
    timeouts and read-only modes, and opens keep the page cache at once."""
    from mcpfs.mounts.base import FILE, Attr, Capabilities, Mount
    from mcpfs.vfs import VFS

    pinned_caps = Capabilities(immutable=True, attr_timeout=86400, entry_timeout=86400)

    class Reader:
        identity = "x"

        async def read(self, offset, size):
            return b""

        async def close(self):
            pass

    class Mixed(Mount):
        name = "mixed"
        capabilities = Capabilities(writable=True, attr_timeout=1, entry_timeout=1)

        def capabilities_for(self, path):
            return pinned_caps if path.startswith("pinned") else self.capabilities

        async def lookup(self, path):
            return Attr(FILE, 0)

        async def open_read(self, path):
            return Reader()

    vfs = VFS({"mixed": Mixed()}, tmp_path / "spool", None)
    root = await vfs.lookup(1, "mixed")
    pinned = await vfs.lookup(root.ino, "pinned")
    moving = await vfs.lookup(root.ino, "moving")
    assert (pinned.attr_timeout, pinned.entry_timeout) == (86400, 86400)
    assert pinned.mode & 0o222 == 0  # read-only there
    assert (moving.attr_timeout, moving.mode & 0o200) == (1, 0o200)
    fh, handle = await vfs.open(pinned.ino, os.O_RDONLY)
    assert handle.keep_cache
    await vfs.release(fh)


async def test_reopen_of_a_known_mfs_file_needs_no_worker_thread(drv, monkeypatch):
    """open + read + close of a file already resolved once: lookups and the open are
    answered from caches on the trio thread (content-addressed, so never stale)."""
    from mcpfs.mounts import mfs as mfs_mount

    await drv.vfs.mkdir(await drv.ino("mfs"), "d")
    await drv.write_file("mfs/d/f", b"payload")
    assert await drv.cat("mfs/d/f") == b"payload"  # first open resolves in a worker thread
    calls = []
    real = mfs_mount.ipfs_call

    async def counting(limiter, fn, what):
        calls.append(what)
        return await real(limiter, fn, what)
    monkeypatch.setattr(mfs_mount, "ipfs_call", counting)
    mount = drv.vfs.mounts["mfs"]
    attr = await mount.lookup("d/f")
    reader = await mount.open_read("d/f")
    await reader.close()
    assert attr.size == 7 and calls == []
    # a change of the file moves to a new CID: its Attr is not served from the old one
    await drv.write_file("mfs/d/f", b"longer payload")
    assert (await mount.lookup("d/f")).size == 14
