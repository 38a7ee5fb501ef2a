"""Single PUTs of spool files in helper processes (backends/s3_putter.py), on SeaweedFS:
the same object, the same error mapping as in-process requests, a helper that dies is
replaced, and helpers never outlive the daemon."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mcpfs.errors import McpfsError
from tests.conftest import pattern_bytes

from .conftest import make_backend


def spool(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def helper_pids(backend) -> list[int]:
    executor = backend._put_pool._executor
    return [p.pid for p in executor._processes.values()] if executor is not None else []


def test_a_helper_says_the_requester_pays_and_encrypts(s3_server, raw, bucket, tmp_path):
    """The helper's client is made from the daemon's ClientSpec, its request defaults
    included (run in this process: the same function a helper runs)."""
    from dataclasses import replace

    from mcpfs.backends import s3_putter
    backend = make_backend(s3_server, requester_pays=True, sse="AES256")
    try:
        spec = replace(backend._put_pool.spec, endpoint_url=s3_server["endpoint"])
        creds = (s3_server["access_key"], s3_server["secret_key"], None)
        headers = []
        s3_putter._client(spec, creds).meta.events.register(
            "before-send.s3", lambda request, **_: headers.append(
                (request.headers.get("x-amz-request-payer"),
                 request.headers.get("x-amz-server-side-encryption"))))
        answer = s3_putter.put_file(spec, creds, bucket, "rp", spool(tmp_path, "s", b"12"),
                                    2, False, None, None)
        assert answer[0] == "ok" and headers == [(b"requester", b"AES256")]
        got = raw.get_object(Bucket=bucket, Key="rp")
        assert got["Body"].read() == b"12" and got["ServerSideEncryption"] == "AES256"
    finally:
        backend.close()


async def test_a_put_in_a_helper_stores_the_object(s3_server, raw, bucket, tmp_path):
    backend = make_backend(s3_server)
    try:
        data = pattern_bytes(300_000, 4)
        info = await backend.upload_file(bucket, "p/one.bin", spool(tmp_path, "s", data),
                                         len(data), content_type="application/x-test",
                                         metadata={"ipfs-cid": "bafyx"})
        assert helper_pids(backend) and os.getpid() not in helper_pids(backend)
        got = raw.get_object(Bucket=bucket, Key="p/one.bin")
        assert got["Body"].read() == data and got["ETag"] == info.etag
        assert got["ContentType"] == "application/x-test"
        assert got["Metadata"] == {"ipfs-cid": "bafyx"}
    finally:
        backend.close()
    assert not helper_pids(backend)


async def test_helper_errors_map_as_in_process_ones(s3_server, bucket, tmp_path):
    path = spool(tmp_path, "s", b"x" * 100)
    backend = make_backend(s3_server)
    wrong = make_backend(s3_server, secret="not-the-secret")
    try:
        await backend.upload_file(bucket, "k", path, 100)
        with pytest.raises(McpfsError) as exists:  # If-None-Match: * on an existing key
            await backend.upload_file(bucket, "k", path, 100, if_none_match=True)
        assert exists.value.errno == errno.EEXIST
        with pytest.raises(McpfsError) as denied:
            await wrong.upload_file(bucket, "k2", path, 100)
        assert denied.value.errno == errno.EACCES
        assert "not-the-secret" not in str(denied.value)
        with pytest.raises(McpfsError) as gone:
            await backend.upload_file(bucket, "k3", str(tmp_path / "missing"), 100)
        assert gone.value.errno == errno.ENOENT
    finally:
        backend.close()
        wrong.close()


async def test_a_helper_that_died_is_replaced(s3_server, raw, bucket, tmp_path):
    backend = make_backend(s3_server)
    path = spool(tmp_path, "s", b"y" * 1000)
    try:
        await backend.upload_file(bucket, "a", path, 1000)
        for pid in helper_pids(backend):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        errors = 0
        for attempt in range(2):  # the first may be EIO (its helper was gone), not both
            try:
                await backend.upload_file(bucket, f"b{attempt}", path, 1000)
                break
            except McpfsError as exc:
                assert exc.errno == errno.EIO
                errors += 1
        assert errors < 2
        assert raw.head_object(Bucket=bucket, Key=f"b{errors}")["ContentLength"] == 1000
    finally:
        backend.close()


def test_helpers_exit_when_the_daemon_is_killed(s3_server, bucket, tmp_path):
    """A process that used the pool is killed -9: its helper exits by itself."""
    server = {k: s3_server[k] for k in ("endpoint", "access_key", "secret_key")}
    script = textwrap.dedent(f"""
        import os, sys, trio
        sys.path.insert(0, {os.getcwd()!r})
        from tests.s3.conftest import make_backend
        backend = make_backend({server!r})
        path = {str(tmp_path / "s")!r}
        open(path, "wb").write(b"z" * 10)
        trio.run(lambda: backend.upload_file({bucket!r}, "z", path, 10))
        ex = backend._put_pool._executor
        print(" ".join(str(p.pid) for p in ex._processes.values()), flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")
             and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]
    assert alive == []
