"""The bridge on a real mount: ordinary `cp` between subtrees takes the native route when
the content is known (/ipfs -> /mfs links the DAG, /s3 -> /s3 is a server-side copy,
/mfs -> /s3 -> /mfs comes back as the same CID), every destination names its source in
`user.mcpfs.source`, and `mcpfs cp`/`where`/`verify` work through the daemon."""

from __future__ import annotations

import json
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


def s3_bytes_out(stats: dict) -> int:
    return stats.get("Backends", {}).get("s3", {}).get("BytesOut", 0)


def daemon_stats() -> dict:
    return json.loads(mcpfs("status", "--json").stdout)["Stats"]


def test_cp_s3_to_s3_is_a_server_side_copy(s3_mnt, raw, bucket, tmp_path):
    data = pattern_bytes(24 * MiB, 5)
    raw.put_object(Bucket=bucket, Key="src/model.bin", Body=data, Metadata={"run": "7"})
    raw.create_bucket(Bucket=bucket + "-b")
    b = s3_mnt / "s3"
    assert (b / bucket / "src/model.bin").stat().st_size == len(data)
    before = daemon_stats()
    run("cp", str(b / bucket / "src/model.bin"), str(b / (bucket + "-b") / "copy.bin"))
    after = daemon_stats()
    # the bytes were read through the mount, but none went back up: a CopyObject
    assert s3_bytes_out(after) == s3_bytes_out(before)
    ops = after["Backends"]["s3"]["Ops"]
    assert ops["copy"]["Count"] == before["Backends"]["s3"]["Ops"].get("copy", {}).get(
        "Count", 0) + 1
    head = raw.head_object(Bucket=bucket + "-b", Key="copy.bin")
    assert head["Metadata"]["mcpfs-source"] == f"/s3/{bucket}/src/model.bin"
    assert head["Metadata"]["run"] == "7"  # the source's metadata is kept
    assert raw.get_object(Bucket=bucket + "-b", Key="copy.bin")["Body"].read() == data
    dst = b / (bucket + "-b") / "copy.bin"
    assert xattr(dst, "user.mcpfs.source") == f"/s3/{bucket}/src/model.bin"
    assert after["Bridge"]["Native"]["Count"] == before["Bridge"]["Native"]["Count"] + 1


def test_mfs_to_s3_and_back_is_the_same_cid_without_reimport(s3_mnt, raw, bucket,
                                                              mcpfs_home, tmp_path):
    src = tmp_path / "w.bin"
    data = pattern_bytes(12 * MiB + 77, 9)
    src.write_bytes(data)
    m, s = s3_mnt / "mfs", s3_mnt / "s3" / bucket
    # a DAG of another profile in MFS (kubo's `files write` defaults would re-chunk it)
    cid = mcpfs("add", "-Q", "--profile", "unixfs-v1-2025", str(src)).stdout.strip()
    mcpfs("files", "cp", f"/ipfs/{cid}", "/w.bin")
    run("cp", str(m / "w.bin"), str(s / "w.bin"))
    head = raw.head_object(Bucket=bucket, Key="w.bin")
    assert head["Metadata"]["ipfs-cid"] == cid
    assert head["Metadata"]["mcpfs-source"] == "/mfs/w.bin"
    assert xattr(s / "w.bin", "user.mcpfs.cid") == cid
    before = blocks(mcpfs_home)
    run("cp", str(s / "w.bin"), str(m / "back.bin"))
    assert xattr(m / "back.bin", "user.mcpfs.cid") == cid
    assert xattr(m / "back.bin", "user.mcpfs.source") == f"/s3/{bucket}/w.bin"
    added = new_blocks(before, blocks(mcpfs_home))
    assert len(added) == 1 and max(added.values()) < 1024, added  # the new MFS root only
    assert (m / "back.bin").read_bytes() == data
