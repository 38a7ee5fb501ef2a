"""/ipfs through the VFS, without a kernel."""

from __future__ import annotations

import errno
import logging
import os

from mcpfs.backends.ipfs.add import Adder
from mcpfs.backends.ipfs.importer import ImportParams
from mcpfs.mounts.base import DIR, FILE, SYMLINK
from mcpfs.vfs.inodes import ROOT_INODE
from tests.conftest import pattern_bytes

from .conftest import add_bytes, add_dir, only_hash


async def test_root_lists_ipfs_and_mfs(drv):
    assert sorted(await drv.ls("")) == ["ipfs", "mfs"]
    assert (await drv.stat("ipfs")).attr.kind == DIR
    assert await drv.errno_of(drv.vfs.lookup(ROOT_INODE, "s3")) == errno.ENOENT


async def test_file_reads_and_random_offsets(drv):
    data = pattern_bytes(3 * 262144 + 1234)
    cid = add_bytes(drv.repo, data).cid
    entry = await drv.stat(f"ipfs/{cid}")
    assert entry.attr.kind == FILE and entry.attr.size == len(data)
    assert entry.attr_timeout >= 3600 and entry.entry_timeout >= 3600
    assert await drv.cat(f"ipfs/{cid}") == data
    fh, _ = await drv.vfs.open(await drv.ino(f"ipfs/{cid}"), os.O_RDONLY)
    for off in (0, 262143, 262144, 500000, len(data) - 10, len(data) + 5):
        assert await drv.vfs.read(fh, off, 4096) == data[off:off + 4096]
    await drv.vfs.release(fh)


async def test_ls_ipfs_lists_pinned_roots(drv):
    a = add_bytes(drv.repo, b"pinned").cid
    add_bytes(drv.repo, b"not pinned")
    drv.repo.pins.add(a)
    assert list(await drv.ls("ipfs")) == [str(a)]


async def test_directories_plain_and_hamt(drv):
    tree = add_dir(drv.repo, {"a.txt": b"A", "sub": {"b.bin": pattern_bytes(300000)}})
    assert sorted(await drv.ls(f"ipfs/{tree.cid}")) == ["a.txt", "sub"]
    assert await drv.cat(f"ipfs/{tree.cid}/sub/b.bin") == pattern_bytes(300000)
    assert (await drv.stat(f"ipfs/{tree.cid}/sub")).attr.kind == DIR
    params = ImportParams(hamt_threshold=1000)
    entries = {f"file-{i:04d}": str(i).encode() for i in range(300)}
    hamt = add_dir(drv.repo, entries, params)
    listing = await drv.ls(f"ipfs/{hamt.cid}")
    assert sorted(listing) == sorted(entries)
    assert await drv.cat(f"ipfs/{hamt.cid}/file-0123") == b"123"
    assert await drv.errno_of(drv.stat(f"ipfs/{hamt.cid}/nope")) == errno.ENOENT


async def test_raw_leaf_and_symlink(drv):
    raw = add_bytes(drv.repo, b"raw leaf", ImportParams(cid_version=1, raw_leaves=True)).cid
    assert raw.codec_name == "raw"
    assert await drv.cat(f"ipfs/{raw}") == b"raw leaf"
    link = Adder(drv.repo.store, ImportParams()).symlink("../target")
    entry = await drv.stat(f"ipfs/{link.cid}")
    assert entry.attr.kind == SYMLINK
    assert await drv.vfs.readlink(entry.ino) == "../target"


async def test_invalid_cid_is_enoent(drv):
    assert await drv.errno_of(drv.stat("ipfs/not-a-cid")) == errno.ENOENT
    assert await drv.errno_of(drv.stat("ipfs/QmNotReallyACidAtAll")) == errno.ENOENT


async def test_missing_block_is_eio(drv, caplog):
    cid = only_hash(b"never stored")
    with caplog.at_level(logging.WARNING, "mcpfs"):
        assert await drv.errno_of(drv.stat(f"ipfs/{cid}")) == errno.EIO
    assert cid in caplog.text


async def test_corrupt_block_is_eio_and_logged(drv, caplog):
    good = add_bytes(drv.repo, b"good file").cid
    bad = add_bytes(drv.repo, pattern_bytes(1000, 7)).cid
    drv.repo.flatfs.path_of(bad).write_bytes(b"garbage")
    with caplog.at_level(logging.ERROR, "mcpfs"):
        assert await drv.errno_of(drv.stat(f"ipfs/{bad}")) == errno.EIO
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert await drv.cat(f"ipfs/{good}") == b"good file"


async def test_writes_are_erofs(drv):
    tree = add_dir(drv.repo, {"f": b"x"})
    base = await drv.ino(f"ipfs/{tree.cid}")
    f = await drv.ino(f"ipfs/{tree.cid}/f")
    ipfs = await drv.ino("ipfs")
    v = drv.vfs
    for coro in (v.create(base, "new", os.O_WRONLY), v.mkdir(base, "d"), v.unlink(base, "f"),
                 v.rmdir(ipfs, str(tree.cid)), v.symlink(base, "l", "f"),
                 v.open(f, os.O_WRONLY), v.open(f, os.O_RDWR), v.setattr(f, size=0),
                 v.rename(base, "f", base, "g")):
        assert await drv.errno_of(coro) == errno.EROFS


async def test_xattrs(drv):
    data = pattern_bytes(100000)
    cid = add_bytes(drv.repo, data).cid
    ino = await drv.ino(f"ipfs/{cid}")
    assert (await drv.vfs.getxattr(ino, "user.mcpfs.cid")).decode() == only_hash(data)
    assert await drv.vfs.getxattr(ino, "user.mcpfs.size") == b"100000"
    assert await drv.vfs.getxattr(ino, "user.mcpfs.backend") == b"ipfs"
    assert "user.mcpfs.cid" in await drv.vfs.listxattr(ino)
    assert await drv.errno_of(drv.vfs.getxattr(ino, "user.other")) == errno.ENODATA


async def test_forget_drops_inodes(drv):
    cid = add_bytes(drv.repo, b"x").cid
    ino = await drv.ino(f"ipfs/{cid}")
    before = len(drv.vfs.inodes)
    drv.vfs.forget(ino, 1)
    assert len(drv.vfs.inodes) == before - 1
    assert await drv.errno_of(drv.vfs.getattr(ino)) == errno.ESTALE
