"""The bridge on a real mount: ordinary `cp` between subtrees takes the native route when
the content is known (/ipfs -> /mfs links the DAG, /s3 -> /s3 is a server-side copy,
/mfs -> /s3 -> /mfs comes back as the same CID), every destination names its source in
`user.mcpfs.source`, and `mcpfs cp`/`where`/`verify` work through the daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mcpfs.mounts.s3 import OPEN_READ
from tests.conftest import pattern_bytes

from .conftest import CLI, mcpfs, mount_ops, run
from .test_s3_mount import exists

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
    before, ops_before = blocks(mcpfs_home), mount_ops()
    run("cp", str(mnt / "ipfs" / cid), str(mnt / "mfs" / "copy.bin"))
    ops = mount_ops()
    # coreutils cp sends copy_file_range: one request for the whole file (not read: a
    # link), no write request, no read of the source
    assert ops[("ipfs", "copy_file_range")] == ops_before.get(("ipfs", "copy_file_range"),
                                                              0) + 1
    for key in (("mfs", "write"), ("ipfs", "read")):
        assert ops.get(key, 0) == ops_before.get(key, 0), key
    # the one new block is MFS's new root directory (it names copy.bin); no content block.
    # Directory nodes reach flatfs at the sync (docs/SEMANTICS.md): flush first.
    mcpfs("files", "flush")
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
    # one copy_file_range request, answered without reading: a CopyObject, no byte out;
    # what came in is only the source's open (one GET of its first OPEN_READ bytes)
    assert s3_bytes_out(after) == s3_bytes_out(before)
    assert after["Backends"]["s3"]["BytesIn"] - before["Backends"]["s3"]["BytesIn"] \
        == OPEN_READ
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
    mcpfs("files", "flush")  # directory nodes reach flatfs at the sync
    added = new_blocks(before, blocks(mcpfs_home))
    assert len(added) == 1 and max(added.values()) < 1024, added  # the new MFS root only
    assert (m / "back.bin").read_bytes() == data


# ---------------------------------------------------------------- mcpfs cp, where, verify
def test_mcpfs_cp_routes_where_and_verify(s3_mnt, raw, bucket, tmp_path):
    data = pattern_bytes(20 * MiB + 5, 21)
    src = tmp_path / "d.bin"
    src.write_bytes(data)
    cid = mcpfs("add", "-Q", str(src)).stdout.strip()
    m, s = s3_mnt / "mfs", s3_mnt / "s3" / bucket
    # /ipfs -> /mfs: a link
    out = mcpfs("cp", str(s3_mnt / "ipfs" / cid), str(m / "in/d.bin"))
    assert "(mfs-link)" in out.stderr
    assert xattr(m / "in/d.bin", "user.mcpfs.cid") == cid
    # /mfs -> /s3: streamed (the bytes must go up once), with the CID in the metadata
    out = mcpfs("cp", "/mfs/in/d.bin", f"/s3/{bucket}/d.bin")
    assert "(stream)" in out.stderr
    head = raw.head_object(Bucket=bucket, Key="d.bin")
    assert head["Metadata"]["ipfs-cid"] == cid
    assert head["Metadata"]["mcpfs-source"] == "/mfs/in/d.bin"
    assert raw.get_object(Bucket=bucket, Key="d.bin")["Body"].read() == data
    # /s3 -> /s3: server-side; into an existing directory keeps the name
    run("mkdir", str(s / "dir"))
    out = mcpfs("cp", f"/s3/{bucket}/d.bin", str(s / "dir"))
    assert "(s3-copy)" in out.stderr
    assert raw.head_object(Bucket=bucket, Key="dir/d.bin")["ContentLength"] == len(data)
    # /s3 -> /mfs: the recorded DAG is linked
    out = mcpfs("cp", str(s / "dir/d.bin"), "/mfs/back.bin")
    assert "(mfs-link)" in out.stderr
    assert xattr(m / "back.bin", "user.mcpfs.cid") == cid

    where = json.loads(mcpfs("where", "--json", cid).stdout)
    assert where["Identity"] == cid
    places = {loc["Location"] for loc in where["Locations"]}
    assert {"/mfs/in/d.bin", f"/s3/{bucket}/d.bin", f"/s3/{bucket}/dir/d.bin",
            "/mfs/back.bin", f"/ipfs/{cid}"} <= places
    assert mcpfs("where", str(s / "d.bin")).stdout.splitlines()[0] == f"identity {cid}"

    ok = mcpfs("verify", str(m / "back.bin"))
    assert all(line.startswith("ok ") for line in ok.stdout.splitlines()), ok.stdout
    # changed behind our back: verify says so, exit 1
    raw.put_object(Bucket=bucket, Key="dir/d.bin", Body=b"something else")
    bad = mcpfs("verify", str(m / "back.bin"), check=False)
    assert bad.returncode == 1
    assert f"changed  /s3/{bucket}/dir/d.bin" in bad.stdout
    assert f"ok       /s3/{bucket}/d.bin" in bad.stdout


def test_mcpfs_cp_recursive_and_errors(s3_mnt, bucket, tmp_path):
    m = s3_mnt / "mfs"
    run("mkdir", "-p", str(m / "tree/a/b"))
    for i, rel in enumerate(["x.txt", "a/y.bin", "a/b/z.bin"]):
        (m / "tree" / rel).write_bytes(pattern_bytes(100_000 * (i + 1), i))
    out = mcpfs("cp", "-r", str(m / "tree"), f"/s3/{bucket}/t")
    assert out.returncode == 0
    s = s3_mnt / "s3" / bucket / "t"
    for rel in ["x.txt", "a/y.bin", "a/b/z.bin"]:
        assert (s / rel).read_bytes() == (m / "tree" / rel).read_bytes()
    no_r = mcpfs("cp", str(m / "tree"), f"/s3/{bucket}/u", check=False)
    assert no_r.returncode == 1 and no_r.stderr.strip() == \
        "Error: /mfs/tree: is a directory (use -r)"
    missing = mcpfs("cp", "/mfs/nope", "/mfs/x", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: ")
    assert "Traceback" not in missing.stderr
    outside = mcpfs("cp", str(tmp_path), "/mfs/x", check=False)
    assert outside.returncode == 1 and "not inside an mcpfs mount" in outside.stderr


def _transfers() -> list[dict]:
    return json.loads(mcpfs("transfers", "--json").stdout)


def test_mcpfs_cp_survives_a_daemon_kill_and_finishes_after_restart(daemon, s3_env, raw,
                                                                     bucket, tmp_path):
    mnt = daemon.start(s3_env)
    data = os.urandom(160 * MiB)  # no CID known anywhere: the streamed route
    (tmp_path / "big.bin").write_bytes(data)
    cid = mcpfs("add", "-Q", "--cid-version", "1", str(tmp_path / "big.bin")).stdout.strip()
    cli = subprocess.Popen([sys.executable, "-c", CLI, "cp", f"/ipfs/{cid}",
                            str(mnt / "s3" / bucket / "big.bin")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = _transfers()
        if rows and rows[-1]["State"] == "running" and rows[-1]["Done"] > 8 * MiB:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"no transfer in progress: {rows}")
    daemon.kill9()  # while copying into the part file, or while its parts go up
    _, err = cli.communicate(timeout=30)
    assert cli.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "Error: the daemon stopped during the transfer; it resumes when the daemon starts "
        "again (see: mcpfs transfers)")
    assert not exists(raw, bucket, "big.bin")  # nothing partial is visible

    daemon.start(s3_env)  # the transfer resumes in the background
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = _transfers()[-1]
        if row["State"] != "running":
            break
        time.sleep(0.1)
    assert row["State"] == "done", row
    assert raw.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    assert raw.head_object(Bucket=bucket, Key="big.bin")["Metadata"]["ipfs-cid"] == cid
    assert "resuming transfer" in daemon.log_text()
    assert not list((Path(daemon.home) / "cache" / "transfers").iterdir())  # part removed


def test_shell_redirection_and_python_copies_are_copies(mnt, mcpfs_home, tmp_path):
    src = tmp_path / "s.bin"
    src.write_bytes(pattern_bytes(6 * MiB, 8))
    cid = mcpfs("add", "-Q", "--profile", "unixfs-v1-2025", str(src)).stdout.strip()
    ipfs = mnt / "ipfs" / cid
    before = blocks(mcpfs_home)
    # the shell's child opens the target before cat opens the source
    run("sh", "-c", f"cat '{ipfs}' > '{mnt / 'mfs' / 'cat.bin'}'")
    run("python3", "-c", "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])",
        str(ipfs), str(mnt / "mfs" / "shutil.bin"))
    for name in ("cat.bin", "shutil.bin"):
        assert xattr(mnt / "mfs" / name, "user.mcpfs.cid") == cid, name
        assert xattr(mnt / "mfs" / name, "user.mcpfs.source") == f"/ipfs/{cid}"
    added = new_blocks(before, blocks(mcpfs_home))
    assert all(size < 1024 for size in added.values()), added  # directory nodes only


def test_an_unusable_provenance_db_leaves_a_working_mount(daemon, mcpfs_home, tmp_path):
    state = Path(mcpfs_home) / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "bridge.sqlite").write_bytes(b"this is not a database" * 100)
    mnt = daemon.start()
    (tmp_path / "f").write_bytes(b"still works")
    run("cp", str(tmp_path / "f"), str(mnt / "mfs" / "f"))
    assert (mnt / "mfs" / "f").read_bytes() == b"still works"
    assert "running without the bridge" in daemon.log_text()
    out = mcpfs("where", "/mfs/f", check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: ")


def test_an_unknown_profile_is_a_one_line_error(daemon, mcpfs_home):
    cfg = Path(mcpfs_home) / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[bridge]\nprofile = "fastest"\n')
    out = mcpfs("mount", str(daemon.mnt), check=False)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == \
        "Error: [bridge] profile: unknown profile 'fastest'"


def test_same_bytes_again_in_s3_is_copied_only_when_big(s3_mnt, raw, bucket):
    """A file whose bytes are already an object is a CopyObject when it is big (no upload)
    and a plain PUT when small (one request instead of a HEAD and a copy)."""
    b = s3_mnt / "s3" / bucket
    small, big = pattern_bytes(1024, 21), pattern_bytes(2 * MiB, 22)

    def s3_ops() -> dict[str, int]:
        return {op: o["Count"] for op, o in daemon_stats()["Backends"]["s3"]["Ops"].items()}
    (b / "small-1").write_bytes(small)
    (b / "big-1").write_bytes(big)
    before = s3_ops()
    (b / "small-2").write_bytes(small)
    (b / "big-2").write_bytes(big)
    after = s3_ops()
    assert after.get("copy", 0) - before.get("copy", 0) == 1  # big-2 only
    assert after.get("put", 0) - before.get("put", 0) == 1  # small-2
    assert raw.get_object(Bucket=bucket, Key="small-2")["Body"].read() == small
    assert raw.get_object(Bucket=bucket, Key="big-2")["Body"].read() == big
