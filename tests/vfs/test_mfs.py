"""/mfs through the VFS, without a kernel: the same cases tests/fuse runs on a real mount."""

from __future__ import annotations

import errno
import os

import trio

from mcpfs.mounts.base import DIR, FILE, SYMLINK
from mcpfs.vfs import VFS
from mcpfs.vfs.journal import COMMITTING, OPEN
from mcpfs.vfs import open_files as vfs_module  # PENDING_ROW_DELAY lives there
from mcpfs.vfs.spool import MEMORY_MAX
from mcpfs.mounts import build_mounts
from mcpfs.config import paths
from mcpfs.errors import McpfsError
from tests.conftest import pattern_bytes

from .conftest import add_bytes, only_hash


async def test_cp_cat_and_cid_equals_add_n(drv):
    data = pattern_bytes(1_000_000, 3)
    await drv.write_file("mfs/big.bin", data)
    assert await drv.cat("mfs/big.bin") == data
    ino = await drv.ino("mfs/big.bin")
    cid = (await drv.vfs.getxattr(ino, "user.mcpfs.cid")).decode()
    assert cid == only_hash(data)
    assert (await drv.repo.mfs.stat("/big.bin"))["Hash"] == cid
    assert await drv.vfs.getxattr(ino, "user.mcpfs.backend") == b"mfs"
    assert drv.repo.mfs.flushed_root() == drv.repo.mfs.root()  # the new root is flushed


async def test_listing_equals_mfs_ls(drv):
    await drv.repo.mfs.mkdir("/d")
    await drv.repo.mfs.write("/d/x", b"xx", create=True)
    await drv.write_file("mfs/d/y", b"yyy")
    await drv.vfs.mkdir(await drv.ino("mfs/d"), "sub")
    listing = await drv.ls("mfs/d")
    assert sorted(listing) == [e["Name"] for e in await drv.repo.mfs.ls("/d")]
    assert listing["y"].size == 3 and listing["sub"].kind == DIR


async def test_pending_file_shows_local_size(drv):
    parent = await drv.ino("mfs")
    fh, entry = await drv.vfs.create(parent, "p.txt", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"12345")
    assert (await drv.ls("mfs"))["p.txt"].size == 5
    assert (await drv.vfs.getattr(entry.ino)).attr.size == 5
    assert not await drv.repo.mfs.exists("/p.txt")  # not committed yet
    await drv.vfs.flush(fh)
    assert await drv.repo.mfs.read("/p.txt") == b"12345"
    await drv.vfs.release(fh)
    assert not drv.vfs.open_files
    assert not list((paths().cache_dir / "spool").iterdir())  # spool removed


async def test_touch_creates_empty_file(drv):
    fh, _ = await drv.vfs.create(await drv.ino("mfs"), "empty", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert (await drv.repo.mfs.stat("/empty"))["Size"] == 0
    await drv.vfs.setattr(await drv.ino("mfs/empty"), other=True)  # utimensat: accepted


async def test_append_overwrite_random_and_truncate(drv):
    await drv.write_file("mfs/f", b"hello world")
    ino = await drv.ino("mfs/f")
    fh, _ = await drv.vfs.open(ino, os.O_WRONLY | os.O_APPEND)
    await drv.vfs.write(fh, 11, b"!!")  # the kernel passes the end offset for O_APPEND
    await drv.vfs.release(fh)
    assert await drv.cat("mfs/f") == b"hello world!!"
    fh, _ = await drv.vfs.open(ino, os.O_RDWR)
    await drv.vfs.write(fh, 0, b"J")
    await drv.vfs.write(fh, 20, b"end")  # past the end: a hole of zeros
    await drv.vfs.write(fh, 6, b"W")
    assert await drv.vfs.read(fh, 0, 100) == b"Jello World!!" + bytes(7) + b"end"
    await drv.vfs.release(fh)
    assert await drv.repo.mfs.read("/f") == b"Jello World!!" + bytes(7) + b"end"
    await drv.vfs.setattr(ino, size=5)
    assert await drv.cat("mfs/f") == b"Jello"
    await drv.vfs.setattr(ino, size=8)
    assert await drv.repo.mfs.read("/f") == b"Jello\0\0\0"


async def test_mkdir_rmdir_unlink_symlink(drv):
    root = await drv.ino("mfs")
    d = (await drv.vfs.mkdir(root, "dir")).ino
    assert await drv.errno_of(drv.vfs.mkdir(root, "dir")) == errno.EEXIST
    await drv.write_file("mfs/dir/f", b"f")
    assert await drv.errno_of(drv.vfs.rmdir(root, "dir")) == errno.ENOTEMPTY
    assert await drv.errno_of(drv.vfs.unlink(root, "dir")) == errno.EISDIR
    link = await drv.vfs.symlink(d, "l", "f")
    assert link.attr.kind == SYMLINK and await drv.vfs.readlink(link.ino) == "f"
    await drv.vfs.unlink(d, "l")
    await drv.vfs.unlink(d, "f")
    await drv.vfs.rmdir(root, "dir")
    assert await drv.ls("mfs") == {}
    assert await drv.errno_of(drv.stat("mfs/dir")) == errno.ENOENT


async def test_rename_posix_semantics(drv):
    root = await drv.ino("mfs")
    await drv.write_file("mfs/a", b"A")
    await drv.write_file("mfs/b", b"B")
    await drv.vfs.mkdir(root, "d")
    await drv.vfs.mkdir(root, "e")
    await drv.write_file("mfs/e/x", b"x")
    a = await drv.ino("mfs/a")
    await drv.vfs.rename(root, "a", root, "b")  # replaces a file
    assert await drv.cat("mfs/b") == b"A"
    assert (await drv.stat("mfs/b")).ino == a  # the inode moved with the name
    assert await drv.errno_of(drv.vfs.rename(root, "b", root, "d")) == errno.EISDIR
    assert await drv.errno_of(drv.vfs.rename(root, "d", root, "b")) == errno.ENOTDIR
    assert await drv.errno_of(drv.vfs.rename(root, "d", root, "e")) == errno.ENOTEMPTY
    await drv.vfs.rename(root, "e", root, "d")  # onto an empty directory
    assert await drv.cat("mfs/d/x") == b"x"
    assert await drv.errno_of(drv.vfs.rename(root, "d", await drv.ino("ipfs"), "x")) \
        == errno.EXDEV
    assert sorted(await drv.ls("mfs")) == ["b", "d"]


async def test_rename_of_a_file_still_being_written(drv):
    root = await drv.ino("mfs")
    fh, _ = await drv.vfs.create(root, "tmp", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"partial")
    await drv.vfs.rename(root, "tmp", root, "final")
    await drv.vfs.write(fh, 7, b" done")
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert await drv.repo.mfs.read("/final") == b"partial done"
    assert not await drv.repo.mfs.exists("/tmp")


async def test_unlink_of_an_open_new_file_leaves_nothing(drv):
    root = await drv.ino("mfs")
    fh, _ = await drv.vfs.create(root, "gone", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"data")
    await drv.vfs.unlink(root, "gone")
    assert "gone" not in await drv.ls("mfs")
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert not await drv.repo.mfs.exists("/gone")


async def test_second_reader_sees_pending_writes(drv):
    await drv.write_file("mfs/s", b"old content")
    ino = await drv.ino("mfs/s")
    wfh, _ = await drv.vfs.open(ino, os.O_WRONLY)
    await drv.vfs.write(wfh, 0, b"NEW")
    rfh, _ = await drv.vfs.open(ino, os.O_RDONLY)
    assert await drv.vfs.read(rfh, 0, 100) == b"NEW content"
    await drv.vfs.release(rfh)
    await drv.vfs.release(wfh)


async def test_mfs_cp_from_ipfs_shows_up(drv):
    cid = add_bytes(drv.repo, b"linked").cid
    await drv.repo.mfs.cp(f"/ipfs/{cid}", "/linked")
    assert await drv.cat("mfs/linked") == b"linked"


async def test_journal_completes_an_interrupted_commit(drv, journal, monkeypatch):
    monkeypatch.setattr(vfs_module, "PENDING_ROW_DELAY", 1e9)  # no row for "small" below
    # A write whose commit had started when the daemon died: the spool is complete.
    fh, _ = await drv.vfs.create(await drv.ino("mfs"), "crash", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"survives")
    of = drv.vfs.open_files[(await drv.ino("mfs/crash"))]
    await of.spool.materialize()  # a row is "committing" only with its spool on disk
    await journal.set(of.journal_id, COMMITTING, "crash")
    # ...and one that was still being written (on disk: past the memory spool): discarded.
    fh2, _ = await drv.vfs.create(await drv.ino("mfs"), "half", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh2, 1, b"h" * (MEMORY_MAX + 1))  # not from 0: no streaming import
    half_spool = drv.vfs.open_files[(await drv.ino("mfs/half"))].spool.path
    assert os.path.exists(half_spool)
    # ...and a small one still in its memory spool: nothing on disk, nothing to recover.
    fh3, _ = await drv.vfs.create(await drv.ino("mfs"), "small", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh3, 0, b"small")
    os.close(of.spool.fd)  # "kill -9": nothing else runs
    fresh = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", journal)
    outcome = sorted(await fresh.recover())
    assert outcome == [("mfs", "crash", "committed"), ("mfs", "half", "discarded")]
    assert await drv.repo.mfs.read("/crash") == b"survives"
    assert not await drv.repo.mfs.exists("/half") and not await drv.repo.mfs.exists("/small")
    assert not os.path.exists(half_spool) and journal.pending() == []


async def test_concurrent_writers_to_different_files(drv):
    async def one(i: int) -> None:
        await drv.write_file(f"mfs/c{i}", pattern_bytes(50000, i))
    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(one, i)
    for i in range(8):
        assert await drv.repo.mfs.read(f"/c{i}") == pattern_bytes(50000, i)
    assert (await drv.stat("mfs/c3")).attr.kind == FILE


async def test_journal_retries_failed_commits_then_gives_up(drv, journal, caplog):
    from mcpfs.vfs.journal import FAILED
    from mcpfs.vfs.recovery import MAX_ATTEMPTS
    spool = paths().cache_dir / "spool" / "orphan.spool"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(b"data for a vanished folder")
    row = journal.add_sync("mfs", "no/such/dir/file", str(spool))
    journal.set_sync(row, FAILED)
    fresh = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", journal)
    assert await fresh.recover() == [("mfs", "no/such/dir/file", "failed")]
    assert spool.exists() and journal.pending()[0].attempts == 2
    for _ in range(MAX_ATTEMPTS):
        journal.set_sync(row, FAILED)
    assert await fresh.recover() == [("mfs", "no/such/dir/file", "abandoned")]
    assert spool.exists() and journal.pending() == [] and str(spool) in caplog.text


async def test_every_mfs_entry_has_a_cid(drv):
    await drv.vfs.mkdir(await drv.ino("mfs"), "d")
    await drv.write_file("mfs/d/f", b"f")
    for path, mfs_path in (("mfs", "/"), ("mfs/d", "/d"), ("mfs/d/f", "/d/f")):
        got = await drv.vfs.getxattr(await drv.ino(path), "user.mcpfs.cid")
        assert got.decode() == (await drv.repo.mfs.stat(mfs_path))["Hash"]
    assert await drv.errno_of(drv.vfs.getxattr(await drv.ino(""), "user.mcpfs.cid")) \
        == errno.ENODATA


async def _write_tracking(drv, path: str, writes):
    """create ``path``, apply ``writes`` ((offset, bytes) or ("truncate", size)), close;
    return (MFS methods the commit used, whether a stream was running before close)."""
    used = []
    mfs = drv.repo.mfs
    for name in ("link", "write"):
        real = getattr(mfs, name)

        async def spy(*a, _real=real, _name=name, **k):
            used.append(_name)
            return await _real(*a, **k)
        setattr(mfs, name, spy)  # instance attributes over the methods, removed below
    parent, name = await drv.parent(path)
    fh, entry = await drv.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT)
    of = drv.vfs.open_files[entry.ino]
    for op in writes:
        if op[0] == "truncate":
            await drv.vfs.setattr(entry.ino, size=op[1], fh=fh)
        else:
            await drv.vfs.write(fh, op[0], op[1])
    streaming = of.stream is not None
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    del mfs.link, mfs.write
    return used, streaming


async def test_sequential_writes_are_imported_as_they_arrive(drv):
    """A file written front to back is chunked and hashed while it is written, and the
    commit links the finished DAG (no re-import); the CID equals `mcpfs add -n`."""
    data = pattern_bytes(3_000_000, 21)
    piece = 128 * 1024
    used, streaming = await _write_tracking(
        drv, "mfs/streamed.bin", [(i, data[i:i + piece]) for i in range(0, len(data), piece)])
    assert streaming and used == ["link"]
    assert (await drv.repo.mfs.stat("/streamed.bin"))["Hash"] == only_hash(data)
    assert await drv.cat("mfs/streamed.bin") == data
    assert not list((paths().cache_dir / "spool").iterdir())


async def test_non_sequential_writes_fall_back_to_the_spool(drv):
    data = bytearray(pattern_bytes(1_500_000, 22))
    piece = 100_000
    writes = [(i, bytes(data[i:i + piece])) for i in range(0, 1_200_000, piece)]
    writes.append((1_200_000, bytes(data[1_200_000:])))
    writes.append((10, b"REWRITTEN"))  # a write behind the end abandons the stream
    data[10:19] = b"REWRITTEN"
    used, streaming = await _write_tracking(drv, "mfs/rand.bin", writes)
    assert not streaming and used == ["write"]
    assert (await drv.repo.mfs.stat("/rand.bin"))["Hash"] == only_hash(bytes(data))
    # a truncate in the middle of a sequential file abandons it as well
    writes = [(0, bytes(600_000)), ("truncate", 300_000), (300_000, b"tail")]
    used, streaming = await _write_tracking(drv, "mfs/trunc.bin", writes)
    assert not streaming and used == ["write"]
    assert (await drv.repo.mfs.stat("/trunc.bin"))["Hash"] == only_hash(bytes(300_000) + b"tail")
    # small files never start a stream: imported from the memory spool
    used, streaming = await _write_tracking(drv, "mfs/small", [(0, b"tiny")])
    assert not streaming and used == ["write"]
    assert (await drv.repo.mfs.stat("/small"))["Hash"] == only_hash(b"tiny")


async def test_abandoned_stream_and_unlinked_file_leave_nothing(drv):
    fh, entry = await drv.vfs.create(await drv.ino("mfs"), "gone", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, pattern_bytes(700_000, 1))
    assert drv.vfs.open_files[entry.ino].stream is not None
    await drv.vfs.unlink(await drv.ino("mfs"), "gone")
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert not await drv.repo.mfs.exists("/gone")
    assert not list((paths().cache_dir / "spool").iterdir())


async def test_journal_row_only_for_spools_on_disk(drv, journal, monkeypatch):
    monkeypatch.setattr(vfs_module, "PENDING_ROW_DELAY", 1e9)
    # A small file lives and is committed in its memory spool: no journal row at all (no
    # insert + delete, no worker-thread hop), no spool file.
    added = []
    real_add = journal.add_sync
    monkeypatch.setattr(journal, "add_sync", lambda *a: added.append(a) or real_add(*a))
    spool_dir = paths().cache_dir / "spool"
    root = await drv.ino("mfs")
    fh, _ = await drv.vfs.create(root, "small", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"tiny")
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert added == [] and journal.pending() == [] and not list(spool_dir.iterdir())
    assert await drv.repo.mfs.read("/small") == b"tiny"
    # A file growing sequentially past the memory spool streams into its import only
    # (unspooled): an open row at once (a write in progress), no spool file.
    fh, _ = await drv.vfs.create(root, "grows", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"x")
    of = drv.vfs.open_files[await drv.ino("mfs/grows")]
    assert of.journal_id is None and journal.pending() == []
    await drv.vfs.write(fh, 1, b"y" * MEMORY_MAX)
    assert of.unspooled and not list(spool_dir.iterdir())
    assert [(r.path, r.state) for r in journal.pending()] == [("grows", OPEN)]
    # A write elsewhere needs the spool: the bytes are read back from the import into
    # the spool file, under the same open row.
    await drv.vfs.write(fh, 0, b"x")
    rows = journal.pending()
    assert [(r.mount, r.path, r.spool, r.state) for r in rows] == \
        [("mfs", "grows", of.spool.path, OPEN)] and of.journal_id == rows[0].id
    assert os.path.exists(of.spool.path)
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert journal.pending() == [] and not list(spool_dir.iterdir())
    assert await drv.repo.mfs.read("/grows") == b"x" + b"y" * MEMORY_MAX


async def test_failed_memory_commit_keeps_spool_with_failed_row(drv, journal, monkeypatch):
    # A memory spool whose commit fails goes to disk with its row (failed): recoverable.
    from mcpfs.errors import McpfsError
    from mcpfs.vfs.journal import FAILED
    mount = drv.vfs.mounts["mfs"]

    async def broken(writer):
        raise McpfsError("backend down", errno=errno.EIO)
    monkeypatch.setattr(mount, "commit", broken)
    fh, _ = await drv.vfs.create(await drv.ino("mfs"), "f", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"keep me")
    of = drv.vfs.open_files[await drv.ino("mfs/f")]
    assert await drv.errno_of(drv.vfs.flush(fh)) == errno.EIO
    await drv.vfs.release(fh)
    rows = journal.pending()
    assert [(r.path, r.state) for r in rows] == [("f", FAILED)]
    with open(rows[0].spool, "rb") as fh_:
        assert fh_.read() == b"keep me"
    assert of.spool.closed


async def broken_commit(writer):
    raise McpfsError("backend down", errno=errno.EIO)


async def failed_close(drv, monkeypatch, name: str = "f") -> None:
    """A new /mfs/``name`` (b"older") whose close() returns EIO: its spool is kept, with a
    failed journal row, for the next start."""
    monkeypatch.setattr(drv.vfs.mounts["mfs"], "commit", broken_commit)
    parent, base = await drv.parent(f"mfs/{name}")
    try:  # as the kernel does: an existing name is opened with O_TRUNC, a new one created
        fh, _ = await drv.vfs.open((await drv.vfs.lookup(parent, base)).ino,
                                   os.O_WRONLY | os.O_TRUNC)
    except McpfsError:
        fh, _ = await drv.vfs.create(parent, base, os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"older")
    assert await drv.errno_of(drv.vfs.flush(fh)) == errno.EIO
    await drv.vfs.release(fh)
    monkeypatch.undo()


async def next_start_replays_nothing(drv, journal) -> None:
    """No row is left, and the start after commits nothing: /mfs/f stays b"newer"."""
    assert journal.pending() == []
    fresh = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", journal)
    assert await fresh.recover() == []
    assert await drv.repo.mfs.read("/f") == b"newer"


async def test_a_failed_commit_kept_for_the_next_start_is_superseded_by_a_new_write(
        drv, journal, monkeypatch):
    # close() returned EIO and the spool waits for the next start; writing the file again
    # (now it commits) supersedes it: the next start must not commit the older bytes over
    # the newer file.
    from mcpfs.vfs.journal import FAILED
    await failed_close(drv, monkeypatch)
    assert [r.state for r in journal.pending()] == [FAILED]
    await drv.write_file("mfs/f", b"newer")
    await next_start_replays_nothing(drv, journal)


async def test_a_kept_write_that_fails_again_at_the_start_is_superseded_too(
        drv, journal, monkeypatch):
    # The next start's commit of the kept write fails again (the row waits for the start
    # after); the file written meanwhile must not be replaced by it then.
    await failed_close(drv, monkeypatch)
    second = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", journal)
    monkeypatch.setattr(second.mounts["mfs"], "commit", broken_commit)
    assert await second.recover() == [("mfs", "f", "failed")]
    monkeypatch.undo()
    from mcpfs.vfs.inodes import ROOT_INODE
    folder = (await second.lookup(ROOT_INODE, "mfs")).ino
    fh, _ = await second.create(folder, "f", os.O_WRONLY | os.O_CREAT)
    await second.write(fh, 0, b"newer")
    await second.flush(fh)
    await second.release(fh)
    await next_start_replays_nothing(drv, journal)


async def test_a_later_row_committed_at_the_start_supersedes_an_earlier_that_failed(
        drv, journal, monkeypatch):
    # Two rows of one path left by a previous run: the older (a close() that failed) fails
    # again at this start, the newer (killed mid-commit) commits. The older must go now,
    # not be committed over the newer file at the start after.
    from mcpfs.vfs.journal import COMMITTING, FAILED
    spools = paths().cache_dir / "spool"
    spools.mkdir(parents=True, exist_ok=True)
    for n, (data, state) in enumerate(((b"older", FAILED), (b"newer", COMMITTING))):
        (spools / f"r{n}").write_bytes(data)
        journal.set_sync(journal.add_sync("mfs", "f", str(spools / f"r{n}")), state)
    second = VFS(build_mounts(drv.repo), spools, journal)
    real, calls = second.mounts["mfs"].commit, []

    async def first_fails(writer):
        calls.append(1)
        if len(calls) == 1:
            raise McpfsError("backend down", errno=errno.EIO)
        return await real(writer)
    monkeypatch.setattr(second.mounts["mfs"], "commit", first_fails)
    assert await second.recover() == [("mfs", "f", "failed"), ("mfs", "f", "committed")]
    assert os.listdir(spools) == []
    await next_start_replays_nothing(drv, journal)


async def test_of_two_kept_writes_of_a_path_the_older_goes_whichever_registers_last(
        drv, journal):
    # Journal row ids grow with time: a kept write registered after a newer one of the same
    # path (its close() was slower) is the one superseded.
    spools = paths().cache_dir / "spool"
    spools.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(2):
        (spools / f"k{n}").write_bytes(b"%d" % n)
        rows.append(journal.add_sync("mfs", "f", str(spools / f"k{n}")))
    wb = drv.vfs.write_back
    await wb.kept("mfs", "f", rows[1], str(spools / "k1"))
    await wb.kept("mfs", "f", rows[0], str(spools / "k0"))
    assert [r.id for r in journal.pending()] == [rows[1]]
    assert os.listdir(spools) == ["k1"] and wb.given_up == {("mfs", "f"): (rows[1],
                                                                           str(spools / "k1"))}


async def test_a_kept_write_that_cannot_be_removed_is_logged_not_raised(
        drv, journal, monkeypatch, caplog):
    # Superseding happens after the user's write succeeded: a full disk (SQLite cannot
    # delete the row) must not turn that success into an error.
    import sqlite3
    spools = paths().cache_dir / "spool"
    spools.mkdir(parents=True, exist_ok=True)
    (spools / "k").write_bytes(b"kept")
    row = journal.add_sync("mfs", "f", str(spools / "k"))
    await drv.vfs.write_back.kept("mfs", "f", row, str(spools / "k"))

    async def full(row_id):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(journal, "remove", full)
    await drv.write_file("mfs/f", b"newer")  # its commit supersedes the kept write
    assert await drv.repo.mfs.read("/f") == b"newer"
    assert "could not be removed" in caplog.text


async def test_memory_spool_held_open_gets_a_row_for_status(drv, journal, monkeypatch):
    # `mcpfs status` lists the journal: a file held open shows as pending after a moment.
    monkeypatch.setattr(vfs_module, "PENDING_ROW_DELAY", 0.05)
    fh, _ = await drv.vfs.create(await drv.ino("mfs"), "held", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"not yet committed")
    assert journal.pending() == []
    await trio.sleep(0.3)
    assert [(r.path, r.state) for r in journal.pending()] == [("held", OPEN)]
    of = drv.vfs.open_files[await drv.ino("mfs/held")]
    assert of.spool.in_memory and not os.path.exists(of.spool.path)
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    assert journal.pending() == []
    assert await drv.repo.mfs.read("/held") == b"not yet committed"
    await trio.sleep(0.3)
    assert not drv.vfs._sweeping  # no file open: the sweeper ended


async def test_a_path_resolved_through_the_reader_is_not_resolved_again(drv, monkeypatch):
    """After a restart (nothing decoded in this process) the first open of a path goes to
    a worker thread; later ones are answered from the (root, path) cache until the root
    changes."""
    from mcpfs.mounts import mfs as mfs_module
    from mcpfs.mounts.mfs import MfsMount
    await drv.repo.mfs.mkdir("/d")
    await drv.write_file("mfs/d/small.txt", b"hi\n")
    from mcpfs.backends.ipfs.node import Repo
    await drv.repo.mfs.flush()
    other = Repo(paths().repo_dir)  # what the next daemon opens: nothing decoded yet
    fresh = MfsMount(other)
    calls = []
    real = mfs_module.ipfs_call

    async def counting(*args, **kw):
        calls.append(args[2] if len(args) > 2 else "")
        return await real(*args, **kw)
    monkeypatch.setattr(mfs_module, "ipfs_call", counting)
    for _ in range(3):
        reader = await fresh.open_read("d/small.txt")
        assert await reader.read(0, 10) == b"hi\n"
        await reader.close()
    assert calls.count("/mfs/d/small.txt") == 1
    await other.mfs.write("/d/small.txt", b"new", truncate=True)  # a new root
    reader = await fresh.open_read("d/small.txt")
    assert await reader.read(0, 10) == b"new"
    await reader.close()


# ---------------------------------------------------------------- unspooled streaming
async def _unspooled(drv, name: str, data: bytes):
    """A new /mfs file written sequentially in 128 KiB pieces, still open: (fh, OpenFile)."""
    fh, _ = await drv.vfs.create(await drv.ino("mfs"), name, os.O_RDWR | os.O_CREAT)
    for i in range(0, len(data), 128 << 10):
        await drv.vfs.write(fh, i, data[i:i + (128 << 10)])
    of = drv.vfs.open_files[await drv.ino(f"mfs/{name}")]
    assert of.unspooled and of.spool.in_memory  # the bytes are only in the import
    return fh, of


async def _close(drv, fh) -> None:
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)


async def test_an_unspooled_file_reads_back_through_its_spool(drv):
    data = pattern_bytes(3_000_000, 21)
    fh, of = await _unspooled(drv, "r", data)
    assert await drv.vfs.read(fh, 1_000_000, 10) == data[1_000_000:1_000_010]
    assert not of.unspooled and os.path.getsize(of.spool.path) == len(data)
    await drv.vfs.write(fh, len(data), b"tail")  # appends still work, through the spool
    await _close(drv, fh)
    assert await drv.repo.mfs.read("/r") == data + b"tail"


async def test_an_unspooled_file_takes_random_writes_and_truncates(drv):
    data = bytearray(pattern_bytes(2_000_000, 22))
    fh, _ = await _unspooled(drv, "w", bytes(data))
    await drv.vfs.write(fh, 5, b"HEADER")  # e.g. a writer patching its header at the end
    data[5:11] = b"HEADER"
    await drv.vfs.setattr(await drv.ino("mfs/w"), size=1_500_000, fh=fh)
    del data[1_500_000:]
    await _close(drv, fh)
    assert await drv.repo.mfs.read("/w") == bytes(data)
    fh, of = await _unspooled(drv, "t", pattern_bytes(1_000_000, 23))
    await drv.vfs.setattr(await drv.ino("mfs/t"), size=0, fh=fh)  # dropped, not read back
    assert not of.unspooled and of.spool.in_memory
    await drv.vfs.write(fh, 0, b"new")
    await _close(drv, fh)
    assert await drv.repo.mfs.read("/t") == b"new"


async def test_an_unspooled_file_whose_commit_fails_is_kept_whole_for_the_retry(
        drv, journal, monkeypatch):
    """The journal's retry needs the bytes: the spool is written from the import's DAG,
    and the row says failed; recovery then commits the same bytes."""
    from mcpfs.errors import McpfsError
    from mcpfs.vfs.journal import FAILED
    mount = drv.vfs.mounts["mfs"]
    real_commit = mount.commit

    async def broken(writer):
        raise McpfsError("backend down", errno=errno.EIO)
    monkeypatch.setattr(mount, "commit", broken)
    data = pattern_bytes(1_500_000, 24)
    fh, _ = await _unspooled(drv, "k", data)
    assert await drv.errno_of(drv.vfs.flush(fh)) == errno.EIO
    await drv.vfs.release(fh)
    rows = journal.pending()
    assert [(r.path, r.state) for r in rows] == [("k", FAILED)]
    with open(rows[0].spool, "rb") as fh_:
        assert fh_.read() == data
    monkeypatch.setattr(mount, "commit", real_commit)
    assert await drv.vfs.recover() == [("mfs", "k", "committed")]
    assert await drv.repo.mfs.read("/k") == data


async def test_an_unspooled_import_that_fails_drops_the_write_with_its_error(
        drv, monkeypatch):
    """A full blockstore: the streamed bytes are gone, so the writer gets ENOSPC and the
    file is dropped as a whole (an existing file keeps its old content)."""
    from mcpfs.errors import NoSpace
    await drv.write_file("mfs/old", b"old content")

    def full(cid, data):
        raise NoSpace("no space left writing block")
    monkeypatch.setattr(drv.repo.store, "put", full)
    fh, _ = await drv.vfs.open(await drv.ino("mfs/old"), os.O_WRONLY | os.O_TRUNC)
    got = None
    try:
        for i in range(0, 4 << 20, 128 << 10):
            await drv.vfs.write(fh, i, pattern_bytes(128 << 10, i))
        await drv.vfs.flush(fh)
    except McpfsError as exc:
        got = exc.errno
    await drv.vfs.release(fh)
    assert got == errno.ENOSPC
    assert await drv.repo.mfs.read("/old") == b"old content"
    assert (await drv.stat("mfs/old")).attr.size == len(b"old content")


async def test_writing_on_after_a_streamed_commit_keeps_every_byte(drv):
    """A commit while the writer stays open ({ cat a; cat b; } > f: the first cat's close
    commits): the spool held only a prefix, so later writes and reads refill it from the
    committed file first."""
    a, b = pattern_bytes(1_000_000, 25), pattern_bytes(300_000, 26)
    fh, _ = await _unspooled(drv, "joined", a)
    fh2, _ = await drv.vfs.open(await drv.ino("mfs/joined"), os.O_WRONLY)  # the 2nd writer
    await drv.vfs.flush(fh)  # not the last writer: no commit
    await drv.vfs.release(fh)
    await drv.vfs.fsync(fh2)  # a commit while a writer stays open
    await drv.vfs.write(fh2, len(a), b)
    reader, _ = await drv.vfs.open(await drv.ino("mfs/joined"), os.O_RDONLY)
    assert await drv.vfs.read(reader, 999_990, 20) == (a + b)[999_990:1_000_010]
    await drv.vfs.release(reader)
    await _close(drv, fh2)
    assert await drv.repo.mfs.read("/joined") == a + b


async def test_a_dropped_write_is_an_error_for_every_later_write_and_close(drv, monkeypatch):
    """A reader made the failed import show (by reading the file back): the writer, too,
    gets the error from its next write and its close, not a silent success."""
    from mcpfs.errors import NoSpace
    data = pattern_bytes(1_000_000, 27)
    fh, of = await _unspooled(drv, "lost", data)

    def broken():
        raise NoSpace("no space left writing block")
    monkeypatch.setattr(of.stream, "content", broken)
    reader, _ = await drv.vfs.open(await drv.ino("mfs/lost"), os.O_RDONLY)
    assert await drv.errno_of(drv.vfs.read(reader, 0, 10)) == errno.ENOSPC
    assert await drv.errno_of(drv.vfs.write(fh, len(data), b"more")) == errno.ENOSPC
    assert await drv.errno_of(drv.vfs.flush(fh)) == errno.ENOSPC
    await drv.vfs.release(reader)
    await drv.vfs.release(fh)
    assert "lost" not in await drv.ls("mfs")


async def test_the_last_other_handle_closing_during_an_o_trunc_open_keeps_the_file(drv):
    """A second writer's open(O_TRUNC) truncates the shared write state; the first writer's
    close() during that truncate must not drop the state the opener is about to get."""
    from mcpfs.vfs.handles import OpenFile

    vfs = drv.vfs
    parent, _ = await drv.parent("/mfs/shared")
    fh_a, entry = await vfs.create(parent, "shared", os.O_WRONLY | os.O_CREAT)
    await vfs.write(fh_a, 0, b"A" * (3 << 20))
    inside, go = trio.Event(), trio.Event()
    real = OpenFile.truncate

    async def paused(self, size):
        inside.set()
        await go.wait()
        return await real(self, size)
    opened = []
    async with trio.open_nursery() as nursery:
        OpenFile.truncate = paused
        try:
            async def open_b():
                opened.append((await vfs.open(entry.ino, os.O_WRONLY | os.O_TRUNC))[0])
            nursery.start_soon(open_b)
            await inside.wait()
            await vfs.flush(fh_a)
            await vfs.release(fh_a)  # the only counted handle goes
            go.set()
        finally:
            OpenFile.truncate = real
    fh_b = opened[0]
    await vfs.write(fh_b, 0, b"B" * (3 << 20))
    # the opener's write state is the file's: readers and other writers share it
    assert vfs.open_files.get(entry.ino) is vfs.handles.get(fh_b).open_file
    assert (await drv.cat("/mfs/shared"))[:10] == b"B" * 10
    await vfs.flush(fh_b)
    await vfs.release(fh_b)
    assert await drv.cat("/mfs/shared") == b"B" * (3 << 20)
    assert await drv.repo.mfs.read("/shared") == b"B" * (3 << 20)


async def test_a_reader_closing_during_a_truncate_keeps_its_write_state(drv):
    """truncate(2) of a file nobody writes opens a write state, truncates and commits it;
    a reader that opens and closes the file meanwhile shares that state and must not drop
    it (else a second reader would get the old bytes while the commit runs)."""
    from mcpfs.vfs.handles import OpenFile

    vfs = drv.vfs
    await drv.write_file("/mfs/t", b"0123456789" * 1000)
    ino = await drv.ino("/mfs/t")
    inside, go = trio.Event(), trio.Event()
    real = OpenFile.commit

    async def paused(self, sub):  # the truncate's commit waits; the reader's goes on
        if not inside.is_set():
            inside.set()
            await go.wait()
        return await real(self, sub)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            OpenFile.commit = paused
            try:
                nursery.start_soon(lambda: vfs.setattr(ino, size=5))
                await inside.wait()
                state = vfs.open_files.get(ino)
                fh, _ = await vfs.open(ino, os.O_RDONLY)
                await vfs.release(fh)
                assert vfs.open_files.get(ino) is state
                assert await drv.cat("/mfs/t") == b"01234"
            finally:
                go.set()  # (the commit waits in a shielded scope)
                OpenFile.commit = real
    assert await drv.repo.mfs.read("/t") == b"01234"
    assert vfs.open_files.get(ino) is None
