"""Small PUTs as one signed request each (backends/s3_direct.py: DirectRequests), on SeaweedFS
behind a forwarding proxy that shows what was sent and can misbehave (fault_proxy.py): the
object boto3 would store, boto3's headers and error mapping, botocore's retries, https with
the configured CA bundle, and boto3 for whatever the direct path does not serve. Each PUT
case runs on both transports: from a worker thread (``http.client``, a spool file's body)
and from the trio thread (s3_wire.py, a body in memory)."""

from __future__ import annotations

import base64
import errno
import hashlib

import pytest
import trio

from mcpfs.errors import McpfsError
from tests.conftest import pattern_bytes

from .conftest import make_backend
from .fault_proxy import FaultProxy, self_signed


def spool(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def proxy(s3_server):
    with FaultProxy(s3_server["endpoint"]) as p:
        yield p


def behind(proxy: FaultProxy, server: dict, **config):
    return make_backend(dict(server, endpoint=proxy.endpoint), **config)


def direct(headers: dict[str, str]) -> bool:
    return headers.get("user-agent") == "mcpfs"  # (boto3's says Boto3/...)


TRANSPORTS = ["thread", "trio"]


async def put(backend, transport: str, tmp_path, bucket: str, key: str, data: bytes,
              **kwargs):
    """A small PUT through the backend: from a worker thread (``upload_file`` of a spool
    file), or from the trio thread (``put_bytes`` once the bucket's target is known)."""
    if transport == "thread":
        return await backend.upload_file(bucket, key, spool(tmp_path, "s", data), len(data),
                                         **kwargs)
    await trio.to_thread.run_sync(backend._direct.target, bucket)
    return await backend.put_bytes(bucket, key, data, **kwargs)


def sent_from(backend, transport: str) -> bool:
    """Whether the PUTs so far kept connections of ``transport`` alive (from the trio
    thread: none of the worker threads'; a HEAD goes from the trio thread either way)."""
    trio_side = any(backend._direct._wire._idle.values())
    thread_side = any(backend._direct._idle.values())
    return (trio_side and not thread_side) if transport == "trio" else thread_side


def drop_idle(backend) -> None:
    """Close both transports' kept-alive connections (the next request opens one)."""
    backend._direct.close()
    backend._direct.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_small_put_is_one_signed_request_with_boto3s_headers(
        s3_server, proxy, raw, bucket, tmp_path, transport):
    backend = behind(proxy, s3_server, requester_pays=True, sse="AES256")
    data = pattern_bytes(300_000, 4)
    try:
        info = await put(backend, transport, tmp_path, bucket, "p/one (1)+é.bin", data,
                         if_none_match=True, content_type="application/x-test",
                         metadata={"ipfs-cid": "bafyx"})
        assert sent_from(backend, transport)
    finally:
        drop_idle(backend)
    [sent] = proxy.puts()
    assert direct(sent)
    assert sent["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert sent["content-md5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert sent["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()  # (http)
    assert (sent["if-none-match"], sent["x-amz-request-payer"],
            sent["x-amz-server-side-encryption"]) == ("*", "requester", "AES256")
    got = raw.get_object(Bucket=bucket, Key="p/one (1)+é.bin")
    assert got["Body"].read() == data and got["ETag"] == info.etag
    assert info.etag.strip('"') == hashlib.md5(data).hexdigest()
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"ipfs-cid": "bafyx"}
    assert got["ServerSideEncryption"] == "AES256"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_direct_put_errors_map_as_boto3s(s3_server, proxy, bucket, tmp_path, transport):
    data = b"x" * 100
    path = spool(tmp_path, "s", data)
    backend = behind(proxy, s3_server)
    wrong = behind(proxy, s3_server, secret="not-the-secret")
    try:
        await put(backend, transport, tmp_path, bucket, "k", data)
        with pytest.raises(McpfsError) as exists:  # If-None-Match: * on an existing key
            await put(backend, transport, tmp_path, bucket, "k", data, if_none_match=True)
        assert exists.value.errno == errno.EEXIST
        with pytest.raises(McpfsError) as denied:
            await put(wrong, transport, tmp_path, bucket, "k2", data)
        assert denied.value.errno == errno.EACCES
        assert "not-the-secret" not in str(denied.value)
        assert sent_from(backend, transport)
        if transport == "trio":  # (the rest is about spool files)
            return
        with pytest.raises(McpfsError) as gone:
            await backend.upload_file(bucket, "k3", str(tmp_path / "missing"), 100)
        assert gone.value.errno == errno.ENOENT
        with pytest.raises(McpfsError) as short:  # a spool shorter than said: nothing sent
            await backend.upload_file(bucket, "k4", path, 101)
        assert short.value.errno == errno.EIO
    finally:
        drop_idle(backend)
        drop_idle(wrong)
        assert all(direct(h) for h in proxy.puts()) and len(proxy.puts()) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_throttling_is_retried_up_to_max_attempts(s3_server, proxy, raw, bucket,
                                                        tmp_path, transport):
    backend = behind(proxy, s3_server, max_attempts=3)
    try:
        proxy.faults[:] = ["503", "503"]
        await put(backend, transport, tmp_path, bucket, "slow", b"y" * 10)
        assert len(proxy.puts()) == 3 and raw.head_object(Bucket=bucket, Key="slow")
        proxy.faults[:] = ["503"] * 3
        with pytest.raises(McpfsError) as exc:
            await put(backend, transport, tmp_path, bucket, "slower", b"y" * 10)
        assert exc.value.errno == errno.EIO and "SlowDown" in str(exc.value)
        assert len(proxy.puts()) == 6 and sent_from(backend, transport)
    finally:
        drop_idle(backend)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_that_stops_answering_times_out_and_is_retried(
        s3_server, proxy, raw, bucket, tmp_path, transport):
    """No answer within read_timeout: the request is given up and sent again (a try
    counted); when every try meets the same, EIO, well before the server would answer."""
    backend = behind(proxy, s3_server, read_timeout=0.5, max_attempts=2)
    try:
        proxy.faults[:] = ["hang"]
        await put(backend, transport, tmp_path, bucket, "late", b"t" * 10)
        assert raw.get_object(Bucket=bucket, Key="late")["Body"].read() == b"t" * 10
        proxy.faults[:] = ["hang", "hang"]
        started = trio.current_time()
        with pytest.raises(McpfsError) as exc:
            await put(backend, transport, tmp_path, bucket, "never", b"t" * 10)
        assert exc.value.errno == errno.EIO and trio.current_time() - started < 4
        assert len(proxy.puts()) == 4
    finally:
        drop_idle(backend)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_lost_answer_to_a_conditional_put_is_not_a_conflict(
        s3_server, proxy, raw, bucket, tmp_path, transport):
    """The first attempt wrote the object but its answer was lost: the re-send meets it
    (412), and the object there is the one sent, so the write succeeded."""
    backend = behind(proxy, s3_server)
    try:
        await put(backend, transport, tmp_path, bucket, "warm", b"mine")  # kept alive
        proxy.faults[:] = ["lose"]
        info = await put(backend, transport, tmp_path, bucket, "retried", b"mine",
                         if_none_match=True)
        drop_idle(backend)  # (on a new connection this time: a backoff, same end)
        proxy.faults[:] = ["lose"]
        await put(backend, transport, tmp_path, bucket, "retried2", b"mine",
                  if_none_match=True)
        with pytest.raises(McpfsError) as exc:  # a 412 at the first attempt: a conflict
            await put(backend, transport, tmp_path, bucket, "retried", b"mine",
                      if_none_match=True)
        assert exc.value.errno == errno.EEXIST and sent_from(backend, transport)
    finally:
        drop_idle(backend)
    assert info.etag.strip('"') == hashlib.md5(b"mine").hexdigest()
    assert raw.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"mine"
    assert [direct(h) for h in proxy.puts()] == [True] * 6


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("seen_idle", [True, False])
async def test_a_kept_alive_connection_the_server_closed_is_not_an_error(
        s3_server, proxy, raw, bucket, monkeypatch, seen_idle, transport):
    """The server closes a kept-alive connection after answering: the next request sees
    it closed before sending (no re-send), or, when that check misses it (closed in
    between), is sent again at once on a new connection, not counted as a try
    (max_attempts = 1), but counted as a retry."""
    from mcpfs.backends import s3_direct, s3_wire
    if not seen_idle:
        monkeypatch.setattr(s3_direct if transport == "thread" else s3_wire,
                            "readable_now", lambda fileno: False)
    backend = behind(proxy, s3_server, max_attempts=1)
    direct_requests = backend._direct
    target = await trio.to_thread.run_sync(direct_requests.target, bucket)

    async def one(key: str) -> dict:
        if transport == "trio":
            return await direct_requests.aput(bucket, target, key, b"z" * 10, False, None,
                                              None)
        return direct_requests.put(bucket, target, key, b"z" * 10, 10, False, None, None)
    try:
        proxy.faults[:] = ["close"]
        first = await one("a")
        if seen_idle:  # (the server's close arrives a moment after its answer)
            [idle] = [c for cs in (backend._direct._wire._idle if transport == "trio" else
                                   backend._direct._idle).values() for c in cs]
            fileno = idle.fileno if transport == "trio" else idle.sock.fileno()
            with trio.fail_after(5):
                while not s3_wire.readable_now(fileno):
                    await trio.sleep(0.01)
        second = await one("b")
    finally:
        drop_idle(backend)
    assert first["ResponseMetadata"]["RetryAttempts"] == 0
    assert second["ResponseMetadata"]["RetryAttempts"] == (0 if seen_idle else 1)
    assert raw.head_object(Bucket=bucket, Key="b")["ContentLength"] == 10


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_https_checks_the_server_with_the_configured_ca_bundle(
        s3_server, raw, bucket, tmp_path, monkeypatch, transport):
    tls, cert = self_signed(tmp_path)
    _, other = self_signed(tmp_path, "other")
    with FaultProxy(s3_server["endpoint"], tls=tls) as proxy:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        backend = behind(proxy, s3_server)
        try:
            await put(backend, transport, tmp_path, bucket, "secure", b"tls")
            assert sent_from(backend, transport)
        finally:
            drop_idle(backend)
        [sent] = proxy.puts()
        assert direct(sent) and sent["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert raw.get_object(Bucket=bucket, Key="secure")["Body"].read() == b"tls"
        monkeypatch.setenv("AWS_CA_BUNDLE", str(other))  # not the server's: refused
        backend = behind(proxy, s3_server, max_attempts=1)
        try:
            with pytest.raises(McpfsError) as exc:
                await put(backend, transport, tmp_path, bucket, "insecure", b"tls")
        finally:
            drop_idle(backend)
        assert exc.value.errno == errno.EIO and len(proxy.puts()) == 1


async def test_what_the_direct_path_does_not_serve_goes_through_boto3(
        s3_server, proxy, raw, bucket, tmp_path, monkeypatch):
    """A bucket in another region (a 301 with its region: boto3 follows those), a proxy
    variable routing the endpoint, a body over DIRECT_MAX, an S3 Express bucket; a client
    told to send checksums only when required sends none directly either."""
    from mcpfs.backends.s3_direct import DIRECT_MAX
    backend = behind(proxy, s3_server)
    path = spool(tmp_path, "s", b"w" * 10)
    big = spool(tmp_path, "big", b"b" * (DIRECT_MAX + 1))
    try:
        proxy.faults[:] = ["redirect"]
        await backend.upload_file(bucket, "moved", path, 10)
        await backend.upload_file(bucket, "big", big, DIRECT_MAX + 1)
        assert backend._direct.target(bucket) is None  # this bucket: boto3 from now on
    finally:
        backend.close()
    assert [direct(h) for h in proxy.puts()] == [True, False, False]
    assert raw.get_object(Bucket=bucket, Key="moved")["Body"].read() == b"w" * 10
    assert raw.head_object(Bucket=bucket, Key="big")["ContentLength"] == DIRECT_MAX + 1
    express = behind(proxy, s3_server)
    try:
        assert express._direct.target(bucket) is not None
        assert express._direct.target(bucket + "--x-s3") is None
    finally:
        express.close()
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    bare = behind(proxy, s3_server)  # the client sends no checksum: nor does the direct PUT
    try:
        await bare.upload_file(bucket, "bare", path, 10)
    finally:
        bare.close()
    assert direct(proxy.puts()[-1]) and "x-amz-checksum-crc32" not in proxy.puts()[-1]
    assert "x-amz-checksum-crc32" in proxy.puts()[0]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    routed = behind(proxy, s3_server)
    try:
        assert routed._direct.target(bucket) is None
    finally:
        routed.close()


KEYS = ["a b+c%d", "é/ü", "//lead", "/x", "trail/", "q?x=1#f", "~*'()!$&,;=:@"]


async def test_requests_go_where_boto3s_go_signed_as_boto3_signs(
        s3_server, proxy, raw, bucket, tmp_path):
    """For awkward keys, the direct PUT's path is boto3's; an endpoint written in capitals
    still signs (host names are case-blind, the signature is over the lower-case form)."""
    path = spool(tmp_path, "s", b"k")
    port = proxy.endpoint.rsplit(":", 1)[1]
    backend = make_backend(dict(s3_server, endpoint=f"http://LocalHost:{port}"))
    plain = behind(proxy, s3_server, direct_requests=False)
    try:
        for key in KEYS:
            await backend.upload_file(bucket, key, path, 1)
            await plain.upload_file(bucket, key, path, 1)
    finally:
        backend.close()
        plain.close()
    puts = [(p, direct({k.lower(): v for k, v in h.items()}))
            for m, p, h in proxy.seen if m == "PUT"]
    assert [d for _, d in puts] == [True, False] * len(KEYS)
    assert [p for p, _ in puts[::2]] == [p for p, _ in puts[1::2]]
    for key in KEYS:  # (SeaweedFS keeps a key ending in "/" as a folder, without a body)
        if not key.endswith("/"):
            assert raw.get_object(Bucket=bucket, Key=key)["Body"].read() == b"k", key


async def test_a_head_is_one_signed_request_that_reads_as_boto3s(
        s3_server, proxy, raw, bucket):
    """What a direct HEAD reports equals what boto3's head_object gives (size, time, ETag,
    version, storage class, content type, metadata); missing is ENOENT, a wrong secret
    EACCES; requester pays is said."""
    raw.put_object(Bucket=bucket, Key="d/h (1)+é.txt", Body=b"hello",
                   ContentType="text/x-test", StorageClass="STANDARD_IA",
                   Metadata={"ipfs-cid": "bafyh", "mtime": "12"})
    backend = behind(proxy, s3_server, requester_pays=True)
    plain = make_backend(s3_server, direct_requests=False)
    wrong = behind(proxy, s3_server, secret="not-the-secret")
    try:
        got = await backend.head(bucket, "d/h (1)+é.txt")
        assert got == await plain.head(bucket, "d/h (1)+é.txt")
        fields = ("ContentLength", "LastModified", "ETag", "VersionId", "StorageClass",
                  "ContentType", "Metadata")
        for key in ("d/h (1)+é.txt", "d/std"):  # (a STANDARD object names no class)
            raw.put_object(Bucket=bucket, Key="d/std", Body=b"s")
            mine = backend._direct.head(bucket, backend._direct.target(bucket), key)
            theirs = plain.client.head_object(Bucket=bucket, Key=key)
            assert {f: mine.get(f) for f in fields} == {f: theirs.get(f) for f in fields}
            assert mine["LastModified"].tzinfo is not None
        assert (got.size, got.content_type, got.storage_class, got.metadata) == (
            5, "text/x-test", "STANDARD_IA", {"ipfs-cid": "bafyh", "mtime": "12"})
        with pytest.raises(McpfsError) as missing:
            await backend.head(bucket, "d/nothing")
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(McpfsError) as denied:
            await wrong.head(bucket, "d/h (1)+é.txt")
        assert denied.value.errno == errno.EACCES
    finally:
        for b in (backend, plain, wrong):
            b.close()
    heads = [{k.lower(): v for k, v in h.items()} for m, _, h in proxy.seen if m == "HEAD"]
    assert len(heads) == 5 and all(direct(h) for h in heads)
    assert heads[0]["x-amz-request-payer"] == "requester"


async def test_small_gets_are_direct_and_read_as_boto3s(s3_server, proxy, raw, bucket):
    """The open's GET and small range reads go direct, with boto3's results: the object's
    fields and first bytes, an empty object (InvalidRange, then a HEAD), a changed object
    (If-Match: ESTALE); a body that begins like an S3 error is data; ranges over
    DIRECT_MAX go through boto3."""
    from mcpfs.backends.s3_direct import DIRECT_MAX
    data = b"<Error><Code>InternalError</Code></Error>" + pattern_bytes(DIRECT_MAX * 2, 7)
    raw.put_object(Bucket=bucket, Key="g/x", Body=data, ContentType="text/x-g",
                   Metadata={"ipfs-cid": "bafyg"})
    raw.put_object(Bucket=bucket, Key="g/empty", Body=b"")
    backend = behind(proxy, s3_server)
    plain = make_backend(s3_server, direct_requests=False)
    try:
        info, first = await backend.open_object(bucket, "g/x", 64 * 1024)
        assert (info, first) == await plain.open_object(bucket, "g/x", 64 * 1024)
        assert first == data[:64 * 1024] and info.size == len(data)
        assert info.metadata == {"ipfs-cid": "bafyg"} and info.content_type == "text/x-g"
        assert await backend.get_range(bucket, "g/x", 5, 1005, info.etag) == data[5:1005]
        big = await backend.get_range(bucket, "g/x", 0, DIRECT_MAX + 1)
        assert big == data[:DIRECT_MAX + 1]
        assert await backend.get_range(bucket, "g/x", len(data), len(data) + 9) == b""
        empty, none = await backend.open_object(bucket, "g/empty", 64 * 1024)
        assert (empty.size, none) == (0, b"")
        raw.put_object(Bucket=bucket, Key="g/x", Body=b"replaced")
        with pytest.raises(McpfsError) as changed:
            await backend.get_range(bucket, "g/x", 0, 4, info.etag)
        assert changed.value.errno == errno.ESTALE
    finally:
        backend.close()
        plain.close()
    gets = [{k.lower(): v for k, v in h.items()} for m, _, h in proxy.seen if m == "GET"]
    assert [direct(h) for h in gets] == [True, True, False, True, True, True]
    assert [h["range"] for h in gets][:2] == ["bytes=0-65535", "bytes=5-1004"]


@pytest.mark.parametrize("direct_requests", [True, False])
async def test_a_server_that_ignores_range_still_gives_the_bytes_asked(
        s3_server, proxy, raw, public_bucket, direct_requests):
    """A server answering a ranged GET with the whole object (200, no Content-Range): a
    range read gets the bytes at its offset, and the open learns the object's size."""
    data = pattern_bytes(200_000, 3)
    key = f"r-{direct_requests}"
    raw.put_object(Bucket=public_bucket, Key=key, Body=data)
    backend = behind(proxy, s3_server, direct_requests=direct_requests)
    proxy.ignore_range = True
    try:
        info, first = await backend.open_object(public_bucket, key, 64 * 1024)
        assert (info.size, first) == (len(data), data[:64 * 1024])
        got = await backend.get_range(public_bucket, key, 70_000, 71_000)
        assert got == data[70_000:71_000]
    finally:
        backend.close()


async def test_credentials_due_for_a_refresh_are_never_refreshed_on_the_trio_thread(
        s3_server, proxy, raw, bucket, tmp_path):
    """A refresh may be a network call (STS, IMDS, SSO): while botocore says one is due,
    direct requests go from a worker thread, where botocore refreshes; then from the trio
    thread again."""
    backend = behind(proxy, s3_server)
    real = backend._direct.credentials

    class Due:
        due = True

        def refresh_needed(self, refresh_in=None):
            return self.due

        def get_frozen_credentials(self):
            return real.get_frozen_credentials()
    backend._direct.credentials = creds = Due()
    try:
        await put(backend, "trio", tmp_path, bucket, "due", b"d")
        assert sent_from(backend, "thread") and not any(backend._direct._wire._idle.values())
        creds.due = False
        await put(backend, "trio", tmp_path, bucket, "fresh", b"f")
        assert any(backend._direct._wire._idle.values())
    finally:
        drop_idle(backend)
    assert raw.get_object(Bucket=bucket, Key="due")["Body"].read() == b"d"


async def test_headers_the_wire_would_refuse_go_through_boto3_counted_once(
        s3_server, proxy, raw, bucket, tmp_path):
    """A metadata value with a space at its end (a copy's source named so), or a tab in it:
    boto3 sends that PUT (stored as boto3 stores it), and the stats count one PUT, not a
    direct one that was never sent as well."""
    from mcpfs.stats import Stats
    backend = behind(proxy, s3_server)
    backend.stats = stats = Stats()
    try:
        for key, value in (("space", "s3://b/name "), ("tab", "a\tb")):
            await put(backend, "trio", tmp_path, bucket, key, b"m",
                      metadata={"mcpfs-source": value})
    finally:
        drop_idle(backend)
    assert [direct(h) for h in proxy.puts()] == [False, False]
    assert raw.get_object(Bucket=bucket, Key="space")["Body"].read() == b"m"
    assert stats.snapshot()["Backends"]["s3"]["Ops"]["put"]["Count"] == 2


async def test_a_request_from_the_trio_thread_holds_the_backends_limiter(
        s3_server, proxy, bucket, tmp_path):
    """At most ``threads`` requests in flight, from worker threads or the trio thread."""
    import trio.testing
    backend = behind(proxy, s3_server, read_timeout=0.5, max_attempts=1)
    await trio.to_thread.run_sync(backend._direct.target, bucket)
    proxy.faults[:] = ["hang"]
    seen = []

    async def one() -> None:
        with pytest.raises(McpfsError):
            await backend.put_bytes(bucket, "held", b"h")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            seen.append(backend.limiter.borrowed_tokens)
    finally:
        drop_idle(backend)
    assert seen == [1] and backend.limiter.borrowed_tokens == 0


async def test_a_connection_in_use_at_close_is_not_kept(s3_server, proxy, bucket, tmp_path):
    """Unmount closes the trio thread's idle connections; one whose request is in flight
    then is closed when that request ends, not kept; later requests keep theirs again."""
    import trio.testing
    backend = behind(proxy, s3_server)
    await trio.to_thread.run_sync(backend._direct.target, bucket)
    proxy.faults[:] = ["slow"]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.put_bytes, bucket, "in-flight", b"i")
            await trio.testing.wait_all_tasks_blocked()
            backend.aclose()
        assert not any(backend._direct._wire._idle.values())
        await backend.put_bytes(bucket, "after", b"a")
        assert any(backend._direct._wire._idle.values())
    finally:
        drop_idle(backend)
