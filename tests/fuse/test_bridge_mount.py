"""The bridge on a real mount: ordinary `cp` between subtrees takes the native route when
the content is known (/ipfs -> /mfs links the DAG, /s3 -> /s3 is a server-side copy,
/mfs -> /s3 -> /mfs comes back as the same CID), every destination names its source in
`user.mcpfs.source`, and `mcpfs cp`/`where`/`verify` work through the daemon."""

from __future__ import annotations

import os

from tests.conftest import pattern_bytes

from .conftest import mcpfs, run

MiB = 1 << 20


def blocks(mcpfs_home) -> dict[str, int]:
    """Block file name -> size, of the whole blockstore."""
    root = os.path.join(mcpfs_home, "state", "ipfs", "blocks")
    return {n: os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root)
            for n in names if n.endswith(".data")}


def new_blocks(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in after.items() if k not in before}


def xattr(path, name: str) -> str:
    return os.getxattr(path, name).decode()


def test_cp_ipfs_to_mfs_links_the_dag_and_writes_no_block(mnt, mcpfs_home, tmp_path):
    src = tmp_path / "big.bin"
    data = pattern_bytes(256 * MiB, 3)
    src.write_bytes(data)
    # another profile than MFS's (CIDv1, raw leaves, 1 MiB chunks): re-importing these bytes
    # into /mfs would write a whole new DAG
    cid = mcpfs("add", "-Q", "--profile", "unixfs-v1-2025", str(src)).stdout.strip()
    before = blocks(mcpfs_home)
    run("cp", str(mnt / "ipfs" / cid), str(mnt / "mfs" / "copy.bin"))
    # the one new block is MFS's new root directory (it names copy.bin); no content block
    added = new_blocks(before, blocks(mcpfs_home))
    assert len(added) == 1 and max(added.values()) < 1024, added
    dst = mnt / "mfs" / "copy.bin"
    assert xattr(dst, "user.mcpfs.cid") == cid
    assert xattr(dst, "user.mcpfs.source") == f"/ipfs/{cid}"
    assert "user.mcpfs.source" in os.listxattr(dst)
    assert run("cmp", str(src), str(dst)).returncode == 0
    assert mcpfs("files", "stat", "--hash", "/copy.bin").stdout.strip() == cid


def test_a_write_of_other_bytes_is_imported_normally(mnt, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(pattern_bytes(3 * MiB, 1))
    cid = mcpfs("add", "-Q", "--cid-version", "1", str(src)).stdout.strip()
    other = pattern_bytes(3 * MiB, 2)
    # a process that reads one file and writes different bytes: no link, its own CID
    code = ("import sys; s = open(sys.argv[1], 'rb'); d = open(sys.argv[2], 'wb');"
            "s.read(); d.write(open(sys.argv[3], 'rb').read()); d.close(); s.close()")
    (tmp_path / "other.bin").write_bytes(other)
    run("python3", "-c", code, str(mnt / "ipfs" / cid), str(mnt / "mfs" / "o.bin"),
        str(tmp_path / "other.bin"))
    assert (mnt / "mfs" / "o.bin").read_bytes() == other
    assert xattr(mnt / "mfs" / "o.bin", "user.mcpfs.cid") == \
        mcpfs("add", "-n", "-Q", str(tmp_path / "other.bin")).stdout.strip()
