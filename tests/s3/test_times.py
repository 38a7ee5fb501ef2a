"""/s3 modes and mtimes (mounts/s3_times.py) against a real S3 server, without FUSE: what
vfs/ would call. Uploads carry rclone's x-amz-meta-mtime; chmod/utimes are kept per key
and ETag; a rename carries them to the copy; another client's change shows the defaults.
tests/fuse/test_s3_mount.py runs rsync -a twice through a real mount."""

from __future__ import annotations

import pytest

from mcpfs.mounts.s3 import S3Mount
from mcpfs.vfs.spool import Spool

from ..mount_helpers import names
from .conftest import make_backend

OLD = 1_600_000_000_123_456_789
OLD_TEXT = "1600000000.123456789"


@pytest.fixture
def mount(s3_server, tmp_path):
    return S3Mount(make_backend(s3_server), tmp_path / "s3-attrs.sqlite")


async def put(mount, tmp_path, path, data, mtime_ns=None, perm=None, existed=False):
    spool = await Spool.create(tmp_path / "spool")
    try:
        writer = await mount.open_write(path, spool, truncate=True, create=not existed)
        await spool.write(0, data)
        writer.mtime_ns, writer.perm = mtime_ns, perm
        return await mount.commit(writer)
    finally:
        await spool.close()


async def listed(mount, folder, name):
    async for entry, attr in mount.listdir(folder):
        if entry == name:
            return attr
    raise AssertionError(f"{name} not listed")


async def test_an_upload_carries_rclones_mtime_and_keeps_it(mount, bucket, raw, tmp_path):
    attr = await put(mount, tmp_path, f"{bucket}/a.txt", b"a", mtime_ns=OLD, perm=0o600)
    assert (attr.mtime_ns, attr.perm) == (OLD, 0o600)
    assert raw.head_object(Bucket=bucket, Key="a.txt")["Metadata"]["mtime"] == OLD_TEXT
    mount._listings.clear()
    mount._heads.clear()
    got = await listed(mount, bucket, "a.txt")  # a fresh listing: no metadata in it
    assert (got.mtime_ns, got.perm) == (OLD, 0o600)
    attr = await put(mount, tmp_path, f"{bucket}/a.txt", b"again", existed=True, perm=0o600)
    assert attr.mtime_ns > OLD and attr.perm == 0o600  # a write: its time


async def test_chmod_and_utimes_after_close_cost_no_upload(mount, bucket, raw, tmp_path):
    await put(mount, tmp_path, f"{bucket}/f", b"f")
    etag = raw.head_object(Bucket=bucket, Key="f")["ETag"]
    await mount.set_attrs(f"{bucket}/f", OLD, 0o755)
    got = await mount.lookup(f"{bucket}/f")
    assert (got.mtime_ns, got.perm) == (OLD, 0o755)
    assert raw.head_object(Bucket=bucket, Key="f")["ETag"] == etag  # nothing rewritten
    raw.put_object(Bucket=bucket, Key="f", Body=b"another client")
    mount._listings.clear()
    mount._heads.clear()
    got = await mount.lookup(f"{bucket}/f")
    assert got.perm is None and got.mtime_ns != OLD  # LastModified again


async def test_a_rename_carries_them_to_the_copy(mount, bucket, raw, tmp_path):
    await put(mount, tmp_path, f"{bucket}/d/x", b"x")
    await put(mount, tmp_path, f"{bucket}/tmp.part", b"rsync's temp file")
    for path in (f"{bucket}/d/x", f"{bucket}/tmp.part"):
        await mount.set_attrs(path, OLD, 0o640)  # after close, as rsync does
    await mount.rename(f"{bucket}/tmp.part", f"{bucket}/final")
    await mount.rename(f"{bucket}/d", f"{bucket}/e")
    for key in ("final", "e/x"):
        got = await mount.lookup(f"{bucket}/{key}")
        assert (got.mtime_ns, got.perm) == (OLD, 0o640)
    # a file's rename HEADs it: the copy carries the kept mtime; a directory's copies
    # come from a listing (no metadata): as they were, the kept mtime ours alone
    assert raw.head_object(Bucket=bucket, Key="final")["Metadata"]["mtime"] == OLD_TEXT
    assert raw.head_object(Bucket=bucket, Key="e/x")["Metadata"]["mtime"] != OLD_TEXT
    assert await names(mount, bucket) == ["e", "final"]


async def test_they_survive_a_restart(s3_server, bucket, tmp_path):
    db = tmp_path / "s3-attrs.sqlite"
    first = S3Mount(make_backend(s3_server), db)
    await put(first, tmp_path, f"{bucket}/kept", b"kept")
    await first.set_attrs(f"{bucket}/kept", OLD, 0o700)
    await first.aclose()
    second = S3Mount(make_backend(s3_server), db)
    try:
        got = await second.lookup(f"{bucket}/kept")
        assert (got.mtime_ns, got.perm) == (OLD, 0o700)
    finally:
        await second.aclose()


async def test_a_rename_drops_what_was_kept_for_content_since_replaced(mount, bucket, raw,
                                                                       tmp_path):
    await put(mount, tmp_path, f"{bucket}/src", b"ours")
    await mount.set_attrs(f"{bucket}/src", OLD, 0o600)
    raw.put_object(Bucket=bucket, Key="src", Body=b"another client's")
    mount._listings.clear()
    mount._heads.clear()
    await mount.rename(f"{bucket}/src", f"{bucket}/dst")
    got = await mount.lookup(f"{bucket}/dst")
    assert got.perm is None and got.mtime_ns != OLD
    assert "mtime" not in raw.head_object(Bucket=bucket, Key="dst")["Metadata"]


async def test_an_object_without_our_mtime_is_copied_as_it_is(mount, bucket, raw):
    """A rename of another client's object keeps its headers (no metadata REPLACE): its
    kept mtime stays ours alone."""
    raw.put_object(Bucket=bucket, Key="theirs", Body=b"t", CacheControl="max-age=60",
                   Metadata={"tag": "x"})
    await mount.set_attrs(f"{bucket}/theirs", OLD, None)
    await mount.rename(f"{bucket}/theirs", f"{bucket}/moved")
    head = raw.head_object(Bucket=bucket, Key="moved")
    assert head["Metadata"] == {"tag": "x"} and head.get("CacheControl") == "max-age=60"
    assert (await mount.lookup(f"{bucket}/moved")).mtime_ns == OLD
