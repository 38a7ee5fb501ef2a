"""Stats of the S3 backend against a real server (SeaweedFS): every request counted with
its op, bytes in/out and errors; a server-side copy moves no bytes; the mount's caches."""

from __future__ import annotations

import errno
import os

import pytest

from mcpfs.errors import McpfsError
from mcpfs.mounts.s3 import S3Mount
from mcpfs.stats import Stats

from ..mount_helpers import names
from .conftest import make_backend

MiB = 1 << 20


def ops(stats: Stats) -> dict:
    return stats.snapshot()["Backends"]["s3"]["Ops"]


def totals(stats: Stats) -> tuple[int, int, int]:
    s3 = stats.snapshot()["Backends"]["s3"]
    return s3["BytesIn"], s3["BytesOut"], s3["Errors"]


async def test_put_get_copy_and_errors_are_counted(s3_server, bucket, tmp_path):
    backend = make_backend(s3_server)
    stats = Stats()
    S3Mount(backend).attach_stats(stats)
    assert backend.stats is stats
    data = os.urandom(100_000)
    await backend.put_bytes(bucket, "a", data)
    spool = tmp_path / "f"
    spool.write_bytes(b"x" * 4321)
    await backend.upload_file(bucket, "b", str(spool), 4321)
    assert ops(stats)["put"]["Count"] == 2
    assert ops(stats)["put"]["BytesOut"] == 100_000 + 4321
    assert await backend.get_range(bucket, "a", 10, 60_010) == data[10:60_010]
    assert ops(stats)["get"]["BytesIn"] == 60_000 and ops(stats)["get"]["BytesOut"] == 0
    before = totals(stats)
    info = await backend.head(bucket, "a")
    await backend.copy(bucket, "a", bucket, "copied", info.size)
    assert ops(stats)["copy"]["Count"] == 1
    assert totals(stats) == before  # server-side: no byte through mcpfs, either way
    assert ops(stats)["head"]["Errors"] == 0
    with pytest.raises(McpfsError) as exc:
        await backend.head(bucket, "missing")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(McpfsError):
        await backend.get_range(bucket, "missing", 0, 10)
    head, get = ops(stats)["head"], ops(stats)["get"]
    assert (head["Count"], head["Errors"]) == (2, 1)
    assert (get["Count"], get["Errors"], get["BytesIn"]) == (2, 1, 60_000)
    assert stats.snapshot()["Backends"]["s3"]["Errors"] == 2
    assert get["Latency"]["p99"] > 0
    await backend.delete(bucket, "copied")
    assert [n for n, _ in await backend.list_buckets()]
    assert {"delete", "list_buckets"} <= set(ops(stats))


async def test_multipart_upload_counts_every_part(s3_server, bucket, tmp_path):
    backend = make_backend(s3_server, part_size=5 * MiB, multipart_threshold=5 * MiB)
    backend.stats = stats = Stats()
    size = 11 * MiB + 7
    path = tmp_path / "big"
    path.write_bytes(os.urandom(size))
    await backend.upload_file(bucket, "big", str(path), size)
    got = ops(stats)
    assert got["upload_part"]["Count"] == 3  # 5 + 5 + 1 MiB
    assert got["upload_part"]["BytesOut"] == size
    assert got["create_upload"]["Count"] == got["complete"]["Count"] == 1
    assert totals(stats) == (0, size, 0)


async def test_mount_listing_and_head_cache_hits(s3_server, bucket, raw):
    raw.put_object(Bucket=bucket, Key="d/one", Body=b"1")
    mount = S3Mount(make_backend(s3_server))
    stats = Stats()
    mount.attach_stats(stats)
    assert await names(mount, f"{bucket}/d") == ["one"]  # listed: a miss
    assert await names(mount, f"{bucket}/d") == ["one"]  # from the listing cache: a hit
    for _ in range(2):  # each open is one GET (the object as it is now), no HEAD
        reader = await mount.open_read(f"{bucket}/d/one")
        assert await reader.read(0, 1) == b"1"  # served by the open's GET: a hit
        await reader.close()
    assert stats.snapshot()["Backends"]["s3"]["Cache"] == {"Hits": 3, "Misses": 1}
    assert ops(stats)["list"]["Count"] == 1 and ops(stats)["get"]["Count"] == 2
    assert "head" not in ops(stats)
