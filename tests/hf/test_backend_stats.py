"""Stats of the Hugging Face backend and mount against the local hub: Hub calls counted
with their op, range bytes in, commit bytes out, errors; the /hf cache lookups."""

from __future__ import annotations

import pytest

from mcpfs.backends.huggingface import HfBackend, HfConfig, RepoRef, ResolveTarget
from mcpfs.errors import McpfsError
from mcpfs.mounts.hf import HfMount
from mcpfs.stats import Stats

from ..conftest import pattern_bytes
from .conftest import ALICE, seed

MODEL = RepoRef("model", "alice/demo")
BIG = pattern_bytes(2 * 1024 * 1024 + 3, seed=5)


@pytest.fixture
def demo(hub_server):
    return seed(hub_server, "alice/demo", {"README.md": b"# demo\n",
                                           "weights.safetensors": BIG})


def hf_ops(stats: Stats) -> dict:
    return stats.snapshot()["Backends"]["hf"]["Ops"]


async def test_calls_ranges_commits_and_errors_are_counted(backend, demo, tmp_path):
    stats = Stats()
    backend.stats = stats
    sha = (await backend.repo_info(MODEL, None)).sha
    await backend.list_tree(MODEL, sha, "")
    target = ResolveTarget(backend.resolve_url(MODEL, sha, "weights.safetensors"), "w")
    assert await backend.get_range(target, 100, 100_100) == BIG[100:100_100]  # LFS redirect
    assert await backend.get_range(target, 0, 10) == BIG[:10]
    with pytest.raises(McpfsError):
        await backend.repo_info(RepoRef("model", "alice/none"), None)
    local = tmp_path / "new.bin"
    local.write_bytes(b"z" * 5000)
    await backend.commit(MODEL, "main", "mcpfs: write", add={"new.bin": str(local)})
    await backend.commit(MODEL, "main", "mcpfs: copy", copy=[("new.bin", "copy.bin")])
    got = hf_ops(stats)
    assert (got["repo_info"]["Count"], got["repo_info"]["Errors"]) == (2, 1)
    assert got["list_tree"]["Count"] == 1
    assert (got["get"]["Count"], got["get"]["BytesIn"]) == (2, 100_010)  # one each, redirect
    assert (got["commit"]["Count"], got["commit"]["BytesOut"]) == (2, 5000)  # copy: 0
    hf = stats.snapshot()["Backends"]["hf"]
    assert (hf["BytesIn"], hf["BytesOut"], hf["Errors"]) == (100_010, 5000, 1)
    assert got["get"]["Latency"]["p50"] > 0


async def test_mount_counts_cache_lookups_and_window_hits(hf_env, demo):
    mount = HfMount(HfBackend(HfConfig(endpoint=hf_env["endpoint"], retry_base=0.01,
                                       cache_dir=str(hf_env["cache"])), token=ALICE))
    stats = Stats()
    mount.attach_stats(stats)
    try:
        assert (await mount.lookup("alice/demo/weights.safetensors")).size == len(BIG)
        reader = await mount.open_read("alice/demo/weights.safetensors")
        off = 0
        while data := await reader.read(off, 128 * 1024):
            off += len(data)
        await reader.close()
        assert off == len(BIG)
        hf = stats.snapshot()["Backends"]["hf"]
        assert hf["BytesIn"] == len(BIG)
        # misses: the first repo_info and tree listing, the local HF cache (the file is not
        # there), the first read; hits: those two caches again at open, and the 15 reads
        # after the first, served by the read-ahead window
        assert hf["Cache"]["Misses"] == 4
        assert hf["Cache"]["Hits"] >= 2 + 15
    finally:
        await mount.aclose()
