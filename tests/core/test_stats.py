"""Stats: the Prometheus families are built at scrape time from the plain counters."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mcpfs.stats import Stats


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
