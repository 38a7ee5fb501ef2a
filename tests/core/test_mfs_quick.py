"""Quick MFS changes (mfs.py, "quick" in its docstring): while the flusher runs, adding a new
small file, link, directory or symlink next to cached directories is committed on the trio
thread, with the same CIDs and the same crash safety as the worker-thread path; anything
else, or a GC that holds the lock, takes the thread path."""

from __future__ import annotations

import fcntl
import os
import threading

import trio

from mcpfs.backends.ipfs import mfs as mfs_module
from mcpfs.backends.ipfs.gc import GCLock
from mcpfs.backends.ipfs.node import Repo
from mcpfs.backends.ipfs.pins import walk_dag

from .test_mfs_pending import deferred, write_files


def count_threads(mfs, monkeypatch) -> list[int]:
    """Counts MFS's worker-thread runs from now on (``calls[0]``)."""
    calls = [0]
    run = mfs._run

    async def counted(fn):
        calls[0] += 1
        return await run(fn)
    monkeypatch.setattr(mfs, "_run", counted)
    return calls


async def warm(mfs) -> None:
    """Make /d known to the directory cache and open the node log (the first commits of
    a daemon take the thread path)."""
    await write_files(mfs, 2)
    await mfs.write("/d/warm", b"w", create=True)


async def test_new_small_files_are_committed_without_a_worker_thread(tmp_path, monkeypatch):
    async with deferred(tmp_path / "repo") as (repo, mfs):
        await warm(mfs)
        calls = count_threads(mfs, monkeypatch)
        for i in range(20):
            await mfs.write(f"/d/q{i:02d}", b"quick %d" % i, create=True, truncate=True)
        await mfs.mkdir("/d/sub")
        await mfs.write("/d/sub/inner", b"inner", create=True)
        await mfs.symlink("/d/link", "q00")
        imported = await trio.to_thread.run_sync(
            lambda: mfs.tree.import_pieces([b"linked bytes"]))
        await mfs.link("/d/linked", imported.cid, imported.tsize)
        assert calls[0] == 0
        # what goes to a worker thread: an existing name, a big file, parents to create
        await mfs.write("/d/q00", b"overwritten", create=True, truncate=True)
        assert calls[0] == 1
        await mfs.write("/d/big", os.urandom(mfs_module.QUICK_DATA_BYTES + 1), create=True)
        assert calls[0] == 2
        await mfs.write("/new/dir/f", b"x", create=True, parents=True)
        assert calls[0] == 3
        assert await mfs.read("/d/q05") == b"quick 5"
        assert await mfs.read("/d/q00") == b"overwritten"
        assert await mfs.read("/d/sub/inner") == b"inner"
        assert (await mfs.stat("/d/link"))["Type"] == "symlink"
        assert await mfs.read("/d/linked") == b"linked bytes"


async def test_quick_changes_make_the_cids_of_the_thread_path(tmp_path, monkeypatch):
    async def build(mfs) -> None:
        await warm(mfs)
        for i in range(30):
            await mfs.write(f"/d/q{i:02d}", b"same %d" % i * i, create=True, truncate=True)
        await mfs.mkdir("/d/e")
        await mfs.symlink("/d/e/s", "../q01")

    direct = Repo(tmp_path / "direct")  # no flusher: every change in a thread, synced
    await build(direct.mfs)
    async with deferred(tmp_path / "repo") as (repo, mfs):
        calls = count_threads(mfs, monkeypatch)
        await build(mfs)
        assert calls[0] < 5  # the warm-up's; all the rest were quick
        assert mfs.root() == direct.mfs.root()


async def test_quick_changes_survive_kill_9(tmp_path, monkeypatch):
    where = tmp_path / "repo"
    async with deferred(where) as (repo, mfs):
        await warm(mfs)
        calls = count_threads(mfs, monkeypatch)
        for i in range(25):
            await mfs.write(f"/d/k{i:02d}", b"kept %d" % i, create=True)
        assert calls[0] == 0
        root = mfs.root()
        again = Repo(where)  # "kill -9": nothing synced; the logs replay
        assert again.mfs.root() == root
        for i in range(25):
            assert await again.mfs.read(f"/d/k{i:02d}") == b"kept %d" % i
        assert len(list(walk_dag(again.flatfs, root))) == 2 + 3 + 25  # /, /d, 3 + 25 files


async def test_a_running_gc_sends_a_quick_change_to_the_thread_path(tmp_path, monkeypatch):
    """The trio thread never waits for the GC lock: with a collection running, the
    change goes to a worker thread, which waits for it, while the loop keeps running."""
    async with deferred(tmp_path / "repo") as (repo, mfs):
        await warm(mfs)
        calls = count_threads(mfs, monkeypatch)
        collecting, release = threading.Event(), threading.Event()

        def collector() -> None:
            with mfs._gc_lock.collecting():
                collecting.set()
                release.wait(10)

        ticks = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, collector)
            await trio.to_thread.run_sync(collecting.wait, 10)
            done = trio.Event()

            async def write() -> None:
                await mfs.write("/d/during-gc", b"waited", create=True)
                done.set()
            nursery.start_soon(write)
            for _ in range(20):  # the loop runs while the write waits for the collector
                await trio.sleep(0.01)
                ticks += 1
            assert not done.is_set() and calls[0] == 1
            release.set()
        assert ticks == 20 and await mfs.read("/d/during-gc") == b"waited"


def test_try_writing_never_waits(tmp_path):
    lock_path = tmp_path / "gc.lock"
    lock = GCLock(lock_path)
    with lock.try_writing() as held:
        assert held
        with lock.try_writing() as again:  # nested, like writing()
            assert again
        finished = threading.Event()

        def collector() -> None:
            with lock.collecting():
                finished.set()
        t = threading.Thread(target=collector)
        t.start()
        assert not finished.wait(0.1)  # the collector waits for the writer
    t.join(5)
    assert finished.is_set()
    # another process collecting: its exclusive flock on the lock file
    other = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        with lock.try_writing() as held:
            assert not held
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
    with lock.try_writing() as held:
        assert held
    # a collector in this process
    inside, leave = threading.Event(), threading.Event()

    def holder() -> None:
        with lock.collecting():
            inside.set()
            leave.wait(5)
    t = threading.Thread(target=holder)
    t.start()
    inside.wait(5)
    with lock.try_writing() as held:
        assert not held
    leave.set()
    t.join(5)
    with lock.writing():  # and nothing was left held
        pass
