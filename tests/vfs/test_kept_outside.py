"""A write kept after a failed commit through the mount (vfs/write_back.py: kept()) is
superseded by changes made outside the mount too: ``mcpfs files cp/rm/mv`` (the control
routes, straight to MFS) and ``mcpfs cp`` (the bridge's transfers). Otherwise the next
start would commit the older kept bytes over what those commands put there."""

from __future__ import annotations

import errno
import os

import trio

from mcpfs.bridge.transfers import Transfers
from mcpfs.config import paths
from mcpfs.control.common import Ctx
from mcpfs.control import routes_files
from mcpfs.daemon import build_bridge
from mcpfs.errors import McpfsError
from mcpfs.mounts import build_mounts
from mcpfs.stats import Stats
from mcpfs.vfs import VFS

from .conftest import add_bytes


async def kept_write(vfs: VFS, drv, monkeypatch, name: str) -> None:
    """Write /mfs/``name`` while commits fail: close() is EIO, the spool kept for the next
    start with a failed row."""
    mount = vfs.mounts["mfs"]

    async def broken(writer):
        raise McpfsError("backend down", errno=errno.EIO)
    monkeypatch.setattr(mount, "commit", broken)
    folder = (await vfs.lookup(1, "mfs")).ino
    fh, _ = await vfs.create(folder, name, os.O_WRONLY | os.O_CREAT)
    await vfs.write(fh, 0, b"older")
    try:
        await vfs.flush(fh)
    except McpfsError as exc:
        assert exc.errno == errno.EIO
    await vfs.release(fh)
    monkeypatch.undo()
    assert [r.path for r in drv.vfs.journal.pending()] == [name]


async def nothing_replayed(drv) -> None:
    fresh = VFS(build_mounts(drv.repo), paths().cache_dir / "spool", drv.vfs.journal)
    assert drv.vfs.journal.pending() == []
    assert await fresh.recover() == []


async def test_files_cp_rm_and_mv_supersede_a_kept_write(drv, monkeypatch):
    ctx = Ctx(drv.repo, Stats(), vfs=drv.vfs)
    newer = add_bytes(drv.repo, b"newer").cid
    await kept_write(drv.vfs, drv, monkeypatch, "c")
    await routes_files.files_cp(ctx, arg=[f"/ipfs/{newer}", "/c"], parents=False,
                                flush=True)
    await nothing_replayed(drv)
    assert await drv.repo.mfs.read("/c") == b"newer"
    await kept_write(drv.vfs, drv, monkeypatch, "r")
    await drv.repo.mfs.write("/r", b"server", create=True)
    await routes_files.files_rm(ctx, arg=["/r"], recursive=False, force=False, flush=True)
    await nothing_replayed(drv)
    await kept_write(drv.vfs, drv, monkeypatch, "m")
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
    await kept_write(vfs, drv, monkeypatch, "t")
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.transfers.serve)
        ids = await bridge.transfers.submit(f"/ipfs/{newer}", "/mfs/t")
        await bridge.transfers.wait(ids)
        nursery.cancel_scope.cancel()
    await nothing_replayed(drv)
    assert await drv.repo.mfs.read("/t") == b"newer"
    bridge.db.close()
