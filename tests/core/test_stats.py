"""Stats: mount, backend and bridge counters, their snapshot, and the Prometheus families
built at scrape time from them; the blockstore's counting and the `mcpfs stats` table."""

from __future__ import annotations

import hashlib
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcpfs.backends.ipfs.cid import CID, RAW
from mcpfs.backends.ipfs.node import Repo
from mcpfs.cli.stats_cmd import human_bytes, render
from mcpfs.errors import BlockNotFound, McpfsError
from mcpfs.stats import LATENCY_WINDOW, Stats


def _samples(stats: Stats) -> dict:
    out = {}
    for family in text_string_to_metric_families(stats.prometheus_text().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_counters_histogram_and_cache_families():
    stats = Stats()
    stats.record("mfs", "read", 4096, 0.0005, False)  # on a bucket bound: counted in it
    stats.record("mfs", "read", 0, 2.0, True)
    stats.record("s3", "write", 10, 0.00001, False)
    stats.cache("mfs", True)
    stats.cache("mfs", False)
    stats.cache("mfs", False)
    got = _samples(stats)
    read = (("mount", "mfs"), ("op", "read"))
    assert got[("mcpfs_ops_total", read)] == 2
    assert got[("mcpfs_bytes_total", read)] == 4096
    assert got[("mcpfs_errors_total", read)] == 1
    assert got[("mcpfs_op_seconds_bucket", (("le", "0.00025"),) + read)] == 0
    assert got[("mcpfs_op_seconds_bucket", (("le", "0.0005"),) + read)] == 1
    assert got[("mcpfs_op_seconds_bucket", (("le", "2.5"),) + read)] == 2
    assert got[("mcpfs_op_seconds_bucket", (("le", "+Inf"),) + read)] == 2
    assert got[("mcpfs_op_seconds_count", read)] == 2
    assert abs(got[("mcpfs_op_seconds_sum", read)] - 2.0005) < 1e-9
    write = (("mount", "s3"), ("op", "write"))
    assert got[("mcpfs_op_seconds_bucket", (("le", "5e-05"),) + write)] == 1
    assert got[("mcpfs_cache_lookups_total", (("mount", "mfs"), ("result", "hit")))] == 1
    assert got[("mcpfs_cache_lookups_total", (("mount", "mfs"), ("result", "miss")))] == 2
    snap = stats.snapshot()["Mounts"]["mfs"]
    assert snap["Ops"]["read"]["Count"] == 2 and snap["Cache"] == {"Hits": 1, "Misses": 2}


def test_backend_counters_snapshot_and_percentiles():
    stats = Stats()
    for i in range(1, 101):  # get latencies 1..100 ms: nearest-rank p50/p90/p99 = 50/90/99
        stats.backend("s3", "get", bytes_in=1000, seconds=i / 1000)
    stats.backend("s3", "put", bytes_out=5000, seconds=0.2)
    stats.backend("s3", "copy", seconds=0.01)  # server-side: no bytes either way
    stats.backend("s3", "head", seconds=-1.0, error=True)  # a negative clock step counts 0
    stats.backend_cache("s3", True)
    stats.backend_cache("s3", True)
    stats.backend_cache("s3", False)
    stats.backend_cache("hf", False)  # a cache lookup alone makes the backend appear
    snap = stats.snapshot()
    assert set(snap) == {"Uptime", "Mounts", "Backends", "Bridge"}
    s3 = snap["Backends"]["s3"]
    get = s3["Ops"]["get"]
    assert (get["Count"], get["BytesIn"], get["BytesOut"], get["Errors"]) == \
        (100, 100_000, 0, 0)
    assert get["Latency"] == {"p50": 0.05, "p90": 0.09, "p99": 0.099}
    assert s3["Ops"]["copy"]["BytesOut"] == 0 and s3["Ops"]["put"]["BytesOut"] == 5000
    assert s3["Ops"]["head"] == {"Count": 1, "BytesIn": 0, "BytesOut": 0, "Errors": 1,
                                 "Latency": {"p50": 0.0, "p90": 0.0, "p99": 0.0}}
    assert (s3["Count"], s3["BytesIn"], s3["BytesOut"], s3["Errors"]) == \
        (103, 100_000, 5000, 1)
    # over every op's window together (103 values: head 0, gets, copy 0.01, put 0.2)
    assert s3["Latency"] == {"p50": 0.05, "p90": 0.091, "p99": 0.1}
    assert s3["Cache"] == {"Hits": 2, "Misses": 1}
    assert snap["Backends"]["hf"] == {"Ops": {}, "Count": 0, "BytesIn": 0, "BytesOut": 0,
                                      "Errors": 0, "Latency": {},
                                      "Cache": {"Hits": 0, "Misses": 1}}
    assert snap["Mounts"] == {}  # backend requests are not FUSE operations


def test_latency_window_keeps_the_last_operations():
    stats = Stats()
    for _ in range(LATENCY_WINDOW):
        stats.backend("ipfs", "get", seconds=10.0)
    for _ in range(LATENCY_WINDOW):
        stats.backend("ipfs", "get", seconds=0.001)
    op = stats.snapshot()["Backends"]["ipfs"]["Ops"]["get"]
    assert op["Count"] == 2 * LATENCY_WINDOW
    assert op["Latency"]["p99"] == 0.001  # the slow ones left the window


def test_bridge_native_and_streamed():
    stats = Stats()
    stats.bridge("s3-copy", True, 10 << 20)
    stats.bridge("s3-copy", True, 1 << 20)
    stats.bridge("mfs-link", True, 300)
    stats.bridge("stream", False, 4096)
    stats.bridge("odd", True, 10)  # one route reported both ways: not native as a whole
    stats.bridge("odd", False, -5)  # negative sizes count 0
    bridge = stats.snapshot()["Bridge"]
    assert bridge["Native"] == {"Count": 4, "Bytes": (11 << 20) + 310}
    assert bridge["Streamed"] == {"Count": 2, "Bytes": 4096}
    assert bridge["Routes"] == {
        "mfs-link": {"Count": 1, "Bytes": 300, "Native": True},
        "odd": {"Count": 2, "Bytes": 10, "Native": False},
        "s3-copy": {"Count": 2, "Bytes": 11 << 20, "Native": True},
        "stream": {"Count": 1, "Bytes": 4096, "Native": False}}
    got = _samples(stats)
    assert got[("mcpfs_bridge_transfers_total", (("kind", "native"), ("route", "s3-copy")))] == 2
    assert got[("mcpfs_bridge_bytes_total", (("kind", "native"), ("route", "s3-copy")))] == \
        11 << 20
    assert got[("mcpfs_bridge_transfers_total", (("kind", "streamed"), ("route", "stream")))] == 1
    assert got[("mcpfs_bridge_bytes_total", (("kind", "streamed"), ("route", "odd")))] == 0
    assert ("mcpfs_bridge_transfers_total", (("kind", "streamed"), ("route", "s3-copy"))) \
        not in got  # a kind a route never had is not exported


def test_backend_prometheus_families():
    stats = Stats()
    stats.backend("s3", "get", bytes_in=4096, seconds=0.0005)
    stats.backend("s3", "get", seconds=3.0, error=True)
    stats.backend("s3", "put", bytes_out=123, seconds=0.00001)
    stats.backend_cache("ipfs", True)
    stats.backend_cache("ipfs", False)
    got = _samples(stats)
    get = (("backend", "s3"), ("op", "get"))
    assert got[("mcpfs_backend_ops_total", get)] == 2
    assert got[("mcpfs_backend_errors_total", get)] == 1
    assert got[("mcpfs_backend_bytes_total", get[:1] + (("direction", "in"),) + get[1:])] == 4096
    assert got[("mcpfs_backend_bytes_total", get[:1] + (("direction", "out"),) + get[1:])] == 0
    put = (("backend", "s3"), ("direction", "out"), ("op", "put"))
    assert got[("mcpfs_backend_bytes_total", put)] == 123
    assert got[("mcpfs_backend_op_seconds_bucket", get[:1] + (("le", "0.0005"),) + get[1:])] == 1
    assert got[("mcpfs_backend_op_seconds_bucket", get[:1] + (("le", "2.5"),) + get[1:])] == 1
    assert got[("mcpfs_backend_op_seconds_bucket", get[:1] + (("le", "+Inf"),) + get[1:])] == 2
    assert got[("mcpfs_backend_op_seconds_count", get)] == 2
    assert abs(got[("mcpfs_backend_op_seconds_sum", get)] - 3.0005) < 1e-9
    cache = "mcpfs_backend_cache_lookups_total"
    assert got[(cache, (("backend", "ipfs"), ("result", "hit")))] == 1
    assert got[(cache, (("backend", "ipfs"), ("result", "miss")))] == 1
    assert not any(name.startswith("mcpfs_ops") for name, _ in got)  # no mount op yet


def test_counters_exact_under_threads():
    stats = Stats()

    def work():
        for _ in range(2000):
            stats.backend("ipfs", "put", bytes_out=3)
            stats.backend_cache("ipfs", True)
            stats.bridge("stream", False, 1)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = stats.snapshot()
    ipfs = snap["Backends"]["ipfs"]
    assert (ipfs["Count"], ipfs["BytesOut"], ipfs["Cache"]["Hits"]) == (16_000, 48_000, 16_000)
    assert snap["Bridge"]["Streamed"] == {"Count": 16_000, "Bytes": 16_000}


def test_blockstore_counts_disk_reads_new_writes_and_cache_hits(tmp_path):
    repo = Repo(tmp_path / "repo")
    stats = Stats()
    repo.attach_stats(stats)

    def raw_cid(data: bytes) -> CID:
        return CID(1, RAW, b"\x12\x20" + hashlib.sha256(data).digest())
    a, b = b"a" * 1000, b"b" * 300
    repo.store.put(raw_cid(a), a)
    repo.store.put(raw_cid(a), a)  # already stored: nothing written, nothing counted
    repo.store.put(raw_cid(b), memoryview(b))
    assert repo.store.get(raw_cid(a)) == a  # from disk (a miss of the block cache)
    assert repo.store.get(raw_cid(a)) == a  # from the block cache
    with pytest.raises(BlockNotFound):
        repo.store.get(raw_cid(b"missing"))  # a normal answer: counted apart, no error
    ipfs = stats.snapshot()["Backends"]["ipfs"]
    assert ipfs["Ops"]["put"]["Count"] == 2 and ipfs["Ops"]["put"]["BytesOut"] == 1300
    assert ipfs["Ops"]["get"]["Count"] == 1 and ipfs["Ops"]["get"]["BytesIn"] == 1000
    missing = ipfs["Ops"]["get_missing"]
    assert (missing["Count"], missing["BytesIn"], missing["Errors"]) == (1, 0, 0)
    assert ipfs["Errors"] == 0
    assert ipfs["Cache"] == {"Hits": 1, "Misses": 2}
    repo.flatfs.path_of(raw_cid(b)).write_bytes(b"garbage")  # corrupt on disk
    with pytest.raises(McpfsError):  # CorruptBlock
        repo.store.get(raw_cid(b))
    assert stats.snapshot()["Backends"]["ipfs"]["Ops"]["get"]["Errors"] == 1
    repo.attach_stats(None)  # detached: counting stops
    repo.store.put(raw_cid(b"c"), b"c")
    assert stats.snapshot()["Backends"]["ipfs"]["Ops"]["put"]["Count"] == 2


def test_render_table_human_sizes_and_rates():
    assert [human_bytes(n) for n in (0, 1023, 1536, 3 << 20, 5 << 30)] == \
        ["0 B", "1023 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]
    stats = Stats()
    stats.backend("s3", "get", bytes_in=5 << 20, seconds=0.012)
    stats.backend("s3", "put", bytes_out=1536, seconds=0.25, error=True)
    stats.backend_cache("s3", True)
    stats.backend_cache("s3", True)
    stats.backend_cache("s3", True)
    stats.backend_cache("s3", False)
    stats.record("mfs", "write", 300_000, 0.001)
    stats.bridge("s3-copy", True, 10 << 20)
    stats.bridge("stream", False, 2048)
    lines = render(stats.snapshot())
    s3 = next(line for line in lines if line.startswith("s3 ")).split()
    assert s3 == ["s3", "2", "1", "5.0", "MiB", "1.5", "KiB", "12.0", "ms", "250", "ms",
                  "75.0%"]
    assert next(line for line in lines if line.startswith("/mfs")).split()[:4] == \
        ["/mfs", "1", "0", "293.0"]
    assert next(line for line in lines if line.startswith("native")).split() == \
        ["native", "1", "10.0", "MiB"]
    assert next(line for line in lines if line.startswith("streamed")).split() == \
        ["streamed", "1", "2.0", "KiB"]
    assert any(line.split()[:2] == ["s3-copy", "(native)"] for line in lines)
    per_op = render(stats.snapshot(), per_op=True)
    assert any(line.split()[:3] == ["put", "1", "1"] for line in per_op)
