"""MFS directory nodes held in memory between syncs (mfs_pending), on a real Repo: they are
readable at once, written to flatfs only when reachable from a synced root, come back from
the redo log after a crash, and stay bounded in memory."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from mcpfs.backends.ipfs import mfs as mfs_module
from mcpfs.backends.ipfs.node import Repo
from mcpfs.backends.ipfs.pins import walk_dag

HOUR = 3600.0  # a flusher interval that never ticks during a test


@asynccontextmanager
async def deferred(where):
    """The daemon's mode on a Repo at ``where``: a flusher runs (here never ticking), so
    commits are deferred; (repo, its MFS). Leaving it is an unmount (the final sync)."""
    repo = Repo(where)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: repo.mfs.run_flusher(HOUR,
                                                                     task_status=task_status))
        yield repo, repo.mfs
        nursery.cancel_scope.cancel()


async def write_files(mfs, count: int, folder: str = "/d", start: int = 0) -> list:
    roots = []
    for i in range(start, start + count):
        await mfs.write(f"{folder}/f{i:03d}", b"file %d" % i, create=True, parents=True)
        roots.append(mfs.root())
    return roots


def in_flatfs(repo: Repo, cid) -> bool:
    return repo.flatfs.has(cid)


async def test_directory_nodes_stay_in_memory_until_a_sync(tmp_path):
    async with deferred(tmp_path / "repo") as (repo, mfs):
        roots = await write_files(mfs, 30)
        root = mfs.root()
        assert not in_flatfs(repo, root) and repo.store.has(root)
        small = mfs.tree.resolve(root, "/d/f007")  # a one-block file waits too
        assert not in_flatfs(repo, small) and await mfs.read("/d/f007") == b"file 7"
        # every reader sees the pending nodes: the tree, the UnixFS reader, a DAG walk
        assert len(await mfs.ls("/d")) == 30
        d_cid = mfs.tree.resolve(root, "/d")
        info = repo.reader.stat(d_cid)
        assert info.type == "directory" and info.blocks == 30
        assert len(list(walk_dag(repo.store, root))) == 32  # root, /d, 30 files
        await mfs.flush()
        assert in_flatfs(repo, root) and in_flatfs(repo, d_cid) and in_flatfs(repo, small)
        assert len(list(walk_dag(repo.flatfs, root))) == 32
        # the superseded versions of / and /d were never written
        assert not any(in_flatfs(repo, old) for old in roots[:-1])


async def test_nodes_of_a_killed_daemon_come_back_from_the_log(tmp_path):
    where = tmp_path / "repo"
    async with deferred(where) as (repo, mfs):
        await write_files(mfs, 25)
        await mfs.mkdir("/e/f/g", parents=True)
        root = mfs.root()
        assert not in_flatfs(repo, root)
        assert repo.store.log_path.stat().st_size > 0
        # "kill -9": nothing is synced; a new process opens the same repo
        again = Repo(where)
        assert again.mfs.root() == root
        assert len(list(walk_dag(again.flatfs, root))) == 30  # /, /d, 25 files, e, f, g: all on disk now
        assert [e["Name"] for e in again.mfs.tree.ls(root, "/d")][:2] == ["f000", "f001"]
        assert not again.store.log_path.exists()  # replayed, synced, removed


async def test_a_torn_log_record_is_ignored(tmp_path):
    where = tmp_path / "repo"
    async with deferred(where) as (repo, mfs):
        await write_files(mfs, 5)
        log_path = repo.store.log_path
        log_path.write_bytes(log_path.read_bytes()[:-3])  # the last record torn
        again = Repo(where)
        root = again.mfs.root()  # an older root whose nodes all came back, never a broken one
        assert list(walk_dag(again.flatfs, root))


async def test_superseded_nodes_are_dropped_one_sync_later(tmp_path):
    async with deferred(tmp_path / "repo") as (repo, mfs):
        roots = await write_files(mfs, 20)
        await mfs.flush()
        assert repo.store.has(roots[0])  # superseded, still readable for older readers
        held = repo.store.pending_bytes
        assert held > 0  # the 19 superseded versions of / and /d, kept for older readers
        await write_files(mfs, 1, start=20)
        await mfs.flush()
        assert repo.store.pending_bytes == 0
        assert not repo.store.has(roots[0])  # never written: gone (docs/SEMANTICS.md)
        assert len(await mfs.ls("/d")) == 21


async def test_pending_memory_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(mfs_module, "PENDING_MAX", 1)
    async with deferred(tmp_path / "repo") as (repo, mfs):
        await write_files(mfs, 3)
        assert in_flatfs(repo, mfs.root())  # spilled at the commit, no sync needed
        assert repo.store.pending_bytes == 0


async def test_gc_keeps_files_under_pending_directories(tmp_path):
    async with deferred(tmp_path / "repo") as (repo, mfs):
        await write_files(mfs, 10)
        await trio.to_thread.run_sync(repo.gc)
        for i in range(10):
            assert await mfs.read(f"/d/f{i:03d}") == b"file %d" % i
        await mfs.flush()
        assert len(list(walk_dag(repo.flatfs, mfs.root()))) == 12


async def test_the_final_sync_writes_everything_and_removes_the_log(tmp_path):
    where = tmp_path / "repo"
    async with deferred(where) as (repo, mfs):
        await write_files(mfs, 8)
        root = mfs.root()
    assert not repo.store.log_path.exists()
    assert repo.mfs.records.read_synced() == root
    assert len(list(walk_dag(repo.flatfs, root))) == 10


@pytest.mark.parametrize("count", [1, 40])
async def test_cids_are_the_same_deferred_or_not(tmp_path, count):
    direct = Repo(tmp_path / "direct")
    await write_files(direct.mfs, count)
    async with deferred(tmp_path / "repo") as (repo, mfs):
        await write_files(mfs, count)
        assert mfs.root() == direct.mfs.root()


async def test_spills_and_syncs_racing_lose_nothing(tmp_path, monkeypatch):
    """Spills at almost every commit (tiny PENDING_MAX) while the flusher syncs every
    50 ms and readers list: after a crash every written file is there, every block of
    the root is on disk, and no reader ever met a missing block."""
    monkeypatch.setattr(mfs_module, "PENDING_MAX", 4096)
    where = tmp_path / "repo"
    repo = Repo(where)
    written: dict[str, bytes] = {}
    errors: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: repo.mfs.run_flusher(
            0.05, task_status=task_status))

        async def writer(folder: str) -> None:
            for i in range(40):
                path, data = f"{folder}/f{i}", b"%s %d" % (folder.encode(), i) * (i + 1)
                await repo.mfs.write(path, data, create=True, parents=True)
                written[path] = data

        async def reader() -> None:
            for _ in range(200):
                try:
                    for folder in ("/a", "/b/c"):
                        if await repo.mfs.exists(folder):
                            await repo.mfs.ls(folder)
                except Exception as exc:  # noqa: BLE001 - collected for the assert
                    errors.append(exc)
                await trio.sleep(0.001)

        async with trio.open_nursery() as work:
            for folder in ("/a", "/b/c", "/a/deeper"):
                work.start_soon(writer, folder)
            work.start_soon(reader)
        root = repo.mfs.root()
        again = Repo(where)  # "kill -9": the flusher never made a final sync
        assert again.mfs.root() == root
        assert len(list(walk_dag(again.flatfs, root))) >= len(written)
        for path, data in written.items():
            assert await again.mfs.read(path) == data
        nursery.cancel_scope.cancel()
    assert errors == []


async def test_a_late_sync_of_an_older_root_never_records_missing_blocks(tmp_path,
                                                                        monkeypatch):
    """A sync that captured a root before spills dropped that root's superseded nodes
    (the flusher's sync runs beside mutations) syncs the newest committed root instead:
    the synced root file never names a block that is not on disk."""
    async with deferred(tmp_path / "repo") as (repo, mfs):
        await write_files(mfs, 5)
        old = mfs._committed  # (root, number): what a sync captured, late
        monkeypatch.setattr(mfs_module, "PENDING_MAX", 1)  # every commit spills now
        await write_files(mfs, 5, start=5)
        await trio.to_thread.run_sync(lambda: mfs._sync_now(*old))
        synced = mfs.records.read_synced()
        assert len(list(walk_dag(repo.flatfs, synced))) >= 2
