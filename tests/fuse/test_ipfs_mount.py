"""/ipfs on a real mount, driven by real tools."""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from mcpfs.backends.ipfs.add import Adder
from mcpfs.backends.ipfs.importer import ImportParams
from tests.conftest import pattern_bytes
from tests.vfs.conftest import add_bytes, add_dir

from .conftest import mcpfs, run


def test_root_lists_ipfs_and_mfs(mnt):
    assert sorted(os.listdir(mnt)) == ["ipfs", "mfs"]
    assert "dr-x" in run("ls", "-ld", str(mnt / "ipfs")).stdout


def test_cat_ls_stat_and_mmap(repo, daemon, tmp_path):
    data = pattern_bytes(2_000_000, 5)
    tree = add_dir(repo, {"big.bin": data, "d": {"small.txt": b"small\n"}})
    link = Adder(repo.store, ImportParams()).symlink("big.bin")
    pinned = add_bytes(repo, b"pinned\n").cid
    repo.pins.add(pinned)
    mnt = daemon.start()
    base = mnt / "ipfs" / str(tree.cid)
    assert run("cat", str(base / "d/small.txt")).stdout == "small\n"
    copy = tmp_path / "copy.bin"
    run("cp", str(base / "big.bin"), str(copy))
    assert copy.read_bytes() == data
    assert os.stat(base / "big.bin").st_size == len(data)
    assert run("stat", "-c", "%s %F", str(base / "big.bin")).stdout.strip() == \
        f"{len(data)} regular file"
    listing = run("ls", "-l", str(base)).stdout
    assert "big.bin" in listing and "small.txt" not in listing and listing.count("\n") == 3
    assert os.listdir(mnt / "ipfs") == [str(pinned)]
    with open(base / "big.bin", "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[1_500_000:1_500_100] == data[1_500_000:1_500_100]
        assert m[:] == data
    with open(base / "big.bin", "rb") as fh:
        fh.seek(1_234_567)
        assert fh.read(1000) == data[1_234_567:1_235_567]
    assert os.readlink(mnt / "ipfs" / str(link.cid)) == "big.bin"


def test_hamt_directory(repo, daemon):
    entries = {f"n{i:04d}": f"{i}\n".encode() for i in range(400)}
    hamt = add_dir(repo, entries, ImportParams(hamt_threshold=1000))
    mnt = daemon.start()
    assert sorted(os.listdir(mnt / "ipfs" / str(hamt.cid))) == sorted(entries)
    assert run("cat", str(mnt / "ipfs" / str(hamt.cid) / "n0399")).stdout == "399\n"


def test_invalid_cid_enoent_and_writes_erofs(repo, daemon):
    tree = add_dir(repo, {"f": b"x"})
    mnt = daemon.start()
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "ipfs" / "not-a-cid")
    base = mnt / "ipfs" / str(tree.cid)
    for action in (lambda: open(base / "f", "w"), lambda: open(base / "new", "w"),
                   lambda: os.mkdir(base / "d"), lambda: os.unlink(base / "f"),
                   lambda: os.rename(base / "f", base / "g")):
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == errno.EROFS
    assert "Read-only file system" in run("touch", str(base / "f"), check=False).stderr


def test_xattrs_equal_add_n(repo, daemon, tmp_path):
    data = pattern_bytes(700_000, 9)
    cid = add_bytes(repo, data).cid
    mnt = daemon.start()
    src = tmp_path / "same.bin"
    src.write_bytes(data)
    added = mcpfs("add", "-n", "-Q", str(src)).stdout.strip()
    got = run("getfattr", "--only-values", "-n", "user.mcpfs.cid",
              str(mnt / "ipfs" / str(cid))).stdout
    assert got == added == str(cid)
    assert os.getxattr(mnt / "ipfs" / str(cid), "user.mcpfs.size") == b"700000"
    assert os.getxattr(mnt / "ipfs" / str(cid), "user.mcpfs.backend") == b"ipfs"


def test_corrupt_and_missing_blocks(repo, daemon):
    good = add_bytes(repo, b"good\n").cid
    bad_file = add_dir(repo, {"bad": pattern_bytes(600_000, 1), "ok": b"ok\n"})
    leaf = next(iter(repo.reader.node(repo.reader.resolve(bad_file.cid, ["bad"]))[0].links)).cid
    repo.flatfs.path_of(leaf).write_bytes(b"corrupted!")
    missing = add_dir(repo, {"gone": pattern_bytes(300_000, 2)})
    gone_leaf = repo.reader.node(repo.reader.resolve(missing.cid, ["gone"]))[0].links[1].cid
    repo.flatfs.path_of(gone_leaf).unlink()
    mnt = daemon.start()
    result = run("cat", str(mnt / "ipfs" / str(bad_file.cid) / "bad"), check=False)
    assert result.returncode and "Input/output error" in result.stderr
    assert run("cat", str(mnt / "ipfs" / str(bad_file.cid) / "ok")).stdout == "ok\n"
    assert run("cat", str(mnt / "ipfs" / str(good))).stdout == "good\n"
    result = run("cat", str(mnt / "ipfs" / str(missing.cid) / "gone"), check=False)
    assert result.returncode and "Input/output error" in result.stderr
    log = daemon.log_text()
    assert f"corrupt block {leaf}" in log and str(gone_leaf) in log
