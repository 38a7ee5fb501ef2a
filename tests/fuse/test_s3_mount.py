"""/s3 on a real mount, against the session's SeaweedFS (tests/s3_server.py): ls of buckets
and prefixes (20,000 keys), reads (cmp, random, mmap), writes (single PUT, multipart,
overwrite, append, random), mkdir/rmdir/rm/mv, xattrs, wrong credentials, no credentials,
`mcpfs status` and the journal: kill -9 during an upload, and of a file never closed.

The daemon is configured the way a user would: boto3's environment variables
(AWS_ENDPOINT_URL, AWS_REGION, keys), or an [s3] section in the config file. `raw` is an
independent boto3 client: what the server really holds."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from mcpfs.cli.status import pending_writes
from mcpfs.config import paths
from tests.conftest import pattern_bytes

from .conftest import is_mounted, mcpfs, run
from .test_daemon import _wait_gone, cli_mnt  # noqa: F401 - the `mcpfs mount` fixture

MiB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(raw, bucket: str, key: str) -> bytes:
    return raw.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(raw, bucket: str, prefix: str = "") -> list[str]:
    pages = raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def uploads(raw, bucket: str) -> list:
    return raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def wait_uploaded(timeout: float = 60) -> None:
    """Until the journal has no pending row: the uploads a start resumed have ended."""
    deadline = time.monotonic() + timeout
    while pending_writes(paths().state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pending_writes(paths().state_dir) == []


def exists(raw, bucket: str, key: str) -> bool:
    try:
        raw.head_object(Bucket=bucket, Key=key)
        return True
    except raw.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")
        return False


# ---------------------------------------------------------------- listing, xattrs
def test_ls_buckets_prefixes_and_xattrs(s3_mnt, raw, bucket):
    raw.put_object(Bucket=bucket, Key="top.txt", Body=b"top\n", ContentType="text/plain",
                   Metadata={"owner": "alice", "run-id": "42"})
    raw.put_object(Bucket=bucket, Key="a/b/c.bin", Body=b"c" * 1000)
    raw.put_object(Bucket=bucket, Key="a/d.bin", Body=b"d" * 10)
    assert sorted(os.listdir(s3_mnt)) == ["ipfs", "mfs", "s3"]
    assert bucket in run("ls", str(s3_mnt / "s3")).stdout.split()
    b = s3_mnt / "s3" / bucket
    assert run("ls", str(b)).stdout.split() == ["a", "top.txt"]
    long = run("ls", "-l", str(b / "a")).stdout.splitlines()
    assert long[1].startswith("drwxr-xr-x") and long[1].endswith(" b")
    assert long[2].startswith("-rw-r--r--") and " 10 " in long[2] and long[2].endswith("d.bin")
    assert (b / "a/b/c.bin").stat().st_size == 1000
    assert (b / "top.txt").read_text() == "top\n"

    head = raw.head_object(Bucket=bucket, Key="top.txt")
    x = lambda name: run("getfattr", "--only-values", "-n", name, str(b / "top.txt")).stdout
    assert x("user.mcpfs.etag") == head["ETag"].strip('"')
    assert x("user.mcpfs.content_type") == "text/plain"
    assert x("user.mcpfs.storage_class") == "STANDARD"
    assert x("user.mcpfs.backend") == "s3"
    assert x("user.s3.meta.owner") == "alice"
    assert os.getxattr(b / "top.txt", "user.s3.meta.run-id") == b"42"
    dump = run("getfattr", "-d", "-m", "-", str(b / "top.txt")).stdout
    assert 'user.s3.meta.owner="alice"' in dump and "user.mcpfs.etag=" in dump
    if head.get("VersionId"):  # only on a versioned bucket
        assert x("user.mcpfs.version_id") == head["VersionId"]
    else:
        assert "user.mcpfs.version_id" not in os.listxattr(b / "top.txt")
    assert os.getxattr(b / "a", "user.mcpfs.backend") == b"s3"
    with pytest.raises(OSError) as info:
        os.getxattr(b / "top.txt", "user.s3.meta.nope")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(FileNotFoundError):
        os.stat(s3_mnt / "s3" / "no-such-bucket-here")
    with pytest.raises(FileNotFoundError):
        os.stat(b / "a" / "nope")


def test_versioned_bucket_version_id_xattr(s3_mnt, raw, bucket):
    raw.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    vid = raw.put_object(Bucket=bucket, Key="v.txt", Body=b"v1")["VersionId"]
    assert os.getxattr(s3_mnt / "s3" / bucket / "v.txt", "user.mcpfs.version_id") == \
        vid.encode()


def test_listing_20000_keys(s3_mnt, many_keys):
    bucket, names = many_keys
    d = s3_mnt / "s3" / bucket / "many"
    listed = run("ls", "-U", str(d)).stdout.split()  # unsorted: in the listing's order
    assert listed == [k.split("/")[1] for k in names] + ["sub"]
    long = run("ls", "-l", str(d)).stdout.splitlines()
    assert long[0].startswith("total") and len(long) == len(names) + 2
    assert long[1].startswith("-rw-r--r--") and long[1].endswith(" 000000")
    assert long[-1].startswith("d") and long[-1].endswith(" sub")
    assert os.listdir(d / "sub") == ["x"]


# ---------------------------------------------------------------- reads
def test_sequential_random_and_mmap_reads(s3_mnt, raw, bucket, tmp_path):
    data = os.urandom(24 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    raw.upload_file(str(src), bucket, "big/data.bin")  # multipart, like most large objects
    f = s3_mnt / "s3" / bucket / "big" / "data.bin"
    assert run("cmp", str(src), str(f)).returncode == 0
    rng = random.Random(5)
    with open(f, "rb", buffering=0) as fh:
        for _ in range(60):
            off = rng.randrange(0, len(data) + 1000)
            n = rng.randrange(1, 300_000)
            assert os.pread(fh.fileno(), n, off) == data[off:off + n]
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[20 * MiB:20 * MiB + 4096] == data[20 * MiB:20 * MiB + 4096]
        assert mm[-10:] == data[-10:]


# ---------------------------------------------------------------- writes
def test_cp_in_single_put_and_multipart(s3_mnt, raw, bucket, tmp_path):
    small, large = pattern_bytes(3_000_000, 3), os.urandom(20 * MiB + 12345)
    (tmp_path / "small.csv").write_bytes(small)
    (tmp_path / "large.bin").write_bytes(large)
    b = s3_mnt / "s3" / bucket
    run("cp", str(tmp_path / "small.csv"), str(b / "small.csv"))
    run("mkdir", "-p", str(b / "deep/er"))
    run("cp", str(tmp_path / "large.bin"), str(b / "deep/er/large.bin"))
    assert get(raw, bucket, "small.csv") == small
    assert sha256(get(raw, bucket, "deep/er/large.bin")) == sha256(large)
    etag_small = raw.head_object(Bucket=bucket, Key="small.csv")["ETag"].strip('"')
    etag_large = raw.head_object(Bucket=bucket, Key="deep/er/large.bin")["ETag"].strip('"')
    assert etag_small == hashlib.md5(small).hexdigest()  # one PutObject
    assert etag_large.endswith("-3")  # 8 MiB parts: a multipart upload of 3 parts
    assert os.getxattr(b / "deep/er/large.bin", "user.mcpfs.etag") == etag_large.encode()
    assert raw.head_object(Bucket=bucket, Key="small.csv")["ContentType"] == "text/csv"
    assert uploads(raw, bucket) == []
    assert run("cmp", str(tmp_path / "large.bin"), str(b / "deep/er/large.bin")).returncode == 0
    assert (b / "small.csv").stat().st_size == len(small)


def test_overwrite_append_and_random_writes(s3_mnt, raw, bucket):
    b = s3_mnt / "s3" / bucket
    f = b / "f.txt"
    run("sh", "-c", f"echo hello > {f}")
    assert get(raw, bucket, "f.txt") == b"hello\n"
    run("sh", "-c", f"echo HELLO > {f}")  # overwrite (O_TRUNC)
    assert get(raw, bucket, "f.txt") == b"HELLO\n"
    run("sh", "-c", f"echo world >> {f}")  # append: the object is copied in first
    assert get(raw, bucket, "f.txt") == b"HELLO\nworld\n"
    assert f.read_text() == "HELLO\nworld\n"

    model = bytearray(pattern_bytes(2 * MiB, 9))
    raw.put_object(Bucket=bucket, Key="r.bin", Body=bytes(model))
    rng = random.Random(3)
    with open(b / "r.bin", "r+b") as fh:
        for _ in range(30):
            off = rng.randrange(0, len(model) + 1000)
            piece = os.urandom(rng.randrange(1, 50_000))
            fh.seek(off)
            fh.write(piece)
            if off > len(model):
                model.extend(b"\0" * (off - len(model)))
            model[off:off + len(piece)] = piece
    assert get(raw, bucket, "r.bin") == bytes(model)
    assert (b / "r.bin").read_bytes() == bytes(model)
    run("truncate", "-s", "100", str(b / "r.bin"))
    assert get(raw, bucket, "r.bin") == bytes(model[:100])


def test_mkdir_rmdir_rm(s3_mnt, raw, bucket):
    b = s3_mnt / "s3" / bucket
    run("mkdir", str(b / "d"))
    assert keys(raw, bucket) == ["d/"]  # the marker
    assert os.listdir(b) == ["d"] and os.listdir(b / "d") == []
    (b / "d" / "f").write_bytes(b"x")
    r = run("rmdir", str(b / "d"), check=False)
    assert r.returncode != 0 and "Directory not empty" in r.stderr
    with pytest.raises(OSError) as info:
        os.rmdir(b / "d")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        os.mkdir(b / "d")
    run("rm", str(b / "d" / "f"))
    assert keys(raw, bucket) == ["d/"]
    run("rmdir", str(b / "d"))
    assert keys(raw, bucket) == [] and os.listdir(b) == []
    with pytest.raises(FileNotFoundError):
        os.stat(b / "d")


def test_mv_file_and_directory(s3_mnt, raw, bucket):
    b = s3_mnt / "s3" / bucket
    raw.put_object(Bucket=bucket, Key="one.txt", Body=b"1", Metadata={"tag": "t"})
    for i in range(25):
        raw.put_object(Bucket=bucket, Key=f"dir/k{i:02d}", Body=f"{i}".encode())
    raw.put_object(Bucket=bucket, Key="dir/sub/deep.txt", Body=b"deep")
    run("mv", str(b / "one.txt"), str(b / "two.txt"))
    assert get(raw, bucket, "two.txt") == b"1" and not exists(raw, bucket, "one.txt")
    assert os.getxattr(b / "two.txt", "user.s3.meta.tag") == b"t"  # CopyObject keeps metadata
    run("mv", str(b / "dir"), str(b / "moved"))
    assert sorted(os.listdir(b)) == ["moved", "two.txt"]
    assert keys(raw, bucket, "dir/") == []
    assert len(keys(raw, bucket, "moved/")) == 26
    assert (b / "moved/sub/deep.txt").read_bytes() == b"deep"
    assert (b / "moved/k07").read_bytes() == b"7"
    run("mv", str(b / "two.txt"), str(b / "moved" / "two.txt"))  # into a directory
    assert get(raw, bucket, "moved/two.txt") == b"1"
    with pytest.raises(OSError) as info:  # across subtrees: mv copies instead
        os.rename(b / "moved/k01", s3_mnt / "mfs" / "k01")
    assert info.value.errno == errno.EXDEV
    run("mv", str(b / "moved/k01"), str(s3_mnt / "mfs" / "k01"))
    assert (s3_mnt / "mfs" / "k01").read_bytes() == b"1" and not exists(raw, bucket,
                                                                         "moved/k01")


@pytest.mark.skipif(shutil.which("rsync") is None,
                    reason="rsync not installed (make test installs it)")
def test_rsync_a_twice_copies_once_and_objects_carry_the_mtime(daemon, s3_env, raw, bucket,
                                                                tmp_path):
    """mounts/s3_times.py: rsync -a sets its temp file's mode and times after close, then
    renames it; they are kept (across a restart), so a second rsync copies nothing, and
    every object carries them as rclone's x-amz-meta-mtime."""
    old = 1_600_000_000_123_456_789
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "d" / "run.sh").chmod(0o755)
    (src / "data.bin").write_bytes(pattern_bytes(300_000, 9))
    os.utime(src / "data.bin", ns=(old, old))
    daemon.start(s3_env)
    dst = daemon.mnt / "s3" / bucket / "r"

    def rsync() -> str:
        return run("rsync", "-a", "--stats", f"{src}/", f"{dst}/").stdout
    assert "Number of regular files transferred: 2" in rsync()
    assert raw.head_object(Bucket=bucket, Key="r/data.bin")["Metadata"]["mtime"] == \
        "1600000000.123456789"
    assert os.stat(dst / "data.bin").st_mtime_ns == old
    assert "Number of regular files transferred: 0" in rsync()
    daemon.stop()
    daemon.start(s3_env)
    assert "Number of regular files transferred: 0" in rsync()
    assert run(str(dst / "d" / "run.sh")).stdout == "ran\n"


# ---------------------------------------------------------------- configuration
def test_no_credentials_no_s3(daemon, no_aws_env):
    mnt = daemon.start()
    assert sorted(os.listdir(mnt)) == ["ipfs", "mfs"]
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "s3")


def test_mcpfs_mount_with_aws_endpoint_url(cli_mnt, s3_env, monkeypatch, raw, bucket):
    """`AWS_ENDPOINT_URL=... mcpfs mount DIR` with boto3's variables and nothing else."""
    mnt, pids = cli_mnt
    for var, value in s3_env.items():
        monkeypatch.setenv(var, value)
    raw.put_object(Bucket=bucket, Key="k/v.txt", Body=b"via the cli")
    done = mcpfs("mount", str(mnt))
    pids.append(int(done.stderr.split("pid ")[1].split()[0].strip("):,")))
    assert (mnt / "s3" / bucket / "k" / "v.txt").read_bytes() == b"via the cli"
    mcpfs("unmount", str(mnt))
    assert _wait_gone(pids[0]) and not is_mounted(mnt)


def test_the_client_is_warmed_at_start(s3_mnt, bucket):
    """Before anything touches /s3, the daemon has listed the buckets and a page of the
    first: the first access does not pay the client's first-call costs, and that page is
    kept (the first bucket is found without a request); the bucket list is not."""
    ops: dict = {}
    deadline = time.monotonic() + 10  # (the requests run beside the start, not before it)
    while "list" not in ops and time.monotonic() < deadline:
        stats = json.loads(mcpfs("stats", "--json").stdout)
        ops = stats.get("Backends", {}).get("s3", {}).get("Ops", {})
    assert ops.get("list_buckets", {}).get("Count") == 1
    assert ops.get("list", {}).get("Count") == 1
    assert (s3_mnt / "s3" / bucket).is_dir()
    first = min(os.listdir(s3_mnt / "s3"))  # ListBuckets again: a fresh list
    ops = json.loads(mcpfs("stats", "--json").stdout)["Backends"]["s3"]["Ops"]
    lists = ops["list"]["Count"]
    assert (s3_mnt / "s3" / first).is_dir()  # the first bucket's page was kept: no request
    ops = json.loads(mcpfs("stats", "--json").stdout)["Backends"]["s3"]["Ops"]
    assert ops["list"]["Count"] == lists and ops["list_buckets"]["Count"] == 2


def test_wrong_credentials_eacces_rest_works(daemon, s3_env):
    wrong_secret = "wrong-secret-4e1d0c9a77b2"
    mnt = daemon.start(dict(s3_env, AWS_SECRET_ACCESS_KEY=wrong_secret))
    assert sorted(os.listdir(mnt)) == ["ipfs", "mfs", "s3"]
    for _ in range(3):
        r = run("ls", str(mnt / "s3"), check=False)
        assert r.returncode != 0 and "Permission denied" in r.stderr
    with pytest.raises(PermissionError):
        os.stat(mnt / "s3" / "some-bucket")
    with pytest.raises(PermissionError):
        (mnt / "s3" / "some-bucket" / "f").write_bytes(b"x")
    (mnt / "mfs" / "ok.txt").write_bytes(b"still works")
    assert (mnt / "mfs" / "ok.txt").read_bytes() == b"still works"
    log = daemon.log_text()
    denied = [line for line in log.splitlines() if "S3 denied" in line]
    assert len(denied) == 1 and "WARNING" in denied[0], log
    assert "credentials" in denied[0]
    assert wrong_secret not in log and s3_env["AWS_SECRET_ACCESS_KEY"] not in log


def test_config_file_section(daemon, s3_server, raw, bucket, mcpfs_home, no_aws_env):
    """[s3] in the config file names the endpoint; the keys come from boto3's chain (here a
    shared credentials file, as ~/.aws/credentials would)."""
    creds = mcpfs_home.parent / "aws-credentials"
    creds.write_text(f"[default]\naws_access_key_id = {s3_server['access_key']}\n"
                     f"aws_secret_access_key = {s3_server['secret_key']}\n")
    cfg = paths().config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'[s3]\nendpoint_url = "{s3_server["endpoint"]}"\nregion = "us-east-1"\n'
                   f'buckets = ["{bucket}"]\n')
    raw.put_object(Bucket=bucket, Key="hello", Body=b"hi")
    mnt = daemon.start({"AWS_SHARED_CREDENTIALS_FILE": str(creds)})
    assert os.listdir(mnt / "s3") == [bucket]  # the configured list, no ListBuckets
    assert (mnt / "s3" / bucket / "hello").read_bytes() == b"hi"
    assert s3_server["secret_key"] not in daemon.log_text()


def test_public_bucket_with_no_sign_request(daemon, s3_server, public_bucket, mcpfs_home,
                                            no_aws_env):
    """A public dataset without any credentials: ``[s3] no_sign_request = true``."""
    cfg = paths().config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'[s3]\nendpoint_url = "{s3_server["endpoint"]}"\nregion = "us-east-1"\n'
                   f"no_sign_request = true\n")
    mnt = daemon.start()
    assert os.listdir(mnt / "s3" / public_bucket) == ["data"]
    assert (mnt / "s3" / public_bucket / "data" / "readme.txt").read_bytes() == b"open data\n"
    with pytest.raises(PermissionError):
        (mnt / "s3" / public_bucket / "data" / "mine.txt").write_bytes(b"x")


# ---------------------------------------------------------------- journal, status
def _write_config(s3_server, **extra) -> None:
    cfg = paths().config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'endpoint_url = "{s3_server["endpoint"]}"'] + \
        [f"{k} = {v}" for k, v in extra.items()]
    cfg.write_text("[s3]\n" + "\n".join(lines) + "\n")


def test_kill9_during_upload_resumes_from_journal(daemon, s3_server, s3_env, raw, bucket,
                                                   tmp_path):
    """cp of 120 MiB; the daemon is killed while the parts go up (5 MiB parts, one at a
    time, so there is a window); the next start resumes the same multipart upload from the
    journal: the object is whole, no upload is left open, and the parts already sent are
    not sent again."""
    _write_config(s3_server, part_size=5 * MiB, part_concurrency=1)
    env = {k: v for k, v in s3_env.items() if k != "AWS_ENDPOINT_URL"}  # from the file
    mnt = daemon.start(env)
    data = os.urandom(120 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    dst = mnt / "s3" / bucket / "big.bin"
    cp = subprocess.Popen(["cp", str(src), str(dst)], stderr=subprocess.PIPE)
    parts_seen = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and cp.poll() is None:
        ups = uploads(raw, bucket)
        if ups:
            parts_seen = len(raw.list_parts(Bucket=bucket, Key="big.bin",
                                            UploadId=ups[0]["UploadId"]).get("Parts", []))
            if parts_seen >= 3:
                break
        time.sleep(0.01)
    assert cp.poll() is None, "the upload finished before it could be interrupted"
    daemon.kill9()
    cp.wait(30)
    assert cp.returncode != 0  # close() failed: the daemon died under it
    assert not exists(raw, bucket, "big.bin")  # nothing partial is visible
    assert len(uploads(raw, bucket)) == 1  # the interrupted upload, not completed
    rows = pending_writes(paths().state_dir)
    assert [(r["Path"], r["State"]) for r in rows] == [(f"/s3/{bucket}/big.bin",
                                                       "committing")]
    status = mcpfs("status").stdout
    assert f"/s3/{bucket}/big.bin  committing" in status and "pending writes: 1" in status

    daemon.start(env)  # the upload resumes behind the live mount
    wait_uploaded()
    assert sha256(get(raw, bucket, "big.bin")) == sha256(data)
    assert uploads(raw, bucket) == []
    assert pending_writes(paths().state_dir) == []
    log = daemon.log_text()
    assert "resuming upload" in log and "completed the interrupted write" in log, log
    resumed = int(log.split("resuming upload, ")[1].split()[0])
    assert resumed >= 3  # parts sent before the kill were kept
    assert "24 parts of 5 MiB (%d resumed)" % resumed in log
    assert run("cmp", str(src), str(daemon.mnt / "s3" / bucket / "big.bin")).returncode == 0
    assert not list((paths().cache_dir / "spool").iterdir())  # spool and sidecar gone


HOLDER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.write(fd, b"x" * (3 << 20))
print("written", flush=True)
sys.stdin.read()
"""


def test_status_lists_open_write_and_unclosed_file_is_discarded(daemon, s3_env, raw, bucket):
    """A file held open shows in `mcpfs status` as a pending /s3 write; if the daemon dies
    before it was ever closed, the next start discards it (its content was never promised
    by a close()), and nothing reaches the bucket."""
    mnt = daemon.start(s3_env)
    path = mnt / "s3" / bucket / "held.bin"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "written"
        status = mcpfs("status").stdout
        assert f"/s3/{bucket}/held.bin  open" in status, status
        assert path.stat().st_size == 3 << 20  # pending: the local size
        assert not exists(raw, bucket, "held.bin")
        daemon.kill9()
    finally:
        holder.kill()
        holder.wait()
    assert not is_mounted(mnt)
    daemon.start(s3_env)
    assert "discarded the unfinished write of /s3/%s/held.bin" % bucket in daemon.log_text()
    assert not exists(raw, bucket, "held.bin") and uploads(raw, bucket) == []
    assert pending_writes(paths().state_dir) == []
    assert "pending writes: 0" in mcpfs("status").stdout


def test_status_lists_write_until_closed(s3_mnt, raw, bucket):
    """The same pending row while open (a small file is held in memory and gets its row
    once it stays open half a second); close() commits it and the row goes away."""
    path = s3_mnt / "s3" / bucket / "later.txt"
    with open(path, "wb") as fh:
        fh.write(b"later")
        fh.flush()
        deadline = time.monotonic() + 5
        while not (rows := pending_writes(paths().state_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(r["Path"], r["State"]) for r in rows] == [(f"/s3/{bucket}/later.txt", "open")]
    assert get(raw, bucket, "later.txt") == b"later"
    assert pending_writes(paths().state_dir) == []


def test_outside_changes_show_after_the_listing_ttl(daemon, s3_server, s3_env, raw, bucket):
    """A listing is cached (listing_ttl, here 1 s; 30 s by default): `ls` does not show a
    key another client adds until it expires, but the key can be opened by name at once
    (a name the listing lacks costs one HEAD). Keys emptied of their last file through the
    mount leave no directory unless it had a marker."""
    _write_config(s3_server, listing_ttl=1.0)
    mnt = daemon.start(s3_env)
    b = mnt / "s3" / bucket
    raw.put_object(Bucket=bucket, Key="p/only", Body=b"1")
    assert os.listdir(b) == ["p"]
    raw.put_object(Bucket=bucket, Key="late.txt", Body=b"late")
    assert os.listdir(b) == ["p"]  # the cached listing
    assert (b / "late.txt").read_bytes() == b"late"  # found by name at once...
    assert sorted(os.listdir(b)) == ["late.txt", "p"]  # ...and added to the listing
    raw.put_object(Bucket=bucket, Key="later.txt", Body=b"later")
    assert "later.txt" not in os.listdir(b)  # not looked up: not listed before the TTL
    time.sleep(1.3)
    assert sorted(os.listdir(b)) == ["late.txt", "later.txt", "p"]
    assert (b / "late.txt").read_bytes() == b"late"
    os.unlink(b / "p" / "only")
    assert keys(raw, bucket, "p") == []
    if "p" in os.listdir(b):  # SeaweedFS keeps an emptied directory (AWS would not)
        os.rmdir(b / "p")
    assert sorted(os.listdir(b)) == ["late.txt", "later.txt"]
