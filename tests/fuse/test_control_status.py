"""The daemon's control socket and `mcpfs status` on a real mount: the CLI goes through the
daemon, FUSE operations show in /api/v0/mcpfs/stats and /metrics, pending writes are listed."""

from __future__ import annotations

import json
import time

import httpx

from mcpfs.config import paths

from .conftest import mcpfs


def _api(cmd: str, **params):
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(paths().socket_path))) as client:
        return client.post(f"http://mcpfs/api/v0/{cmd}", params=params, timeout=30)


def test_socket_serves_kubo_routes_and_mount_stats(mnt):
    (mnt / "mfs" / "f.bin").write_bytes(b"x" * 300_000)
    assert (mnt / "mfs" / "f.bin").read_bytes() == b"x" * 300_000
    # the files route sees what the mount wrote: one MFS, one daemon
    listing = _api("files/ls", arg="/", long="true").json()
    assert [e["Name"] for e in listing["Entries"]] == ["f.bin"]
    assert _api("version").json()["Version"]
    stats = _api("mcpfs/stats").json()["Mounts"]["mfs"]["Ops"]
    assert stats["write"]["Bytes"] >= 300_000
    assert stats["write"]["Count"] >= 1 and stats["write"]["Latency"]["p99"] > 0
    metrics = httpx.Client(transport=httpx.HTTPTransport(uds=str(paths().socket_path))) \
        .get("http://mcpfs/metrics").text
    assert 'mcpfs_ops_total{mount="mfs",op="write"}' in metrics
    # the CLI is routed through the daemon: `files ls` equals the mount's listing
    assert mcpfs("files", "ls", "/").stdout.split() == ["f.bin"]


def test_status_lists_mount_daemon_and_pending_writes(mnt):
    with open(mnt / "mfs" / "pending.txt", "wb") as fh:
        fh.write(b"not yet committed")
        fh.flush()
        deadline = time.monotonic() + 5
        info = json.loads(mcpfs("status", "--json").stdout)
        while not info["PendingWrites"] and time.monotonic() < deadline:
            time.sleep(0.1)
            info = json.loads(mcpfs("status", "--json").stdout)
        assert str(mnt) in info["Mounts"]
        assert info["Daemon"]["Running"] is True
        assert "mfs" in info["Backends"]
        assert [row["Path"] for row in info["PendingWrites"]] == ["/mfs/pending.txt"]
    info = json.loads(mcpfs("status", "--json").stdout)
    assert info["PendingWrites"] == []
    text = mcpfs("status").stdout
    assert "daemon:  running" in text and "pending writes: 0" in text
