"""mounts/s3.py against a real S3 server, without FUSE: what vfs/ would call."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tracemalloc

import pytest

from mcpfs.errors import McpfsError
from mcpfs.mounts.base import DIR, FILE
from mcpfs.mounts.prefetch import KEEP_BEHIND, MiB, Prefetcher
from mcpfs.backends.s3 import S3Backend, S3Config
from mcpfs.mounts.s3 import OPEN_READ, S3Mount
from mcpfs.vfs.spool import Spool
from mcpfs.stats import Stats

from ..conftest import pattern_bytes
from ..mount_helpers import errno_of, names, read_all
from .conftest import SECRET_KEY, make_backend


@pytest.fixture
def mount(s3_server):
    return S3Mount(make_backend(s3_server))


async def write_file(mount, tmp_path, path, data, *, create=True, truncate=True):
    spool = await Spool.create(tmp_path / "spool")
    try:
        writer = await mount.open_write(path, spool, truncate=truncate, create=create)
        await spool.write(0, data)
        return await mount.commit(writer)
    finally:
        await spool.close()


async def test_root_lists_buckets_and_lookup(mount, bucket):
    assert (await mount.lookup("")).kind == DIR
    assert bucket in await names(mount, "")
    assert (await mount.lookup(bucket)).kind == DIR
    assert await errno_of(mount.lookup("no-such-bucket-zz")) == errno.ENOENT
    assert await names(mount, bucket) == []


async def test_prefixes_are_directories(mount, bucket, raw):
    for key in ["a/b/c.txt", "a/d", "top", "marker/"]:
        raw.put_object(Bucket=bucket, Key=key, Body=b"12345")
    assert await names(mount, bucket) == ["a", "marker", "top"]
    assert await names(mount, f"{bucket}/a") == ["b", "d"]
    mount._listings.clear()  # lookups without a cached parent listing
    assert (await mount.lookup(f"{bucket}/a/b")).kind == DIR
    assert (await mount.lookup(f"{bucket}/marker")).kind == DIR
    attr = await mount.lookup(f"{bucket}/a/b/c.txt")
    assert (attr.kind, attr.size) == (FILE, 5)
    assert await errno_of(mount.lookup(f"{bucket}/a/nope")) == errno.ENOENT
    assert await errno_of(names(mount, f"{bucket}/nope")) == errno.ENOENT
    assert await errno_of(names(mount, f"{bucket}/top")) == errno.ENOTDIR
    assert await names(mount, f"{bucket}/marker") == []


async def test_listing_20000_keys_and_lookups_from_cache(mount, many_keys, monkeypatch):
    bucket, keys = many_keys
    listed = [(n, a) async for n, a in mount.listdir(f"{bucket}/many")]
    assert len(listed) == len(keys) + 1
    assert ("sub", DIR) in [(n, a.kind) for n, a in listed]

    heads = []

    async def no_requests(*args, **kwargs):
        raise AssertionError("lookup went to the server")

    async def counted_head(bucket_, key):
        heads.append(key)
        return await real_head(bucket_, key)
    real_head = mount.backend.head
    monkeypatch.setattr(mount.backend, "head", counted_head)
    monkeypatch.setattr(mount.backend, "first_keys", no_requests)
    monkeypatch.setattr(mount.backend, "list_dir_page", no_requests)
    assert (await mount.lookup(f"{bucket}/many/019999")).kind == FILE
    assert heads == []  # a name in the cached listing: no request
    assert await errno_of(mount.lookup(f"{bucket}/many/020000")) == errno.ENOENT
    assert heads == ["many/020000"]  # a name it lacks: exactly one HEAD (new objects show)


async def test_lookups_in_a_small_directory_list_it_once(mount, bucket, raw, monkeypatch):
    """A lookup in a directory not listed yet lists it (one page) and caches it; later
    lookups there need no request; our own writes update it in place; an object another
    client puts is found by one HEAD."""
    for i in range(5):
        raw.put_object(Bucket=bucket, Key=f"small/f{i}", Body=b"x" * i)
    calls = spy_requests(mount, monkeypatch)
    assert (await mount.lookup(f"{bucket}/small/f3")).size == 3
    assert calls == ["list_dir_page"]
    assert (await mount.lookup(f"{bucket}/small/f4")).size == 4
    assert await errno_of(mount.lookup(f"{bucket}/small/nope")) == errno.ENOENT
    assert calls == ["list_dir_page", "head"]
    raw.put_object(Bucket=bucket, Key="small/outside", Body=b"new")
    assert (await mount.lookup(f"{bucket}/small/outside")).size == 3
    await mount.unlink(f"{bucket}/small/f0")
    calls.clear()
    assert await errno_of(mount.lookup(f"{bucket}/small/f0")) == errno.ENOENT
    assert calls == ["head"]  # gone from the cached listing; the HEAD confirms
    assert sorted([n async for n, _ in mount.listdir(f"{bucket}/small")]) == \
        ["f1", "f2", "f3", "f4", "outside"]


def spy_requests(mount, monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in ("list_dir_page", "head", "first_keys", "list_dir"):
        real = getattr(mount.backend, name)

        async def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return await _real(*args, **kwargs)
        monkeypatch.setattr(mount.backend, name, spy)
    return calls


async def test_negative_ttl_answers_new_names_from_the_listing(s3_server, bucket, raw,
                                                                monkeypatch):
    """[s3] negative_ttl: a burst of lookups of new names (creates) costs one LIST per
    negative_ttl instead of a HEAD each; an empty directory made by mkdir counts too;
    another client's object shows once the listing is that old."""
    mount = S3Mount(make_backend(s3_server, negative_ttl=30.0))
    await mount.mkdir(f"{bucket}/new")
    calls = spy_requests(mount, monkeypatch)
    for i in range(20):
        assert await errno_of(mount.lookup(f"{bucket}/new/f{i}")) == errno.ENOENT
    assert calls == ["list_dir_page"]  # one page: the marker alone, cached as empty
    raw.put_object(Bucket=bucket, Key="new/outside", Body=b"new")
    assert await errno_of(mount.lookup(f"{bucket}/new/outside")) == errno.ENOENT
    mount._fresh.clear()  # negative_ttl later: the small directory is listed again
    assert (await mount.lookup(f"{bucket}/new/outside")).size == 3
    assert await errno_of(mount.lookup(f"{bucket}/new/nope")) == errno.ENOENT
    assert calls == ["list_dir_page", "list_dir_page"]


async def test_write_read_and_cache_invalidated_by_own_write(mount, bucket, tmp_path):
    assert await names(mount, bucket) == []  # cached empty listing
    data = pattern_bytes(300_000)
    attr = await write_file(mount, tmp_path, f"{bucket}/dir/new.bin", data)
    assert attr.size == len(data)
    assert await names(mount, bucket) == ["dir"]  # within the TTL, yet fresh
    assert await names(mount, f"{bucket}/dir") == ["new.bin"]
    assert await read_all(mount, f"{bucket}/dir/new.bin") == data


async def test_overwrite_append_and_random_write_via_spool(mount, bucket, raw, tmp_path):
    original = pattern_bytes(3 * MiB + 7)
    raw.put_object(Bucket=bucket, Key="f", Body=original)
    spool = await Spool.create(tmp_path / "spool")
    writer = await mount.open_write(f"{bucket}/f", spool, truncate=False)
    assert writer.existed
    await mount.fill_spool(writer)  # copy-in through the prefetcher
    assert await spool.size() == len(original)
    await spool.write(len(original), b"APPENDED")  # append
    await spool.write(MiB, b"RANDOM")  # random write in the middle
    await mount.commit(writer)
    await spool.close()
    expect = bytearray(original + b"APPENDED")
    expect[MiB:MiB + 6] = b"RANDOM"
    assert raw.get_object(Bucket=bucket, Key="f")["Body"].read() == bytes(expect)
    # plain overwrite (O_TRUNC): no copy-in
    await write_file(mount, tmp_path, f"{bucket}/f", b"short", create=False)
    assert await read_all(mount, f"{bucket}/f") == b"short"


async def test_multipart_commit_through_mount(mount, bucket, raw, tmp_path):
    data = os.urandom(17 * MiB)
    await write_file(mount, tmp_path, f"{bucket}/big.bin", data)
    got = raw.get_object(Bucket=bucket, Key="big.bin")
    assert got["ETag"].strip('"').endswith("-3")
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(data).digest()


async def test_sequential_read_64mib_flat_memory(mount, bucket, raw):
    size = 64 * MiB
    data = os.urandom(size)
    raw.put_object(Bucket=bucket, Key="seq", Body=data)
    expect = hashlib.sha256(data).digest()
    del data
    reader = await mount.open_read(f"{bucket}/seq")
    info = await mount._head(f"{bucket}/seq")
    # the same prefetcher with an 8 MiB window: memory stays flat whatever the object size
    reader.prefetcher = Prefetcher(reader.prefetcher.fetch, info.size, max_window=8 * MiB)
    tracemalloc.start()
    try:
        digest, off = hashlib.sha256(), 0
        while chunk := await reader.read(off, 128 * 1024):
            digest.update(chunk)
            off += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert off == size and digest.digest() == expect
    p = reader.prefetcher
    assert p.peak_buffered <= 8 * MiB + 2 * 2 * MiB + KEEP_BEHIND
    assert peak < 40 * MiB, peak  # far below the 64 MiB object
    assert p.requests >= 8 and p.fetched == size
    await reader.close()


async def test_default_reader_keeps_requests_in_flight(mount, bucket, raw):
    data = pattern_bytes(24 * MiB)
    raw.put_object(Bucket=bucket, Key="s", Body=data)
    got = await read_all(mount, f"{bucket}/s")
    assert got == data


async def test_random_reads_through_mount(mount, bucket, raw):
    data = pattern_bytes(5 * MiB)
    raw.put_object(Bucket=bucket, Key="r", Body=data)
    reader = await mount.open_read(f"{bucket}/r")
    for off in (17, 4 * MiB, 2 * MiB + 3):
        assert await reader.read(off, 1000) == data[off:off + 1000]
    # the open fetched the first OPEN_READ bytes (the read at 17 is inside them); each
    # other random read fetched exactly what it asked
    assert reader.prefetcher.fetched == OPEN_READ + 2000
    assert reader.prefetcher.requests == 3
    await reader.close()


async def test_unlink(mount, bucket, raw):
    raw.put_object(Bucket=bucket, Key="d/x", Body=b"1")
    assert await names(mount, f"{bucket}/d") == ["x"]
    await mount.unlink(f"{bucket}/d/x")
    assert await errno_of(mount.lookup(f"{bucket}/d/x")) == errno.ENOENT
    assert await errno_of(mount.unlink(f"{bucket}/d/x")) == errno.ENOENT
    raw.put_object(Bucket=bucket, Key="e/y", Body=b"1")
    assert await errno_of(mount.unlink(f"{bucket}/e")) == errno.EISDIR
    # whatever the server keeps of an emptied prefix, listing and lookup agree
    listed = dict([(n, a.kind) async for n, a in mount.listdir(bucket)])
    mount._listings.clear()
    for name, kind in listed.items():
        assert (await mount.lookup(f"{bucket}/{name}")).kind == kind
        assert await names(mount, f"{bucket}/{name}") in ([], ["y"])


async def test_mkdir_rmdir_and_enotempty(mount, bucket, raw, tmp_path):
    await mount.mkdir(f"{bucket}/newdir")
    assert raw.head_object(Bucket=bucket, Key="newdir/")["ContentLength"] == 0
    assert (await mount.lookup(f"{bucket}/newdir")).kind == DIR
    assert await errno_of(mount.mkdir(f"{bucket}/newdir")) == errno.EEXIST
    assert await errno_of(mount.mkdir(f"{bucket}/missing/sub")) == errno.ENOENT
    await mount.mkdir(f"{bucket}/newdir/inner")
    await write_file(mount, tmp_path, f"{bucket}/newdir/file", b"x")
    assert await names(mount, f"{bucket}/newdir") == ["file", "inner"]
    assert await errno_of(mount.rmdir(f"{bucket}/newdir")) == errno.ENOTEMPTY
    assert await errno_of(mount.rmdir(f"{bucket}/newdir/file")) == errno.ENOTDIR
    await mount.rmdir(f"{bucket}/newdir/inner")
    await mount.unlink(f"{bucket}/newdir/file")
    await mount.rmdir(f"{bucket}/newdir")
    assert raw.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert await errno_of(mount.lookup(f"{bucket}/newdir")) == errno.ENOENT


async def test_mkdir_and_rmdir_of_a_bucket(mount, raw):
    name = f"mk-{os.getpid()}"
    await mount.mkdir(name)
    assert name in await names(mount, "")
    raw.put_object(Bucket=name, Key="k", Body=b"")
    assert await errno_of(mount.rmdir(name)) == errno.ENOTEMPTY
    raw.delete_object(Bucket=name, Key="k")
    await mount.rmdir(name)
    assert name not in await names(mount, "")


async def test_a_bucket_missing_from_the_cached_bucket_list_is_probed(mount, raw,
                                                                       monkeypatch):
    """ListBuckets names only our own buckets, and its listing is cached: a bucket another
    client created since (or another account's that a policy opens to us) is found by
    path at once; a name that cannot be a bucket is ENOENT without a request."""
    await names(mount, "")  # the bucket list is cached now
    name = f"later-{os.getpid()}"
    raw.create_bucket(Bucket=name)
    raw.put_object(Bucket=name, Key="k", Body=b"data")
    try:
        assert (await mount.lookup(name)).kind == DIR
        assert (await mount.lookup(f"{name}/k")).size == 4
        assert name in await names(mount, "")  # kept in the cached list
        calls = spy_requests(mount, monkeypatch)
        assert await errno_of(mount.lookup("no-such-bucket-zz")) == errno.ENOENT
        assert calls == ["list_dir_page"]  # NoSuchBucket
        for bad in ("ab", "with space", "a" * 256, "semi;colon", ".git", ".Trash-0"):
            assert await errno_of(mount.lookup(bad)) == errno.ENOENT
        assert calls == ["list_dir_page"]
    finally:
        raw.delete_object(Bucket=name, Key="k")
        raw.delete_bucket(Bucket=name)


async def test_no_sign_request_reads_a_public_bucket_without_credentials(
        s3_server, public_bucket, bucket, raw, tmp_path, monkeypatch, caplog):
    """[s3] no_sign_request (the AWS CLI's --no-sign-request): unsigned requests, no
    credentials needed or read; what the server opens to anyone is readable, the rest
    EACCES."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    raw.put_object(Bucket=bucket, Key="secret.txt", Body=b"no")
    mount = S3Mount(S3Backend(S3Config.from_section({
        "endpoint_url": s3_server["endpoint"], "region": "us-east-1",
        "no_sign_request": True})))
    assert await names(mount, f"{public_bucket}/data") == ["readme.txt"]
    assert await read_all(mount, f"{public_bucket}/data/readme.txt") == b"open data\n"
    assert await errno_of(mount.lookup(f"{bucket}/secret.txt")) == errno.EACCES
    assert await errno_of(write_file(mount, tmp_path, f"{public_bucket}/data/new", b"x")) \
        == errno.EACCES
    assert raw.list_objects_v2(Bucket=public_bucket, Prefix="data/")["KeyCount"] == 1
    denied = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert denied and "unsigned request" in denied[0] and "credentials" not in denied[0]


def record_headers(client, name: str) -> dict[str, list[str]]:
    """operation name -> the ``name`` header of each request ``client`` sends."""
    seen: dict[str, list[str]] = {}

    def capture(request, **kwargs):
        op = kwargs["event_name"].rsplit(".", 1)[-1]
        value = request.headers.get(name, "")
        seen.setdefault(op, []).append(value.decode() if isinstance(value, bytes) else value)
    client.meta.events.register("before-send.s3", capture)
    return seen


@pytest.mark.parametrize("pays", [True, False])
async def test_requester_pays_is_said_on_every_request_that_can(s3_server, bucket, raw,
                                                                 tmp_path, pays):
    """[s3] requester_pays (requester-pays datasets): the listing, the open's GET, a HEAD,
    a PUT, a copy and a delete carry ``x-amz-request-payer: requester``; ListBuckets (which
    cannot) and a mount without the option do not. (SeaweedFS ignores the header: this
    checks what is sent.)"""
    mount = S3Mount(make_backend(s3_server, requester_pays=pays, direct_requests=False))
    seen = record_headers(mount.backend.client, "x-amz-request-payer")
    raw.put_object(Bucket=bucket, Key="d/a.txt", Body=b"abc")
    await names(mount, "")
    assert await names(mount, f"{bucket}/d") == ["a.txt"]
    assert await read_all(mount, f"{bucket}/d/a.txt") == b"abc"
    await mount.backend.head(bucket, "d/a.txt")
    await write_file(mount, tmp_path, f"{bucket}/d/b.txt", b"xyz")
    await mount.rename(f"{bucket}/d/b.txt", f"{bucket}/d/c.txt")
    want = "requester" if pays else ""
    assert seen.pop("ListBuckets") == [""]
    assert {"ListObjectsV2", "GetObject", "HeadObject", "PutObject", "CopyObject",
            "DeleteObject"} <= set(seen)
    assert all(v == want for values in seen.values() for v in values), seen


async def test_renames_keep_the_storage_class(mount, bucket, raw):
    """S3 stores a copy that names no storage class as STANDARD: a rename asks for the
    source's (a file, and every key of a directory); STANDARD itself is not sent."""
    sent = record_headers(mount.backend.client, "x-amz-storage-class")
    raw.put_object(Bucket=bucket, Key="ia.bin", Body=b"1", StorageClass="STANDARD_IA")
    raw.put_object(Bucket=bucket, Key="d/ia.bin", Body=b"2", StorageClass="STANDARD_IA")
    raw.put_object(Bucket=bucket, Key="d/std.bin", Body=b"3")
    await mount.rename(f"{bucket}/ia.bin", f"{bucket}/moved.bin")
    await mount.rename(f"{bucket}/d", f"{bucket}/e")
    assert sorted(sent["CopyObject"]) == ["", "STANDARD_IA", "STANDARD_IA"]
    for key, cls in (("moved.bin", "STANDARD_IA"), ("e/ia.bin", "STANDARD_IA"),
                     ("e/std.bin", None)):
        assert raw.head_object(Bucket=bucket, Key=key).get("StorageClass") == cls, key


async def test_sse_encrypts_every_object_written(s3_server, bucket, raw, tmp_path):
    """[s3] sse = "AES256": a single PUT, a multipart upload and a rename's copy ask for
    server-side encryption (the header as sent), and SeaweedFS reports it; reads and
    listings do not carry it."""
    mount = S3Mount(make_backend(s3_server, sse="AES256", direct_requests=False))
    sent = record_headers(mount.backend.client, "x-amz-server-side-encryption")
    await write_file(mount, tmp_path, f"{bucket}/small", b"s")
    await write_file(mount, tmp_path, f"{bucket}/big", os.urandom(9 * MiB))
    await mount.rename(f"{bucket}/small", f"{bucket}/moved")
    assert await names(mount, bucket) == ["big", "moved"]
    for op in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        assert sent[op] == ["AES256"], (op, sent)
    assert set(sent["ListObjectsV2"]) == {""} and set(sent.get("UploadPart", [""])) == {""}
    assert raw.head_object(Bucket=bucket, Key="moved")["ServerSideEncryption"] == "AES256"


def test_sse_kms_key_and_config_checks():
    from botocore.awsrequest import AWSResponse

    from mcpfs.backends.s3_defaults import RequestDefaults
    backend = S3Backend(S3Config.from_section({
        "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1",
        "sse": "aws:kms", "sse_kms_key_id": "key-1"}))
    headers = {}

    def answer(params, **_):  # (SeaweedFS has no KMS: what would be sent, not sent)
        headers.update(params["headers"])
        return AWSResponse("", 200, {}, None), {"UploadId": "u"}
    backend.client.meta.events.register("before-call.s3.CreateMultipartUpload", answer)
    backend.client.create_multipart_upload(Bucket="b", Key="k")
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "key-1"
    assert RequestDefaults().install(backend.client) is None  # nothing asked: no hook
    for bad in ({"sse": "rot13"}, {"sse_kms_key_id": "k"},
                {"sse": "AES256", "sse_kms_key_id": "k"}):
        with pytest.raises(McpfsError) as exc:
            S3Config.from_section(bad)
        assert exc.value.errno == errno.EINVAL


async def test_rename_file(mount, bucket, raw):
    raw.put_object(Bucket=bucket, Key="a/src.txt", Body=b"content", Metadata={"m": "1"})
    raw.put_object(Bucket=bucket, Key="b/", Body=b"")
    await mount.rename(f"{bucket}/a/src.txt", f"{bucket}/b/dst.txt")
    assert await errno_of(mount.lookup(f"{bucket}/a/src.txt")) == errno.ENOENT
    got = raw.get_object(Bucket=bucket, Key="b/dst.txt")
    assert got["Body"].read() == b"content" and got["Metadata"] == {"m": "1"}
    assert await names(mount, f"{bucket}/b") == ["dst.txt"]
    assert await errno_of(mount.rename(f"{bucket}/b/dst.txt", f"{bucket}/zz/x")) == \
        errno.ENOENT
    raw.put_object(Bucket=bucket, Key="c/", Body=b"")
    assert await errno_of(mount.rename(f"{bucket}/b/dst.txt", f"{bucket}/c")) == errno.EISDIR
    assert await errno_of(mount.rename(bucket, "other")) == errno.EPERM


async def test_rename_dir_per_key_with_progress(mount, bucket, raw, caplog, monkeypatch):
    import mcpfs.mounts.s3_rename as s3mod
    monkeypatch.setattr(s3mod, "PROGRESS_EVERY", 10)
    caplog.set_level(logging.INFO, logger="mcpfs")
    keys = [f"src/{i:03d}" for i in range(40)] + ["src/deep/x", "src/"]
    for k in keys:
        raw.put_object(Bucket=bucket, Key=k, Body=k.encode())
    raw.put_object(Bucket=bucket, Key="full/keep", Body=b"")
    assert await errno_of(mount.rename(f"{bucket}/src", f"{bucket}/full")) == errno.ENOTEMPTY
    assert await errno_of(mount.rename(f"{bucket}/src", f"{bucket}/src/deep")) == errno.EINVAL
    await mount.rename(f"{bucket}/src", f"{bucket}/dst")
    left = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert sorted(left) == sorted(["dst/" + k[4:] for k in keys] + ["full/keep"])
    assert raw.get_object(Bucket=bucket, Key="dst/deep/x")["Body"].read() == b"src/deep/x"
    assert await names(mount, bucket) == ["dst", "full"]
    assert "10 keys copied" in caplog.text and "42 keys in" in caplog.text


async def test_xattrs(mount, bucket, raw):
    raw.put_object(Bucket=bucket, Key="x.csv", Body=b"a,b\n", ContentType="text/csv",
                   Metadata={"owner": "data-team", "ipfs-cid": "bafyfake"})
    path = f"{bucket}/x.csv"
    names_ = await mount.listxattr(path)
    for n in ("user.mcpfs.etag", "user.mcpfs.storage_class", "user.mcpfs.content_type",
              "user.mcpfs.backend", "user.s3.meta.owner", "user.s3.meta.ipfs-cid"):
        assert n in names_
    assert await mount.getxattr(path, "user.mcpfs.etag") == \
        hashlib.md5(b"a,b\n").hexdigest().encode()
    assert await mount.getxattr(path, "user.mcpfs.content_type") == b"text/csv"
    assert await mount.getxattr(path, "user.mcpfs.storage_class") == b"STANDARD"
    assert await mount.getxattr(path, "user.mcpfs.backend") == b"s3"
    assert await mount.getxattr(path, "user.s3.meta.owner") == b"data-team"
    assert await errno_of(mount.getxattr(path, "user.mcpfs.nope")) == errno.ENODATA
    assert await mount.listxattr(bucket) == ["user.mcpfs.backend"]


async def test_new_file_loses_if_none_match_race(mount, bucket, raw, tmp_path):
    spool = await Spool.create(tmp_path / "spool")
    writer = await mount.open_write(f"{bucket}/race", spool, truncate=True, create=True)
    await spool.write(0, b"mine")
    raw.put_object(Bucket=bucket, Key="race", Body=b"theirs")  # a concurrent creator
    assert await errno_of(mount.commit(writer)) == errno.EEXIST
    await spool.close()
    assert raw.get_object(Bucket=bucket, Key="race")["Body"].read() == b"theirs"


async def test_wrong_credentials_mount_is_eacces(s3_server, caplog):
    wrong = "wrong-secret-value-zzzz"
    m = S3Mount(make_backend(s3_server, secret=wrong, max_attempts=1))
    assert await errno_of(names(m, "")) == errno.EACCES
    assert await errno_of(m.lookup("some-bucket")) == errno.EACCES
    assert wrong not in caplog.text and SECRET_KEY not in caplog.text
    assert len([r for r in caplog.records if r.name.startswith("mcpfs")
                and r.levelno >= logging.WARNING]) == 1


async def test_open_write_checks(mount, bucket, raw, tmp_path):
    spool = await Spool.create(tmp_path / "spool")
    raw.put_object(Bucket=bucket, Key="d/f", Body=b"")
    assert await errno_of(mount.open_write("", spool, True)) == errno.EPERM
    assert await errno_of(mount.open_write(bucket, spool, True)) == errno.EISDIR
    assert await errno_of(mount.open_write(f"{bucket}/d", spool, True)) == errno.EISDIR
    assert await errno_of(mount.open_write(f"{bucket}/no/f", spool, True)) == errno.ENOENT
    assert await errno_of(mount.open_write(f"{bucket}/d/f/g", spool, True)) == errno.ENOTDIR
    await spool.close()


async def test_a_small_file_is_committed_from_memory(mount, bucket, raw, tmp_path):
    """A spool still in memory (vfs hands one over: ``memory_commit``) is one PUT of its
    bytes, with the metadata the bridge asked for; no spool file is ever made."""
    spool = Spool.create_sync(tmp_path / "spool", memory=True)
    try:
        writer = await mount.open_write(f"{bucket}/m.txt", spool, truncate=True, create=True)
        await spool.write(0, b"from memory")
        writer.extra.update(ipfs_cid="bafy-test", source="/mfs/m.txt")
        assert spool.in_memory
        attr = await mount.commit(writer)
    finally:
        await spool.close()
    assert attr.size == 11 and not list((tmp_path / "spool").glob("*"))
    got = raw.get_object(Bucket=bucket, Key="m.txt")
    assert got["Body"].read() == b"from memory"
    mtime = got["Metadata"].pop("mtime")  # rclone's x-amz-meta-mtime (s3_times.py)
    assert abs(float(mtime) - attr.mtime_ns / 1e9) < 1e-6
    assert got["Metadata"] == {"ipfs-cid": "bafy-test", "mcpfs-source": "/mfs/m.txt"}


async def test_open_is_one_get_and_a_small_read_after_it_none(mount, bucket, raw):
    small, empty = pattern_bytes(5000), b""
    raw.put_object(Bucket=bucket, Key="o/small", Body=small)
    raw.put_object(Bucket=bucket, Key="o/empty", Body=empty)
    stats = Stats()
    mount.attach_stats(stats)
    assert (await mount.lookup(bucket)).is_dir  # the bucket's first page, not a HEAD
    assert await errno_of(mount.lookup("no-such-bucket-here")) == errno.ENOENT
    reader = await mount.open_read(f"{bucket}/o/small")
    assert await reader.read(0, 100_000) == small  # all of it came with the open
    await reader.close()
    reader = await mount.open_read(f"{bucket}/o/empty")  # listed as empty: a HEAD
    assert await reader.read(0, 10) == b""
    await reader.close()
    got = stats.snapshot()["Backends"]["s3"]["Ops"]
    assert got["get"]["Count"] == 1 and got["head"]["Count"] == 1, got
    assert got["list"]["Count"] == 3 and "head_bucket" not in got, got  # bench, o/, missing
    raw.put_object(Bucket=bucket, Key="o/small", Body=b"new")
    reader = await mount.open_read(f"{bucket}/o/small")  # an open sees the object now
    assert await reader.read(0, 10) == b"new"
    await reader.close()


async def test_a_listing_that_raced_our_own_write_keeps_it(s3_server, bucket, raw, tmp_path,
                                                         monkeypatch):
    """A page listed while we wrote into the directory (a burst of write-back uploads)
    is kept with our change replayed on it, so the listing stays usable for new names."""
    mount = S3Mount(make_backend(s3_server, negative_ttl=30.0))
    raw.put_object(Bucket=bucket, Key="d/old", Body=b"o")
    assert (await mount.lookup(f"{bucket}/d/old")).size == 1  # d listed and kept
    real = mount.backend.list_dir_page
    during = [f"{bucket}/d/new"]

    async def racing(*args, **kwargs):
        got = await real(*args, **kwargs)
        while during:  # our own write lands while the page is on its way
            await write_file(mount, tmp_path, during.pop(), b"ours")
        return got
    monkeypatch.setattr(mount.backend, "list_dir_page", racing)
    mount._fresh.clear()  # negative_ttl later: a new name lists d again, racing the write
    assert await errno_of(mount.lookup(f"{bucket}/d/missing")) == errno.ENOENT
    assert sorted(mount._listings[f"{bucket}/d"]) == ["new", "old"]
    assert f"{bucket}/d" in mount._fresh
    assert (await mount.lookup(f"{bucket}/d/new")).size == 4
