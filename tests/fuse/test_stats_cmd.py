"""`mcpfs stats` on a real mount: the backends' requests (block writes of the embedded IPFS
node, S3 requests on SeaweedFS) show in the table, in `--json` and in /metrics."""

from __future__ import annotations

import json

import httpx

from mcpfs.config import paths
from tests.conftest import pattern_bytes

from .conftest import mcpfs


def metrics() -> str:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(paths().socket_path))) as client:
        return client.get("http://mcpfs/metrics", timeout=30).text


def rows(text: str) -> dict[str, list[str]]:
    """First cell -> the other cells of each line of the `mcpfs stats` table."""
    return {cells[0]: cells[1:] for cells in map(str.split, text.splitlines()) if cells}


def test_stats_show_ipfs_block_writes_after_a_write_to_mfs(mnt):
    data = pattern_bytes(600_000, 9)
    (mnt / "mfs" / "f.bin").write_bytes(data)
    assert (mnt / "mfs" / "f.bin").read_bytes() == data
    snap = json.loads(mcpfs("stats", "--json").stdout)
    ipfs = snap["Backends"]["ipfs"]
    assert ipfs["Ops"]["put"]["Count"] >= 3  # 256 KiB chunks, and the DAG's nodes
    assert ipfs["Ops"]["put"]["BytesOut"] >= len(data)
    assert ipfs["Errors"] == 0
    assert snap["Mounts"]["mfs"]["Ops"]["write"]["Bytes"] >= len(data)
    assert set(snap["Bridge"]) == {"Native", "Streamed", "Routes"}
    table = rows(mcpfs("stats").stdout)
    assert int(table["ipfs"][0]) >= ipfs["Count"]  # asked later: counters only grow
    assert "/mfs" in table and "native" in table and "streamed" in table
    assert 'mcpfs_backend_ops_total{backend="ipfs",op="put"}' in metrics()


def test_stats_show_s3_bytes_out_after_a_write_to_s3(s3_mnt, bucket):
    data = pattern_bytes(1000 * 1024, 4)
    (s3_mnt / "s3" / bucket / "stats.bin").write_bytes(data)
    s3 = json.loads(mcpfs("stats", "--json").stdout)["Backends"]["s3"]
    assert s3["Ops"]["put"]["BytesOut"] == len(data)
    assert s3["Ops"]["put"]["Errors"] == 0
    assert s3["Ops"]["put"]["Latency"]["p99"] > 0
    assert (s3_mnt / "s3" / bucket / "stats.bin").read_bytes() == data
    s3 = json.loads(mcpfs("stats", "--json").stdout)["Backends"]["s3"]
    assert s3["Ops"]["get"]["BytesIn"] == len(data)
    table = rows(mcpfs("stats").stdout)
    assert table["s3"][4:6] == ["1000.0", "KiB"]  # ops, errors, in (2 cells), out
