"""A write kept after a failed commit through the mount (vfs/write_back.py: kept()) is
superseded by changes made outside the mount too: ``mcpfs files cp/rm/mv`` (the control
routes, straight to MFS) and ``mcpfs cp`` (the bridge's transfers). Otherwise the next
start would commit the older kept bytes over what those commands put there. (And a
transfer sent before the transfers serve, while the daemon starts.)"""

from __future__ import annotations


import trio
import trio.testing

from mcpfs.bridge.transfers import Transfers
from mcpfs.config import paths
from mcpfs.control.common import Ctx
from mcpfs.control import routes_files
from mcpfs.daemon import build_bridge
from mcpfs.mounts import build_mounts
from mcpfs.stats import Stats
from mcpfs.vfs import VFS

from .conftest import add_bytes
from .test_mfs import failed_close


async def kept_write(drv, monkeypatch, name: str) -> None:
    await failed_close(drv, monkeypatch, name)
    assert [r.path for r in drv.vfs.journal.pending()] == [name]


async def nothing_replayed(drv) -> None:
    fresh = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", drv.vfs.journal)
    assert drv.vfs.journal.pending() == []
    assert await fresh.recover() == []


async def test_files_cp_rm_and_mv_supersede_a_kept_write(drv, monkeypatch):
    ctx = Ctx(drv.repo, Stats(), vfs=drv.vfs)
    newer = add_bytes(drv.repo, b"newer").cid
    await kept_write(drv, monkeypatch, "c")
    await routes_files.files_cp(ctx, arg=[f"/ipfs/{newer}", "/c"], parents=False,
                                flush=True)
    await nothing_replayed(drv)
    assert await drv.repo.mfs.read("/c") == b"newer"
    await kept_write(drv, monkeypatch, "r")
    await drv.repo.mfs.write("/r", b"server", create=True)
    await routes_files.files_rm(ctx, arg=["/r"], recursive=False, force=False, flush=True)
    await nothing_replayed(drv)
    await kept_write(drv, monkeypatch, "m")
    await routes_files.files_mv(ctx, arg=["/c", "/m"], flush=True)
    await nothing_replayed(drv)
    assert await drv.repo.mfs.read("/m") == b"newer"


async def test_a_transfer_supersedes_a_kept_write(drv, monkeypatch):
    state = paths().state_dir
    bridge = build_bridge(state, drv.repo, None, Stats())
    vfs = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", drv.vfs.journal, bridge)
    bridge.transfers = Transfers(bridge, vfs, paths().cache_dir)
    drv.vfs = vfs
    newer = add_bytes(drv.repo, b"newer").cid
    await kept_write(drv, monkeypatch, "t")
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.transfers.serve)
        ids = await bridge.transfers.submit(f"/ipfs/{newer}", "/mfs/t")
        await bridge.transfers.wait(ids)
        nursery.cancel_scope.cancel()
    await nothing_replayed(drv)
    assert await drv.repo.mfs.read("/t") == b"newer"
    bridge.db.close()


async def test_a_move_onto_itself_keeps_the_kept_write_and_paths_are_normalised(
        drv, monkeypatch):
    """``files mv /d/r /d/`` moves nothing: the kept write of /d/r stays (the next start
    commits it). ``files cp`` to ``/./c`` is the path ``c`` and supersedes its kept write."""
    ctx = Ctx(drv.repo, Stats(), vfs=drv.vfs)
    await drv.repo.mfs.write("/d/r", b"committed", create=True, parents=True)
    await failed_close(drv, monkeypatch, "d/r")
    await routes_files.files_mv(ctx, arg=["/d/r", "/d/"], flush=True)
    assert [r.path for r in drv.vfs.journal.pending()] == ["d/r"]
    await failed_close(drv, monkeypatch, "c")
    assert [r.path for r in drv.vfs.journal.pending()] == ["d/r", "c"]
    newer = add_bytes(drv.repo, b"newer").cid
    await routes_files.files_cp(ctx, arg=[f"/ipfs/{newer}", "/./c"], parents=False,
                                flush=True)
    assert [r.path for r in drv.vfs.journal.pending()] == ["d/r"]


async def test_a_symlink_or_directory_made_at_a_kept_path_supersedes_it(drv, monkeypatch):
    for name in ("s", "m"):
        await kept_write(drv, monkeypatch, name)
        folder = await drv.ino("mfs")
        if name == "s":
            await drv.vfs.symlink(folder, name, "target")
        else:
            await drv.vfs.mkdir(folder, name)
        await nothing_replayed(drv)


async def test_a_transfer_sent_before_transfers_serve_waits_for_it(drv):
    """The control socket is up before the mount is live, and transfers start only then:
    a ``mcpfs cp`` sent meanwhile waits for them (it failed an assertion: HTTP 500)."""
    bridge = build_bridge(paths().state_dir, drv.repo, None, Stats())
    vfs = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", drv.vfs.journal, bridge)
    bridge.transfers = Transfers(bridge, vfs, paths().cache_dir)
    newer = add_bytes(drv.repo, b"copied while the daemon started").cid
    got = []

    async def submit():
        got.extend(await bridge.transfers.submit(f"/ipfs/{newer}", "/mfs/early"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await nursery.start(bridge.transfers.serve)
        with trio.fail_after(10):
            while not got:
                await trio.sleep(0.01)
        await bridge.transfers.wait(got)
        nursery.cancel_scope.cancel()
    assert await drv.repo.mfs.read("/early") == b"copied while the daemon started"
    bridge.db.close()
