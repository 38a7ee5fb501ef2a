"""MFS (kubo's `ipfs files`) on a real flatfs store: every operation, its errors, durability
of the root, concurrency, HAMT switching, and CID equality with `ipfs add`."""

from __future__ import annotations

import io
import random

import pytest
import trio

from mcpfs.backends.ipfs import hamt, mfs_tree, pins, unixfs
from mcpfs.backends.ipfs.blockstore import FlatFSBlockstore, MemoryBlockstore
from mcpfs.backends.ipfs.cid import CID
from mcpfs.backends.ipfs.directory import build_directory
from mcpfs.backends.ipfs.importer import ImportParams, import_bytes
from mcpfs.backends.ipfs.mfs import EMPTY_DIR_V0, MFS, MFS_PARAMS
from mcpfs.backends.ipfs.pins import walk_dag
from mcpfs.backends.ipfs.reader import UnixFSReader
from mcpfs.errors import (AlreadyExists, BlockNotFound, DirectoryNotEmpty, InvalidInput,
                          IsADirectory, McpfsError, NotADirectory, NotFound)

SMALL = ImportParams(chunk_size=64, max_links=3)  # deep DAGs from small files
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def store(tmp_path):
    return FlatFSBlockstore(tmp_path / "blocks")


@pytest.fixture
def root_file(tmp_path):
    return tmp_path / "mfs-root"


def open_mfs(store, root_file, params=SMALL) -> MFS:
    return MFS(store, UnixFSReader(store), params, root_file)


@pytest.fixture
def fs(store, root_file):
    return open_mfs(store, root_file)


def expected_cid(data: bytes, params: ImportParams) -> str:
    return str(import_bytes(MemoryBlockstore(), data, params).cid)


# ---------------------------------------------------------------- root

async def test_empty_root_is_kubos_empty_dir(store, root_file):
    assert str(open_mfs(store, root_file, MFS_PARAMS).root()) == EMPTY_DIR_V0
    v1 = open_mfs(store, root_file.with_name("v1"), ImportParams(cid_version=1))
    assert str(v1.root()) == EMPTY_DIR_V1
    fs = await MFS.open(store, UnixFSReader(store), MFS_PARAMS, root_file)
    assert (await fs.stat("/")) == {"Hash": EMPTY_DIR_V0, "Size": 0, "CumulativeSize": 4,
                                    "Blocks": 0, "Type": "directory"}
    assert await fs.ls("/") == []


async def test_flush_persists_and_reloads(store, root_file, fs):
    await fs.mkdir("/d")
    await fs.write("/d/f", b"hello", create=True, flush=False)
    assert fs.root() != fs.flushed_root()
    assert not await open_mfs(store, root_file).exists("/d/f")
    cid = await fs.flush("/d/f")
    assert str(cid) == (await fs.stat("/d/f"))["Hash"]
    again = open_mfs(store, root_file)
    assert again.root() == fs.root()
    assert await again.read("/d/f") == b"hello"
    assert root_file.read_text().strip() == str(fs.root())


async def test_crash_before_root_rename_keeps_old_root(store, root_file, fs, monkeypatch):
    await fs.write("/keep", rand(500, 1), create=True)
    old_root = fs.root()

    class Crash(Exception):
        pass

    def crash(*args):
        raise Crash("power cut")

    monkeypatch.setattr(pins.os, "replace", crash)  # blocks are written, the rename dies
    with pytest.raises(Crash):
        await fs.write("/lost", rand(500, 2), create=True)
    monkeypatch.undo()
    reopened = open_mfs(store, root_file)
    assert reopened.root() == old_root
    assert [e["Name"] for e in await reopened.ls("/")] == ["keep"]
    assert await reopened.read("/keep") == rand(500, 1)
    assert len(list(walk_dag(store, old_root))) > 3  # every block of the old root present


def test_bad_root_file(store, root_file):
    root_file.write_text("not a cid")
    with pytest.raises(McpfsError):
        open_mfs(store, root_file)
    root_file.write_text(str(CID.of(b"never stored", 0x70, 0)))
    with pytest.raises(BlockNotFound):
        open_mfs(store, root_file)


# ---------------------------------------------------------------- directories

async def test_mkdir_and_errors(fs):
    await fs.mkdir("/a")
    with pytest.raises(AlreadyExists):
        await fs.mkdir("/a")
    await fs.mkdir("/a", parents=True)  # -p on an existing dir is fine
    with pytest.raises(AlreadyExists):
        await fs.mkdir("/")
    await fs.mkdir("/", parents=True)
    with pytest.raises(NotFound):
        await fs.mkdir("/x/y")
    await fs.mkdir("/x/y/z", parents=True)
    assert (await fs.stat("/x/y/z"))["Type"] == "directory"
    await fs.write("/file", b"1", create=True)
    with pytest.raises(NotADirectory):
        await fs.mkdir("/file/sub")
    with pytest.raises(NotADirectory):
        await fs.mkdir("/file/sub", parents=True)
    with pytest.raises(AlreadyExists):
        await fs.mkdir("/file", parents=True)
    with pytest.raises(InvalidInput):
        await fs.mkdir("relative")


async def test_ls_and_stat(fs):
    await fs.mkdir("/d")
    await fs.write("/d/b", rand(300), create=True)
    await fs.mkdir("/d/a")
    assert await fs.ls("/d") == [{"Name": "a", "Type": 0, "Size": 0, "Hash": ""},
                                 {"Name": "b", "Type": 0, "Size": 0, "Hash": ""}]
    long = await fs.ls("/d", long=True)
    assert [(e["Name"], e["Type"], e["Size"]) for e in long] == [("a", 1, 0), ("b", 0, 300)]
    assert long[1]["Hash"] == (await fs.stat("/d/b"))["Hash"]
    assert await fs.ls("/d/b", long=True) == [long[1]]
    st = await fs.stat("/d/b")
    assert st["Type"] == "file" and st["Size"] == 300 and st["Blocks"] == 2
    assert st["CumulativeSize"] > 300
    with pytest.raises(NotFound):
        await fs.stat("/d/nope")
    with pytest.raises(NotADirectory):
        await fs.stat("/d/b/c")


# ---------------------------------------------------------------- files

@pytest.mark.parametrize("params", [SMALL, MFS_PARAMS, ImportParams(cid_version=1),
                                    ImportParams(chunk_size=4096, layout="trickle")])
async def test_file_hash_equals_ipfs_add(store, root_file, params):
    fs = open_mfs(store, root_file, params)
    data = rand(300_000 if params is not SMALL else 1000, 3)
    await fs.write("/f", data, create=True)
    assert (await fs.stat("/f"))["Hash"] == expected_cid(data, params)
    await fs.write("/empty", b"", create=True)
    assert (await fs.stat("/empty"))["Hash"] == expected_cid(b"", params)


async def test_write_offsets_truncate_count(fs):
    base = rand(1000, 4)
    await fs.write("/f", base, create=True)
    await fs.write("/f", b"XYZ", offset=10)
    want = base[:10] + b"XYZ" + base[13:]
    assert await fs.read("/f") == want
    assert (await fs.stat("/f"))["Hash"] == expected_cid(want, SMALL)
    await fs.write("/f", b"tail", offset=1010)  # past the end: zero fill
    want = want + bytes(10) + b"tail"
    assert await fs.read("/f") == want
    await fs.write("/f", b"abcdef", offset=2, count=3)
    want = want[:2] + b"abc" + want[5:]
    assert await fs.read("/f") == want
    await fs.write("/f", b"new", truncate=True)
    assert await fs.read("/f") == b"new"
    await fs.write("/f", b"!", offset=5, truncate=True)
    assert await fs.read("/f") == bytes(5) + b"!"
    assert (await fs.stat("/f"))["Hash"] == expected_cid(bytes(5) + b"!", SMALL)


async def test_write_stream_sources(fs):
    data = rand(5000, 5)

    async def agen():
        for i in range(0, len(data), 777):
            await trio.sleep(0)
            yield data[i:i + 777]

    await fs.write("/bio", io.BytesIO(data), create=True)
    await fs.write("/iter", (data[i:i + 13] for i in range(0, len(data), 13)), create=True)
    await fs.write("/async", agen(), create=True)
    want = expected_cid(data, SMALL)
    for name in ("bio", "iter", "async"):
        assert (await fs.stat(f"/{name}"))["Hash"] == want
    with pytest.raises(InvalidInput):
        await fs.write("/bad", 42, create=True)


async def test_write_errors(fs):
    with pytest.raises(NotFound):
        await fs.write("/nope", b"x")
    with pytest.raises(NotFound):
        await fs.write("/no/dir", b"x", create=True)
    await fs.write("/no/dir", b"x", create=True, parents=True)
    with pytest.raises(IsADirectory):
        await fs.write("/no", b"x")
    with pytest.raises(IsADirectory):
        await fs.write("/", b"x")
    with pytest.raises(NotADirectory):
        await fs.write("/no/dir/f", b"x", create=True)
    with pytest.raises(InvalidInput):
        await fs.write("/no/dir", b"x", offset=-1)


async def test_read_ranges_and_errors(fs):
    data = rand(3000, 6)
    await fs.write("/f", data, create=True)
    assert await fs.read("/f", offset=100, count=50) == data[100:150]
    assert await fs.read("/f", offset=2990, count=50) == data[2990:]
    assert await fs.read("/f", offset=5000) == b""
    pieces = [p async for p in fs.iter_read("/f", offset=7, piece=256)]
    assert b"".join(pieces) == data[7:] and max(map(len, pieces)) <= 256
    await fs.mkdir("/d")
    with pytest.raises(IsADirectory):
        await fs.read("/d")
    with pytest.raises(NotFound):
        await fs.read("/missing")
    await fs.symlink("/l", "f")
    with pytest.raises(InvalidInput):
        await fs.read("/l")


async def test_symlink(fs):
    await fs.symlink("/link", "../target")
    st = await fs.stat("/link")
    assert st["Type"] == "symlink" and st["Size"] == len("../target")
    with pytest.raises(AlreadyExists):
        await fs.symlink("/link", "x")


# ---------------------------------------------------------------- rm / mv / cp

async def test_rm_and_rmdir(fs):
    await fs.mkdir("/d/e", parents=True)
    await fs.write("/d/f", b"1", create=True)
    with pytest.raises(IsADirectory, match="use -r"):
        await fs.rm("/d")
    with pytest.raises(DirectoryNotEmpty):
        await fs.rmdir("/d")
    with pytest.raises(NotADirectory):
        await fs.rmdir("/d/f")
    await fs.rmdir("/d/e")
    await fs.rm("/d/f")
    with pytest.raises(NotFound):
        await fs.rm("/d/f")
    with pytest.raises(InvalidInput):
        await fs.rm("/", recursive=True)
    await fs.write("/d/g/h", b"2", create=True, parents=True)
    await fs.rm("/d", recursive=True)
    assert await fs.ls("/") == []
    assert str(fs.root()) == str(open_mfs(MemoryBlockstore(), fs.root_file.with_name("x")).root())


async def test_rm_force_removes_broken_entries(store, root_file, fs):
    await fs.write("/broken/f", rand(300, 7), create=True, parents=True)
    broken = CID.decode((await fs.stat("/broken"))["Hash"])
    store.delete(broken)
    fs = open_mfs(store, root_file)  # a fresh reader: no cached copy of the lost node
    with pytest.raises(BlockNotFound):
        await fs.rm("/broken")
    await fs.rm("/broken", force=True)
    assert await fs.ls("/") == []


async def test_mv(fs):
    await fs.write("/a", b"A", create=True)
    await fs.write("/b", b"B", create=True)
    await fs.mkdir("/dir")
    assert await fs.mv("/a", "/dir") == "/dir/a"  # into an existing directory
    assert await fs.read("/dir/a") == b"A"
    assert await fs.mv("/dir/a", "/dir/renamed") == "/dir/renamed"
    assert [e["Name"] for e in await fs.ls("/dir")] == ["renamed"]
    await fs.mv("/b", "/dir/renamed")  # replaces an existing file
    assert await fs.read("/dir/renamed") == b"B"
    assert [e["Name"] for e in await fs.ls("/")] == ["dir"]
    assert await fs.mv("/dir", "/dir") == "/dir"  # no-op
    with pytest.raises(InvalidInput):
        await fs.mv("/dir", "/dir/sub")
    with pytest.raises(NotFound):
        await fs.mv("/missing", "/x")
    with pytest.raises(NotFound):
        await fs.mv("/dir/renamed", "/no/such/place")
    await fs.mkdir("/other/dir", parents=True)
    with pytest.raises(AlreadyExists):
        await fs.mv("/dir", "/other")  # /other/dir exists and is a directory
    with pytest.raises(InvalidInput):
        await fs.mv("/", "/x")


async def test_cp_links_without_copying(store, fs):
    data = rand(1000, 8)
    f = import_bytes(store, data, SMALL)
    d = build_directory([("inner", f.cid, f.tsize)], SMALL, lambda b: _put(store, b))
    blocks_before = set(store.multihashes())
    await fs.cp(f"/ipfs/{d.cid}/inner", "/copied")
    await fs.cp(f"/ipfs/{d.cid}", "/tree")
    await fs.cp("/tree", "/tree2")  # MFS source
    assert (await fs.stat("/copied"))["Hash"] == str(f.cid)
    assert await fs.read("/tree2/inner") == data
    new_blocks = set(store.multihashes()) - blocks_before
    assert all(len(store.get(CID(1, 0x55, mh))) < 400 for mh in new_blocks)  # only dir nodes
    with pytest.raises(AlreadyExists):
        await fs.cp("/tree", "/copied")
    with pytest.raises(NotFound):
        await fs.cp("/nope", "/x")
    with pytest.raises(NotFound):
        await fs.cp(f"/ipfs/{d.cid}/missing", "/x")
    with pytest.raises(BlockNotFound):
        await fs.cp(f"/ipfs/{CID.of(b'absent')}", "/x")
    await fs.cp("/tree", "/deep/er/copy", parents=True)
    assert await fs.read("/deep/er/copy/inner") == data


def _put(store, block: bytes) -> CID:
    cid = SMALL.node_cid(block)
    store.put(cid, block)
    return cid


# ---------------------------------------------------------------- concurrency, HAMT

async def test_concurrent_writers_same_directory(fs):
    await fs.mkdir("/shared")

    async def writer(i: int) -> None:
        await fs.write(f"/shared/f{i}", rand(200, i), create=True, flush=i % 2 == 0)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(writer, i)
    names = sorted(e["Name"] for e in await fs.ls("/shared"))
    assert names == sorted(f"f{i}" for i in range(20))
    for i in range(20):
        assert await fs.read(f"/shared/f{i}") == rand(200, i)


async def test_directory_switches_to_hamt_and_back(store, root_file):
    params = ImportParams(hamt_threshold=400)  # links estimate: 34 + 5 bytes per entry
    fs = open_mfs(store, root_file, params)
    reader = UnixFSReader(store)
    entries = {}

    async def dir_type() -> int:
        cid = CID.decode((await fs.stat("/big"))["Hash"])
        return reader.unixfs_node(cid)[1].type

    def fresh_cid() -> str:
        f = import_bytes(MemoryBlockstore(), b"", params)
        items = [(name, f.cid, f.tsize) for name in entries]
        mem = MemoryBlockstore()
        return str(build_directory(items, params, lambda b: _put_with(mem, params, b)).cid)

    await fs.mkdir("/big")
    for i in range(12):
        entries[f"e{i:03d}"] = True
        await fs.write(f"/big/e{i:03d}", b"", create=True)
    assert await dir_type() == unixfs.HAMT_SHARD
    assert (await fs.stat("/big"))["Hash"] == fresh_cid()
    assert sorted(e["Name"] for e in await fs.ls("/big")) == sorted(entries)
    assert await fs.read("/big/e005") == b""
    for i in range(6):
        del entries[f"e{i:03d}"]
        await fs.rm(f"/big/e{i:03d}")
    assert await dir_type() == unixfs.DIRECTORY
    assert (await fs.stat("/big"))["Hash"] == fresh_cid()


def _put_with(store, params, block):
    cid = params.node_cid(block)
    store.put(cid, block)
    return cid


def test_rechunk_and_split_path():
    pieces = [b"a" * 5, b"", b"b" * 20, b"c"]
    chunks = list(mfs_tree.rechunk(pieces, 8))
    assert b"".join(chunks) == b"a" * 5 + b"b" * 20 + b"c"
    assert [len(c) for c in chunks] == [8, 8, 8, 2]
    assert mfs_tree.split_path("/a//b/./c/../d/") == ["a", "b", "d"]
    assert mfs_tree.split_path("/") == []
    with pytest.raises(InvalidInput):
        mfs_tree.split_path("a/b")
    assert hamt  # imported for the HAMT test's type constants


async def test_gc_lock_holds_gc_off_during_a_write(store, root_file):
    from mcpfs.backends.ipfs.gc import GCLock, collect

    lock = GCLock()
    fs = MFS(store, UnixFSReader(store), SMALL, root_file, gc_lock=lock)
    release = trio.Event()
    collected = []

    async def slow_source():
        yield b"first"
        await release.wait()
        yield b"second"

    def run_gc():
        with lock.collecting():
            collected.append(collect(store, fs.pending_roots()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: fs.write("/f", slow_source(), create=True))
        await trio.sleep(0.05)
        gc_done = trio.Event()

        async def gc_task():
            await trio.to_thread.run_sync(run_gc)
            gc_done.set()

        nursery.start_soon(gc_task)
        await trio.sleep(0.1)
        assert collected == []  # GC waits for the writer
        release.set()
    assert await fs.read("/f") == b"firstsecond"
    assert len(collected) == 1


@pytest.mark.parametrize("params", [
    ImportParams(hamt_threshold=600, hamt_fanout=4),  # deep shards, collisions
    ImportParams(hamt_threshold=900, hamt_fanout=16, hamt_estimation="block", cid_version=1),
    ImportParams(hamt_threshold=0),  # never sharded
])
def test_incremental_directories_equal_build_directory(params):
    """Random inserts, replaces and removes through the cached, incremental directory
    states give at every step the CID build_directory gives for the same entries
    (both ways across the HAMT switch), with no directory ever decoded again."""
    from mcpfs.backends.ipfs.mfs_dirs import DirState
    rng = random.Random(5)
    mem = MemoryBlockstore()
    put = lambda b: _put_with(mem, params, b)  # noqa: E731
    files = [import_bytes(mem, rand(rng.randrange(0, 50), i), params) for i in range(8)]
    state = DirState.of(())
    model: dict = {}
    for step in range(400):
        name = f"n{rng.randrange(60)}" + "x" * rng.randrange(3)
        if name in model and rng.random() < 0.45:
            del model[name]
            change = {name: None}
        else:
            f = rng.choice(files)
            model[name] = (f.cid, f.tsize)
            change = {name: (f.cid, f.tsize)}
        state = state.apply(change, params)
        got = state.encode(params, put)
        want = build_directory([(n, c, t) for n, (c, t) in model.items()], params,
                               lambda b: _put_with(MemoryBlockstore(), params, b))
        assert (got.cid, got.tsize, got.sharded) == (want.cid, want.tsize, want.sharded), step


async def test_directory_cache_serves_updates_without_decoding(store, root_file, fs):
    await fs.mkdir("/d")
    for i in range(30):
        await fs.write(f"/d/f{i}", b"x", create=True, flush=False)
    calls = []
    real = fs.reader.unixfs_node
    fs.reader.unixfs_node = lambda cid: calls.append(cid) or real(cid)
    await fs.write("/d/new", b"y", create=True, flush=False)
    d = fs.tree.resolve(fs.root(), "/d")
    assert fs.tree.child(d, "new") is not None and fs.tree.kind(d) == "directory"
    assert all(fs.tree.kind(c) != "directory" for c in calls)  # no directory decoded
    fresh = open_mfs(store, root_file.with_name("other"))
    assert str(fresh.tree.resolve(fs.root(), "/d")) == str(d)
    assert sorted(e["Name"] for e in await fs.ls("/d")) == sorted(
        [f"f{i}" for i in range(30)] + ["new"])
