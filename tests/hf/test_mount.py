"""mounts/hf.py against the local hub, without FUSE: what vfs/ would call."""

from __future__ import annotations

import errno
import hashlib
import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from mcpfs.backends.huggingface import HfBackend, HfConfig
from mcpfs.mounts.base import DIR, FILE
from mcpfs.mounts.hf import HfMount, HfReader, LocalReader
from mcpfs.mounts.prefetch import MiB
from mcpfs.vfs.spool import Spool

from ..conftest import pattern_bytes
from ..mount_helpers import errno_of, names, read_all
from .conftest import ALICE, BOB, seed

BIG = pattern_bytes(20 * MiB + 3, seed=5)


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    return {"embed": rng.standard_normal((512, 256)).astype(np.float32),
            "head.bias": np.arange(1000, dtype=np.int64),
            "tiny": np.ones((3,), dtype=np.float16)}


@pytest.fixture
def demo(hub_server, tensors):
    return seed(hub_server, "alice/demo", {
        "README.md": b"# demo\n", "config.json": b'{"a": 1}', "sub/deep/n.txt": b"notes",
        "model.safetensors": safetensors.numpy.save(tensors), "big.bin": BIG})


def make_mount(hf_env, token=ALICE, **cfg):
    cfg.setdefault("repos", ["alice/demo", "datasets/carol/data"])
    return HfMount(HfBackend(HfConfig(endpoint=hf_env["endpoint"], retry_base=0.01,
                                      cache_dir=str(hf_env["cache"]), **cfg), token=token))


@pytest.fixture
def mount(hf_env):
    return make_mount(hf_env)


async def write_file(mount, tmp_path, path, data, create=True):
    spool = await Spool.create(tmp_path / "spool")
    try:
        writer = await mount.open_write(path, spool, truncate=True, create=create)
        await spool.write(0, data)
        await spool.materialize()
        return await mount.commit(writer)
    finally:
        await spool.close()


async def test_root_owner_and_repo_listings(mount, demo, hub_server):
    seed(hub_server, "alice/other", {"x": b"x"})
    seed(hub_server, "carol/data", {"train.csv": b"a\n1\n"}, repo_type="dataset")
    assert await names(mount, "") == ["alice", "datasets", "spaces"]
    assert await names(mount, "datasets") == ["alice", "carol"]
    assert await names(mount, "alice") == ["demo", "other"]  # the owner's repos from the API
    assert await names(mount, "alice/demo") == [".gitattributes", "README.md", "big.bin",
                                                "config.json", "model.safetensors", "sub"]
    assert await names(mount, "alice/demo/sub/deep") == ["n.txt"]
    assert await names(mount, "datasets/carol/data") == [".gitattributes", "train.csv"]
    attr = await mount.lookup("alice/demo/big.bin")
    assert (attr.kind, attr.size) == (FILE, len(BIG))
    assert (await mount.lookup("alice/demo/sub")).kind == DIR
    assert (await mount.lookup("someone")).kind == DIR  # any owner, by path
    assert await errno_of(mount.lookup("alice/nope")) == errno.ENOENT
    assert await errno_of(mount.lookup("alice/demo/nope")) == errno.ENOENT
    assert await errno_of(mount.lookup("alice/demo/README.md/x")) == errno.ENOTDIR
    assert await errno_of(names(mount, "alice/demo/README.md")) == errno.ENOTDIR
    assert await errno_of(mount.lookup(".Trash")) == errno.ENOENT
    assert await errno_of(mount.lookup("alice/demo@nobranch")) == errno.ENOENT


async def test_listings_cached_per_commit(mount, demo, hub_server):
    await names(mount, "alice/demo/sub")
    tree_calls = hub_server.count("hub", "GET", "/tree/")
    for _ in range(3):
        assert (await mount.lookup("alice/demo/sub/deep")).kind == DIR
        await names(mount, "alice/demo/sub")
    assert hub_server.count("hub", "GET", "/tree/") == tree_calls  # all from the cache


async def test_reads_regular_lfs_and_random(mount, demo, hub_server):
    assert await read_all(mount, "alice/demo/config.json") == b'{"a": 1}'
    assert await read_all(mount, "alice/demo/big.bin", piece=1 * MiB) == BIG
    reader = await mount.open_read("alice/demo/big.bin")
    assert isinstance(reader, HfReader)
    try:
        for off in (15 * MiB, 4096, 9 * MiB + 17):  # random: only what is asked
            assert await reader.read(off, 4096) == BIG[off:off + 4096]
        assert reader.prefetcher.fetched == 3 * 4096
        assert reader.target.location is not None  # CDN location kept
    finally:
        await reader.close()


async def test_safetensors_and_memmap_style_reads(mount, demo, tensors):
    """What safe_open does on the mounted file: the 8-byte header length, the JSON
    header, then each tensor's byte range; numpy.memmap: page-sized random reads."""
    reader = await mount.open_read("alice/demo/model.safetensors")
    try:
        (n,) = struct.unpack("<Q", await reader.read(0, 8))
        header = json.loads(await reader.read(8, n))
        for name, want in tensors.items():
            start, end = header[name]["data_offsets"]
            raw = await reader.read(8 + n + start, end - start)
            got = np.frombuffer(raw, dtype=want.dtype).reshape(header[name]["shape"])
            assert np.array_equal(got, want)
        size = (await mount.lookup("alice/demo/model.safetensors")).size
        page = 4096
        base = 8 + n + header["embed"]["data_offsets"][0]
        for row in (511, 3, 200):  # rows of "embed" in page-aligned pieces, out of order
            off = base + row * 256 * 4
            lo = off - off % page
            data = await reader.read(lo, min(page * 2, size - lo))
            vals = np.frombuffer(data[off - lo:off - lo + 1024], dtype=np.float32)
            assert np.array_equal(vals, tensors["embed"][row])
    finally:
        await reader.close()


async def test_local_hf_cache_served_first(mount, demo, hf_env, hub_server):
    from huggingface_hub import hf_hub_download
    hf_hub_download("alice/demo", "big.bin", cache_dir=hf_env["cache"], token=ALICE)
    cdn_gets = hub_server.count("cdn", "GET")
    reader = await mount.open_read("alice/demo/big.bin")
    try:
        assert isinstance(reader, LocalReader)
        assert await reader.read(5 * MiB, 100) == BIG[5 * MiB:5 * MiB + 100]
    finally:
        await reader.close()
    assert hub_server.count("cdn", "GET") == cdn_gets


async def test_revisions_pinned_commit_is_immutable(mount, demo, hub_server, tmp_path):
    sha = hub_server.hub.resolve(demo, "main").id
    hub_server.hub.tag(demo, "v1")
    await write_file(mount, tmp_path, "alice/demo/config.json", b'{"a": 2}', create=False)
    assert await read_all(mount, "alice/demo/config.json") == b'{"a": 2}'
    assert await read_all(mount, f"alice/demo@{sha}/config.json") == b'{"a": 1}'
    assert await read_all(mount, "alice/demo@v1/config.json") == b'{"a": 1}'
    attr = await mount.lookup(f"alice/demo@{sha}/config.json")
    assert attr.mode(True) & 0o222 == 0
    assert mount.capabilities_for(f"alice/demo@{sha}/x").immutable
    assert not mount.capabilities_for("alice/demo/x").immutable
    for path in (f"alice/demo@{sha}/new.txt", "alice/demo@v1/new.txt"):
        assert await errno_of(write_file(mount, tmp_path, path, b"x")) == errno.EROFS
    assert await errno_of(mount.unlink(f"alice/demo@{sha}/README.md")) == errno.EROFS
    assert await errno_of(mount.mkdir(f"alice/demo@{sha}/d")) == errno.EROFS


async def test_write_overwrite_append_unlink(mount, demo, hub_server, tmp_path):
    data = pattern_bytes(12 * MiB, seed=9)  # above 10 MB: an LFS commit
    attr = await write_file(mount, tmp_path, "alice/demo/out/w.bin", data)
    assert attr.size == len(data)
    assert "out" in await names(mount, "alice/demo")
    assert await read_all(mount, "alice/demo/out/w.bin", piece=MiB) == data
    head = hub_server.hub.resolve(demo, "main")
    assert head.title == "mcpfs: write out/w.bin"
    assert head.files["out/w.bin"].lfs_oid == hashlib.sha256(data).hexdigest()
    assert (await mount.getxattr("alice/demo/out/w.bin", "user.mcpfs.sha256")).decode() == \
        hashlib.sha256(data).hexdigest()
    spool = await Spool.create(tmp_path / "spool")  # append through the spool
    writer = await mount.open_write("alice/demo/README.md", spool, truncate=False)
    assert writer.existed
    await mount.fill_spool(writer)
    await spool.write(await spool.size(), b"more\n")
    await spool.materialize()
    await mount.commit(writer)
    await spool.close()
    assert await read_all(mount, "alice/demo/README.md") == b"# demo\nmore\n"
    await mount.unlink("alice/demo/README.md")
    assert await errno_of(mount.lookup("alice/demo/README.md")) == errno.ENOENT
    assert hub_server.hub.resolve(demo, "main").title == "mcpfs: delete README.md"
    assert await errno_of(mount.unlink("alice/demo/sub")) == errno.EISDIR
    assert await errno_of(write_file(mount, tmp_path, "alice/demo/no/such/x", b"x",
                                     create=False)) == errno.ENOENT


async def test_mkdir_virtual_until_a_file_lands(mount, demo, hub_server, tmp_path):
    commits = len(hub_server.hub.history(demo, "main"))
    await mount.mkdir("alice/demo/empty")
    await mount.mkdir("alice/demo/empty/inner")
    assert "empty" in await names(mount, "alice/demo")
    assert await names(mount, "alice/demo/empty") == ["inner"]
    assert len(hub_server.hub.history(demo, "main")) == commits  # nothing committed
    assert await errno_of(mount.mkdir("alice/demo/sub")) == errno.EEXIST
    assert await errno_of(mount.rmdir("alice/demo/empty")) == errno.ENOTEMPTY
    await write_file(mount, tmp_path, "alice/demo/empty/inner/f.txt", b"f")
    assert await names(mount, "alice/demo/empty/inner") == ["f.txt"]
    await mount.mkdir("alice/demo/gone")
    await mount.rmdir("alice/demo/gone")
    assert "gone" not in await names(mount, "alice/demo")
    assert await errno_of(mount.rmdir("alice/demo/sub")) == errno.ENOTEMPTY


async def test_renames_are_one_commit(mount, demo, hub_server, hf_env):
    commits = len(hub_server.hub.history(demo, "main"))
    await mount.rename("alice/demo/big.bin", "alice/demo/sub/big2.bin")
    assert len(hub_server.hub.history(demo, "main")) == commits + 1
    assert await errno_of(mount.lookup("alice/demo/big.bin")) == errno.ENOENT
    assert (await mount.lookup("alice/demo/sub/big2.bin")).size == len(BIG)
    await mount.rename("alice/demo/sub", "alice/demo/moved")
    assert len(hub_server.hub.history(demo, "main")) == commits + 2
    assert await names(mount, "alice/demo/moved") == ["big2.bin", "deep"]
    assert await read_all(mount, "alice/demo/moved/deep/n.txt") == b"notes"
    assert await errno_of(mount.lookup("alice/demo/sub")) == errno.ENOENT
    seed(hub_server, "alice/other", {"x": b"x"})
    assert await errno_of(mount.rename("alice/demo/config.json",
                                       "alice/other/config.json")) == errno.EXDEV
    assert await errno_of(mount.rename("alice/demo/moved", "alice/demo/moved/in")) == \
        errno.EINVAL


async def test_xattrs(mount, demo, hub_server):
    sha = hub_server.hub.resolve(demo, "main").id
    xs = await mount.listxattr("alice/demo/big.bin")
    assert set(xs) == {"user.mcpfs.backend", "user.mcpfs.commit", "user.mcpfs.size",
                       "user.mcpfs.blob_id", "user.mcpfs.sha256"}
    assert await mount.getxattr("alice/demo/big.bin", "user.mcpfs.backend") == b"hf"
    assert (await mount.getxattr("alice/demo/big.bin", "user.mcpfs.commit")).decode() == sha
    entry = hub_server.hub.resolve(demo, "main").files["config.json"]
    assert (await mount.getxattr("alice/demo/config.json", "user.mcpfs.blob_id")).decode() \
        == entry.blob_id
    assert await errno_of(mount.getxattr("alice/demo/config.json", "user.mcpfs.sha256")) == \
        errno.ENODATA


async def test_private_and_gated_errnos(hf_env, demo, hub_server):
    seed(hub_server, "alice/secret", {"s.txt": b"s"}, private=True)
    seed(hub_server, "alice/gated", {"g.bin": b"\0g"}, gated=True)
    anon = make_mount(hf_env, token=False)
    assert await errno_of(anon.lookup("alice/secret")) == errno.EACCES  # 401: no token
    bob = make_mount(hf_env, token=BOB)
    assert await errno_of(bob.lookup("alice/secret")) == errno.ENOENT  # 404: not bob's
    assert await names(bob, "alice/gated") == [".gitattributes", "g.bin"]
    assert await errno_of(read_all(bob, "alice/gated/g.bin")) == errno.EACCES
    assert await errno_of(bob.unlink("alice/demo/README.md")) == errno.EACCES
    assert await names(anon, "") == ["alice", "datasets", "spaces"]  # configured owners
    await anon.aclose()
    await bob.aclose()
