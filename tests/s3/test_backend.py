"""backends/s3.py against a real S3 server (SeaweedFS): listing, ranges, uploads, errors."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mcpfs.backends.s3 import S3Config, S3Backend
from mcpfs.backends.s3_upload import multipart_etag
from mcpfs.errors import McpfsError

from ..conftest import pattern_bytes
from .conftest import SECRET_KEY, make_backend

MiB = 1 << 20


async def test_list_buckets_and_missing(backend, bucket):
    names = [n for n, _ in await backend.list_buckets()]
    assert bucket in names
    await backend.head_bucket(bucket)
    with pytest.raises(McpfsError) as exc:
        await backend.head("no-such-bucket-x", "k")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(McpfsError) as exc:
        await backend.head(bucket, "missing")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(McpfsError) as exc:
        await backend.list_dir("no-such-bucket-x", "")
    assert exc.value.errno == errno.ENOENT


async def test_configured_bucket_list_makes_no_request(s3_server):
    b = make_backend(s3_server, secret="wrong", buckets=["x", "y"])
    assert [n for n, _ in await b.list_buckets()] == ["x", "y"]


async def test_list_dir_pages_and_prefixes(backend, bucket, raw):
    for key in ["a/1", "a/2", "a/sub/3", "b", "c/"]:
        raw.put_object(Bucket=bucket, Key=key, Body=b"x")
    prefixes, objects = await backend.list_dir(bucket, "")
    assert prefixes == ["a/", "c/"] and [o.key for o in objects] == ["b"]
    prefixes, objects = await backend.list_dir(bucket, "a/")
    assert prefixes == ["a/sub/"] and [o.key for o in objects] == ["a/1", "a/2"]
    keys = [o.key async for page in backend.walk(bucket, "a/", page_size=2) for o in page]
    assert keys == ["a/1", "a/2", "a/sub/3"]


async def test_listing_times_are_read_without_dateutil(backend, bucket, raw, monkeypatch):
    """A listing's LastModified values are parsed by fast_timestamp (botocore's own
    parser took 40 us each: 0.4 s of a 10,000-key listing), to the same times HEAD gives."""
    import dateutil.parser
    for i in range(20):
        raw.put_object(Bucket=bucket, Key=f"t/{i:02d}", Body=b"x")
    slow = []
    real = dateutil.parser.parse
    monkeypatch.setattr(dateutil.parser, "parse",
                        lambda value, **kw: slow.append(value) or real(value, **kw))
    _, objects = await backend.list_dir(bucket, "t/")
    assert len(objects) == 20 and slow == []
    for obj in objects[:3]:
        head = await backend.head(bucket, obj.key)  # an RFC 822 date: email.utils reads it
        assert abs(head.mtime_ns - obj.mtime_ns) < 1_000_000_000 and obj.mtime_ns > 0
    assert slow == []


async def test_list_20000_keys(backend, many_keys):
    bucket, keys = many_keys
    prefixes, objects = await backend.list_dir(bucket, "many/")
    assert prefixes == ["many/sub/"]
    assert [o.key for o in objects] == keys


async def test_ranged_reads(backend, bucket, raw):
    data = pattern_bytes(3 * MiB + 17)
    raw.put_object(Bucket=bucket, Key="r", Body=data)
    info = await backend.head(bucket, "r")
    assert info.size == len(data)
    for start, end in [(0, 1), (5, 1000), (MiB - 3, 2 * MiB + 5), (len(data) - 10, len(data))]:
        assert await backend.get_range(bucket, "r", start, end, info.etag) == data[start:end]
    assert await backend.get_range(bucket, "r", len(data) - 2, len(data) + 100) == data[-2:]
    assert await backend.get_range(bucket, "r", len(data), len(data) + 100) == b""


async def test_read_pinned_to_etag_is_estale_after_overwrite(backend, bucket, raw):
    raw.put_object(Bucket=bucket, Key="e", Body=b"old content")
    info = await backend.head(bucket, "e")
    raw.put_object(Bucket=bucket, Key="e", Body=b"new content!")
    with pytest.raises(McpfsError) as exc:
        await backend.get_range(bucket, "e", 0, 5, info.etag)
    assert exc.value.errno == errno.ESTALE


async def test_single_put_and_metadata(backend, bucket, raw, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    await backend.upload_file(bucket, "dir/f.txt", str(path), 5, content_type="text/plain")
    info = await backend.head(bucket, "dir/f.txt")
    assert (info.size, info.content_type, info.storage_class) == (5, "text/plain", "STANDARD")
    assert info.etag.strip('"') == hashlib.md5(b"hello").hexdigest()


async def test_if_none_match_conflict_is_eexist(backend, bucket):
    await backend.put_bytes(bucket, "once", b"1", if_none_match=True)
    with pytest.raises(McpfsError) as exc:
        await backend.put_bytes(bucket, "once", b"2", if_none_match=True)
    assert exc.value.errno == errno.EEXIST
    await backend.put_bytes(bucket, "once", b"3")  # unconditional overwrite still works


def lose_first_response(client, operation: str) -> list:
    """botocore retries the first successful ``operation`` as if its response had been lost
    (the server carried it out); the returned list gets one item when that happened."""
    retried: list = []

    def retry_once(response=None, attempts=None, **_):
        if not retried and response is not None and response[0].status_code == 200:
            retried.append(attempts)
            return 0  # retry at once
        return None
    client.meta.events.register_first(f"needs-retry.s3.{operation}", retry_once)
    return retried


@pytest.mark.parametrize("source", ["file", "bytes"])
async def test_a_retried_conditional_put_that_had_succeeded_is_not_a_conflict(
        s3_server, bucket, raw, tmp_path, source):
    backend = make_backend(s3_server, direct_requests=False)  # botocore in this process
    retried = lose_first_response(backend.client, "PutObject")
    path = tmp_path / "f"
    path.write_bytes(b"mine")
    if source == "file":
        info = await backend.upload_file(bucket, "retried", str(path), 4, if_none_match=True)
    else:  # markers, small files committed from memory
        info = await backend.put_bytes(bucket, "retried", b"mine", if_none_match=True)
    assert retried == [1]  # the second attempt met the first one's object: 412
    assert info.etag.strip('"') == hashlib.md5(b"mine").hexdigest()
    assert raw.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"mine"
    with pytest.raises(McpfsError) as exc:  # another object there is still a conflict
        await backend.put_bytes(bucket, "retried", b"other", if_none_match=True)
    assert exc.value.errno == errno.EEXIST
    assert raw.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"mine"


async def test_a_retried_conditional_complete_that_had_succeeded_is_not_a_conflict(
        s3_server, bucket, raw, tmp_path):
    backend = make_backend(s3_server)
    retried = lose_first_response(backend.client, "CompleteMultipartUpload")
    data = os.urandom(9 * MiB)
    path = tmp_path / "big"
    path.write_bytes(data)
    info = await backend.upload_file(bucket, "big-retried", str(path), len(data),
                                     if_none_match=True)
    assert retried == [1]
    assert info.etag.strip('"').endswith("-2")
    got = raw.get_object(Bucket=bucket, Key="big-retried")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert await backend.list_multipart_uploads(bucket) == []


def test_multipart_etag_is_the_md5_of_the_part_md5s():
    parts = [b"a" * 10, b"b" * 20]
    etags = {i + 1: f'"{hashlib.md5(p).hexdigest()}"' for i, p in enumerate(parts)}
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    assert multipart_etag(etags) == f"{hashlib.md5(joined).hexdigest()}-2"
    with pytest.raises(ValueError):  # not an MD5: _unless_ours keeps the conflict
        multipart_etag({1: '"not-hex"'})


async def test_multipart_upload(s3_server, bucket, raw, tmp_path):
    backend = make_backend(s3_server, part_concurrency=3)
    data = os.urandom(21 * MiB + 5)
    path = tmp_path / "big"
    path.write_bytes(data)
    info = await backend.upload_file(bucket, "big/obj", str(path), len(data),
                                     if_none_match=True)
    assert info.etag.strip('"').endswith("-3")  # 8 + 8 + 5 MiB parts
    got = raw.get_object(Bucket=bucket, Key="big/obj")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert await backend.list_multipart_uploads(bucket) == []


async def test_multipart_complete_if_none_match(s3_server, bucket, raw, tmp_path):
    backend = make_backend(s3_server)
    raw.put_object(Bucket=bucket, Key="taken", Body=b"first")
    path = tmp_path / "big"
    path.write_bytes(os.urandom(9 * MiB))
    with pytest.raises(McpfsError) as exc:
        await backend.upload_file(bucket, "taken", str(path), 9 * MiB, if_none_match=True)
    assert exc.value.errno == errno.EEXIST
    assert raw.get_object(Bucket=bucket, Key="taken")["Body"].read() == b"first"
    assert await backend.list_multipart_uploads(bucket) == []


async def test_multipart_abort_on_failure(s3_server, bucket, raw, tmp_path, monkeypatch):
    backend = make_backend(s3_server, part_concurrency=2)
    real = backend._upload_part_sync
    calls = []

    def flaky(b, key, upload_id, number, *rest):
        calls.append(number)
        if number == 2:
            raise McpfsError("injected part failure", errno=errno.EIO)
        return real(b, key, upload_id, number, *rest)
    monkeypatch.setattr(backend, "_upload_part_sync", flaky)
    path = tmp_path / "big"
    path.write_bytes(os.urandom(30 * MiB))
    with pytest.raises(McpfsError) as exc:
        await backend.upload_file(bucket, "partial", str(path), 30 * MiB)
    assert exc.value.errno == errno.EIO and "injected" in str(exc.value)
    assert 2 in calls
    with pytest.raises(McpfsError) as exc:
        await backend.head(bucket, "partial")
    assert exc.value.errno == errno.ENOENT
    assert await backend.list_multipart_uploads(bucket) == []
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_copy_and_delete(backend, bucket, raw):
    raw.put_object(Bucket=bucket, Key="src", Body=b"payload", Metadata={"k": "v"})
    await backend.copy(bucket, "src", bucket, "dst", 7)
    info = await backend.head(bucket, "dst")
    assert info.size == 7 and info.metadata == {"k": "v"}
    await backend.delete_many(bucket, ["src", "dst"])
    assert await backend.first_keys(bucket, "") == []


async def test_copy_above_the_single_request_limit_is_in_parts(backend, bucket, raw,
                                                               monkeypatch):
    """Above CopyObject's 5 GiB a copy is a multipart upload of UploadPartCopy ranges
    (limits lowered here so a 21 MiB object takes 3 parts on the real server)."""
    from mcpfs.backends import s3_copy
    monkeypatch.setattr(s3_copy, "MAX_COPY_SIZE", 8 << 20)
    monkeypatch.setattr(s3_copy, "COPY_PART_MIN", 8 << 20)
    data = os.urandom(21 << 20)
    raw.put_object(Bucket=bucket, Key="big", Body=data, Metadata={"k": "v"})
    etag = raw.head_object(Bucket=bucket, Key="big")["ETag"]
    await backend.copy(bucket, "big", bucket, "copy", len(data), if_match=etag,
                       metadata={"mcpfs-source": "/s3/x"})
    got = raw.get_object(Bucket=bucket, Key="copy")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"k": "v", "mcpfs-source": "/s3/x"}
    assert raw.head_object(Bucket=bucket, Key="copy", PartNumber=1)["PartsCount"] == 3
    with pytest.raises(McpfsError) as exc:  # the source changed: nothing is left behind
        await backend.copy(bucket, "big", bucket, "copy2", len(data), if_match='"0"')
    assert exc.value.errno == errno.EEXIST
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(McpfsError) as exc:
        await backend.copy(bucket, "gone", bucket, "copy3", len(data))
    assert exc.value.errno == errno.ENOENT


async def test_wrong_secret_is_eacces_without_secret_in_logs(s3_server, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "definitely-not-the-secret-0123456789"
    b = make_backend(s3_server, secret=wrong, max_attempts=1)
    for _ in range(3):
        with pytest.raises(McpfsError) as exc:
            await b.list_buckets()
        assert exc.value.errno == errno.EACCES
        assert wrong not in str(exc.value) and SECRET_KEY not in str(exc.value)
    ours = [r for r in caplog.records if r.name.startswith("mcpfs")]
    assert len([r for r in ours if r.levelno >= logging.WARNING]) == 1  # one clear line
    assert "denied" in ours[0].getMessage()
    assert wrong not in caplog.text and SECRET_KEY not in caplog.text


async def test_missing_credentials_is_eacces(monkeypatch):
    import boto3
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    b = S3Backend(S3Config(endpoint_url="http://127.0.0.1:9", max_attempts=1),
                  session=boto3.session.Session(region_name="us-east-1"))
    with pytest.raises(McpfsError) as exc:
        await b.list_buckets()
    assert exc.value.errno == errno.EACCES


class _SlowDown(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        body = (b'<?xml version="1.0"?><Error><Code>SlowDown</Code>'
                b"<Message>Reduce your request rate.</Message></Error>")
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_archived_object_is_eacces_with_its_own_warning(caplog):
    # (SeaweedFS has no archive tier: the error AWS sends for a GET of a GLACIER object)
    import botocore.exceptions
    from mcpfs.backends.s3 import _Denied, map_error
    err = botocore.exceptions.ClientError(
        {"Error": {"Code": "InvalidObjectState", "Message": "The operation is not valid for "
                   "the object's storage class"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "GetObject")
    denied = _Denied()
    with caplog.at_level(logging.WARNING, logger="mcpfs.backends.s3"):
        mapped = map_error(err, "read s3://b/cold.bin", denied)
    assert mapped.errno == errno.EACCES and "restore" in str(mapped)
    assert [r.getMessage() for r in caplog.records] == [
        "read s3://b/cold.bin: the object is archived (a Glacier storage class): restore it "
        "(aws s3api restore-object) before reading it"]
    assert not denied.logged  # not a credentials problem: a later denial still warns


async def test_throttling_is_retried_then_eio(s3_server):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowDown)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        b = make_backend({**s3_server, "endpoint": f"http://127.0.0.1:{server.server_port}"},
                         max_attempts=3)
        _SlowDown.hits = 0
        with pytest.raises(McpfsError) as exc:
            await b.head_bucket("any")
        assert exc.value.errno == errno.EIO
        assert _SlowDown.hits == 3  # max_attempts tries in all
        with pytest.raises(McpfsError):
            await b.list_dir("any", "")
        assert _SlowDown.hits == 6
    finally:
        server.shutdown()
        server.server_close()


def test_config_ignores_credentials_in_section(caplog):
    cfg = S3Config.from_section({"region": "eu-west-1", "aws_secret_access_key": "s3cr3t",
                                 "buckets": ["a"]})
    assert cfg.region == "eu-west-1" and cfg.buckets == ("a",)
    assert "s3cr3t" not in caplog.text and "aws_secret_access_key" in caplog.text


async def test_a_server_that_never_answers_is_eio_after_read_timeout():
    """[s3] read_timeout (and connect_timeout) reach the client: a server that accepts
    connections and never answers is EIO after it, not after botocore's default 60 s."""
    import socket

    import boto3
    import trio
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        cfg = S3Config.from_section({"endpoint_url": f"http://127.0.0.1:{hung.getsockname()[1]}",
                                     "read_timeout": 0.5, "connect_timeout": 0.5,
                                     "max_attempts": 1})
        b = S3Backend(cfg, session=boto3.session.Session(
            aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"))
        with trio.fail_after(20):  # a guard, not a measure: the default would take 60 s
            with pytest.raises(McpfsError) as exc:
                await b.list_dir("any", "")
        assert exc.value.errno == errno.EIO and "timeout" in str(exc.value).lower()
    finally:
        hung.close()
