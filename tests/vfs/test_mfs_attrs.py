"""/mfs files keep the mode and mtime set through the mount (mounts/kept_attrs.py), beside
the DAG: CIDs stay those of the bytes. Without a kernel; tests/fuse/test_mfs_mount.py runs
rsync -a, cp -p, chmod +x and a restart on a real mount."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import time

from mcpfs.backends.ipfs.node import Repo
from mcpfs.config import paths
from mcpfs.errors import McpfsError
from mcpfs.mounts.mfs import MfsMount

from .conftest import only_hash

OLD = 1_600_000_000_123_456_789


async def test_chmod_and_utimes_stick_and_the_cid_stays_that_of_the_bytes(drv):
    await drv.write_file("mfs/a.sh", b"#!/bin/sh\n")
    ino = await drv.ino("mfs/a.sh")
    entry = await drv.vfs.setattr(ino, mtime_ns=OLD, perm=0o755)
    assert entry.attr.mtime_ns == OLD and stat.S_IMODE(entry.mode) == 0o755
    assert (await drv.ls("mfs"))["a.sh"].mtime_ns == OLD
    assert (await drv.vfs.getxattr(ino, "user.mcpfs.cid")).decode() == only_hash(b"#!/bin/sh\n")
    await drv.vfs.setattr(ino, perm=0o700)  # a mode alone keeps the mtime
    attr = (await drv.stat("mfs/a.sh")).attr
    assert (attr.perm, attr.mtime_ns) == (0o700, OLD)


async def test_a_write_sets_the_mtime_and_keeps_the_mode(drv):
    before = time.time_ns()
    await drv.write_file("mfs/f", b"one")
    assert (await drv.stat("mfs/f")).attr.mtime_ns >= before
    await drv.vfs.setattr(await drv.ino("mfs/f"), mtime_ns=OLD, perm=0o640)
    before = time.time_ns()
    await drv.write_file("mfs/f", b"two, longer")  # O_TRUNC + writes: a new CID
    attr = (await drv.stat("mfs/f")).attr
    assert attr.mtime_ns >= before and attr.perm == 0o640


async def test_times_set_on_an_open_file_are_committed_with_it(drv):
    """cp -p: futimens and fchmod before close()."""
    parent = await drv.ino("mfs")
    fh, entry = await drv.vfs.create(parent, "p", os.O_WRONLY | os.O_CREAT)
    await drv.vfs.write(fh, 0, b"payload")
    await drv.vfs.setattr(entry.ino, mtime_ns=OLD, perm=0o600)
    assert (await drv.vfs.getattr(entry.ino)).attr.mtime_ns == OLD  # shown before close
    await drv.vfs.flush(fh)
    await drv.vfs.release(fh)
    attr = (await drv.stat("mfs/p")).attr
    assert (attr.mtime_ns, attr.perm) == (OLD, 0o600)


async def test_rename_moves_them_unlink_drops_them(drv):
    await drv.repo.mfs.mkdir("/d")
    await drv.write_file("mfs/d/x", b"x")
    await drv.vfs.setattr(await drv.ino("mfs/d/x"), mtime_ns=OLD, perm=0o600)
    await drv.vfs.rename(await drv.ino("mfs/d"), "x", await drv.ino("mfs"), "y", 0)
    assert (await drv.stat("mfs/y")).attr.mtime_ns == OLD
    await drv.vfs.rename(await drv.ino("mfs"), "y", await drv.ino("mfs/d"), "x", 0)
    await drv.vfs.rename(await drv.ino("mfs"), "d", await drv.ino("mfs"), "e", 0)  # a dir
    assert (await drv.stat("mfs/e/x")).attr.perm == 0o600
    await drv.vfs.unlink(await drv.ino("mfs/e"), "x")
    await drv.repo.mfs.write("/e/x", b"x", create=True)  # same bytes, same CID, new file
    assert (await drv.stat("mfs/e/x")).attr.perm is None


async def test_a_change_made_outside_the_mount_shows_the_defaults(drv):
    await drv.write_file("mfs/o", b"v1")
    await drv.vfs.setattr(await drv.ino("mfs/o"), mtime_ns=OLD, perm=0o600)
    await drv.repo.mfs.write("/o", b"v2 from the CLI", truncate=True)
    attr = (await drv.stat("mfs/o")).attr
    assert attr.perm is None and attr.mtime_ns != OLD


async def test_they_survive_a_restart(drv):
    await drv.write_file("mfs/kept", b"kept")
    await drv.vfs.setattr(await drv.ino("mfs/kept"), mtime_ns=OLD, perm=0o751)
    mount = drv.vfs.mounts["mfs"]
    await mount.aclose()  # unmount: saved
    fresh = MfsMount(Repo(paths().repo_dir))
    attr = await fresh.lookup("kept")
    assert (attr.mtime_ns, attr.perm) == (OLD, 0o751)
    await fresh.attrs.close()


async def test_directories_and_symlinks_keep_their_defaults(drv):
    await drv.repo.mfs.mkdir("/dir")
    ino = await drv.ino("mfs/dir")
    await drv.vfs.setattr(ino, mtime_ns=OLD, perm=0o700)  # accepted, not stored
    assert (await drv.stat("mfs/dir")).attr.perm is None


async def test_fchmod_of_a_deleted_file_does_not_touch_its_successor(drv):
    await drv.write_file("mfs/gone", b"old")
    ino = await drv.ino("mfs/gone")
    fh, _ = await drv.vfs.open(ino, os.O_RDONLY)
    await drv.vfs.unlink(await drv.ino("mfs"), "gone")
    await drv.write_file("mfs/gone", b"new file, same name")
    await drv.vfs.setattr(ino, mtime_ns=OLD, perm=0o700)  # fchmod/futimens on the old fd
    await drv.vfs.release(fh)
    attr = (await drv.stat("mfs/gone")).attr
    assert attr.perm is None and attr.mtime_ns != OLD


async def test_a_commit_whose_cid_cannot_be_resolved_still_succeeds(drv, monkeypatch):
    """The CID of a committed file missing from the caches is resolved for its row; if
    that fails (renamed meanwhile) the commit stands and close() succeeds."""
    mount = drv.vfs.mounts["mfs"]
    real_commit, real_resolve = mount._commit_content, mount.resolve

    async def without_cid(writer):
        return dataclasses.replace(await real_commit(writer), cid=None)

    async def resolve(path):
        if path == "c":
            raise McpfsError("/mfs/c: gone meanwhile", errno=errno.ENOENT)
        return await real_resolve(path)
    monkeypatch.setattr(mount, "_commit_content", without_cid)
    monkeypatch.setattr(mount, "resolve", resolve)
    await drv.write_file("mfs/c", b"committed")  # close() succeeds
    monkeypatch.undo()
    assert await drv.cat("mfs/c") == b"committed"
    assert await drv.repo.mfs.read("/c") == b"committed"
