"""backends/huggingface.py against the local hub: metadata, ranges, errors, commits."""

from __future__ import annotations

import errno
import hashlib
import logging

import pytest

from mcpfs.backends.huggingface import HfBackend, HfConfig, RepoRef, ResolveTarget
from mcpfs.errors import McpfsError

from ..conftest import pattern_bytes
from .conftest import ALICE, BOB, seed

MODEL = RepoRef("model", "alice/demo")
BIG = pattern_bytes(3 * 1024 * 1024 + 11, seed=7)


@pytest.fixture
def demo(hub_server):
    return seed(hub_server, "alice/demo", {"README.md": b"# demo\n", "sub/a.txt": b"aaa",
                                           "weights.safetensors": BIG})


async def errno_of(coro) -> int:
    with pytest.raises(McpfsError) as exc:
        await coro
    return exc.value.errno


async def test_info_tree_refs(backend, demo, hub_server):
    info = await backend.repo_info(MODEL, None)
    assert len(info.sha) == 40 and info.mtime_ns > 0
    top = {e.path: e for e in await backend.list_tree(MODEL, info.sha, "")}
    assert set(top) == {".gitattributes", "README.md", "sub", "weights.safetensors"}
    assert top["sub"].is_dir
    w = top["weights.safetensors"]
    assert (w.size, w.sha256) == (len(BIG), hashlib.sha256(BIG).hexdigest())
    assert top["README.md"].sha256 is None and len(top["README.md"].blob_id) == 40
    deep = await backend.list_tree(MODEL, info.sha, "", recursive=True)
    assert "sub/a.txt" in {e.path for e in deep}
    hub_server.hub.tag(demo, "v1")
    branches, tags = await backend.refs(MODEL)
    assert branches == {"main": info.sha} and tags == {"v1": info.sha}
    assert (await backend.repo_info(MODEL, info.sha)).sha == info.sha


async def test_ranges_regular_and_lfs_redirect(backend, demo, hub_server):
    sha = (await backend.repo_info(MODEL, None)).sha
    target = ResolveTarget(backend.resolve_url(MODEL, sha, "README.md"), "readme")
    assert await backend.get_range(target, 2, 6) == b"demo"
    assert target.location is None
    assert await backend.get_range(target, 100, 200) == b""  # past the end
    target = ResolveTarget(backend.resolve_url(MODEL, sha, "weights.safetensors"), "w")
    assert await backend.get_range(target, 1000, 5000) == BIG[1000:5000]
    assert target.location is not None and target.location.startswith(hub_server.cdn)
    hub_calls = hub_server.count("hub", "GET", "/resolve/")
    assert await backend.get_range(target, len(BIG) - 10, len(BIG) + 10) == BIG[-10:]
    assert hub_server.count("hub", "GET", "/resolve/") == hub_calls  # straight to the CDN
    cdn = [r for r in hub_server.requests if r[0] == "cdn"]
    assert cdn and not any(r[4] for r in cdn)  # the token never left the hub origin
    target.location = target.location.replace("sig=", "sig=0")  # an expired location
    assert await backend.get_range(target, 0, 4) == BIG[:4]


async def test_errors_map_once(backend, anon_backend, demo, hub_server, hf_env, caplog):
    assert await errno_of(backend.repo_info(RepoRef("model", "alice/none"), None)) == \
        errno.ENOENT
    assert await errno_of(backend.repo_info(MODEL, "nobranch")) == errno.ENOENT
    sha = (await backend.repo_info(MODEL, None)).sha
    assert await errno_of(backend.list_tree(MODEL, sha, "nope")) == errno.ENOENT
    missing = ResolveTarget(backend.resolve_url(MODEL, sha, "nope"), "nope")
    assert await errno_of(backend.get_range(missing, 0, 10)) == errno.ENOENT
    seed(hub_server, "alice/secret", {"s.txt": b"s"}, private=True)
    secret = RepoRef("model", "alice/secret")
    assert (await backend.repo_info(secret, None)).private
    with caplog.at_level(logging.WARNING, "mcpfs.backends.hf"):
        assert await errno_of(anon_backend.repo_info(secret, None)) == errno.EACCES
    assert "no token" in caplog.text
    # anonymous: the Hub answers 401 for a missing repo too (it does not say which)
    assert await errno_of(anon_backend.repo_info(RepoRef("model", "alice/none"), None)) == \
        errno.EACCES
    bob = HfBackend(HfConfig(endpoint=hf_env["endpoint"]), token=BOB)
    assert await errno_of(bob.repo_info(secret, None)) == errno.ENOENT  # the Hub: 404
    seed(hub_server, "alice/gated", {"g.bin": b"\0g"}, gated=True)
    gated = RepoRef("model", "alice/gated")
    gsha = (await bob.repo_info(gated, None)).sha
    assert [e.path for e in await bob.list_tree(gated, gsha, "")][-1] == "g.bin"
    caplog.clear()
    with caplog.at_level(logging.WARNING, "mcpfs.backends.hf"):
        target = ResolveTarget(bob.resolve_url(gated, gsha, "g.bin"), "hf://alice/gated/g.bin")
        assert await errno_of(bob.get_range(target, 0, 2)) == errno.EACCES
    assert "gated repo" in caplog.text and BOB not in caplog.text
    bad = HfBackend(HfConfig(endpoint=hf_env["endpoint"]), token="hf_wrong")
    assert await errno_of(bad.repo_info(MODEL, None)) == errno.EACCES
    await bob.aclose()
    await bad.aclose()


async def test_rate_limit_retried_with_backoff(backend, demo, hub_server, hf_env):
    hub_server.throttle(2)
    assert (await backend.repo_info(MODEL, None)).sha
    sha = (await backend.repo_info(MODEL, None)).sha
    hub_server.throttle(2)
    target = ResolveTarget(backend.resolve_url(MODEL, sha, "README.md"), "readme")
    assert await backend.get_range(target, 0, 6) == b"# demo"
    impatient = HfBackend(HfConfig(endpoint=hf_env["endpoint"], max_retries=1,
                                   retry_base=0.01), token=ALICE)
    hub_server.throttle(5)
    assert await errno_of(impatient.repo_info(MODEL, None)) == errno.EAGAIN
    hub_server.throttle(0)
    await impatient.aclose()


async def test_commits_add_lfs_copy_delete(backend, demo, hub_server, tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"hello")
    big.write_bytes(pattern_bytes(11 * 1024 * 1024, seed=1))
    sha = await backend.commit(MODEL, "main", "mcpfs: write two",
                               add={"new/hello.txt": str(small), "new/big.dat": str(big)})
    files = {e.path: e for e in await backend.list_tree(MODEL, sha, "new")}
    assert files["new/big.dat"].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert files["new/hello.txt"].sha256 is None
    assert hub_server.hub.commits[sha].title == "mcpfs: write two"
    sha2 = await backend.commit(MODEL, "main", "mcpfs: rename",
                                copy=[("new/big.dat", "moved.dat")], delete=["new/big.dat"])
    names = {e.path for e in await backend.list_tree(MODEL, sha2, "", recursive=True)}
    assert "moved.dat" in names and "new/big.dat" not in names
    sha3 = await backend.commit(MODEL, "main", "mcpfs: rm", delete_folders=["new"])
    assert "new" not in {e.path for e in await backend.list_tree(MODEL, sha3, "")}
    assert len(hub_server.hub.history(demo, "main")) == 5


async def test_local_cache_lookup(backend, demo, hf_env):
    from huggingface_hub import hf_hub_download
    sha = (await backend.repo_info(MODEL, None)).sha
    assert backend.cached_file(MODEL, sha, "README.md", 7) is None
    hf_hub_download("alice/demo", "README.md", cache_dir=hf_env["cache"], token=ALICE)
    path = backend.cached_file(MODEL, sha, "README.md", 7)
    assert path and open(path, "rb").read() == b"# demo\n"
    assert backend.cached_file(MODEL, sha, "README.md", 8) is None  # size mismatch: remote


async def test_large_ranges_exact_and_on_one_connection(backend, demo, hub_server):
    """A range of several socket reads lands whole in one buffer; the body is read to its
    end, so the next range reuses the connection (perf: issue 5's read row)."""
    sha = (await backend.repo_info(MODEL, None)).sha
    target = ResolveTarget(backend.resolve_url(MODEL, sha, "weights.safetensors"), "w")
    assert await backend.get_range(target, 0, 4) == BIG[:4]  # follows the redirect
    before = set(map(id, backend.http._transport._pool.connections))
    for start, end in [(0, len(BIG)), (5, 2 * 1024 * 1024 + 3), (len(BIG) - 100, len(BIG) + 99)]:
        got = await backend.get_range(target, start, end)
        assert bytes(got) == BIG[start:end]
    assert set(map(id, backend.http._transport._pool.connections)) == before


async def test_read_body_cuts_a_longer_answer():
    import httpx

    from mcpfs.backends.huggingface import _read_body

    async def body():
        for piece in (b"abc", b"defgh", b"ij"):
            yield piece

    def answer(request):
        return httpx.Response(206, content=body())
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        async with client.stream("GET", "http://x/") as resp:
            assert await _read_body(resp, 6) == b"abcdef"
        async with client.stream("GET", "http://x/") as resp:
            assert await _read_body(resp, 20) == b"abcdefghij"
