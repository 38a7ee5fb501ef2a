"""Import then read: random sizes, chunkers, layouts; random-access reads; paths; corruption."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings, strategies as st

from mcpfs.backends.ipfs.add import Adder
from mcpfs.backends.ipfs.blockstore import FlatFSBlockstore, MemoryBlockstore
from mcpfs.backends.ipfs.cid import CID
from mcpfs.backends.ipfs.importer import ImportParams, import_bytes, import_stream
from mcpfs.backends.ipfs.reader import UnixFSReader, split_ipfs_path
from mcpfs.errors import CorruptBlock, InvalidInput, IsADirectory, NotADirectory, NotFound

params_st = st.builds(
    ImportParams,
    cid_version=st.sampled_from([0, 1]),
    raw_leaves=st.sampled_from([None, True, False]),
    chunk_size=st.integers(1, 4096),
    layout=st.sampled_from(["balanced", "trickle"]),
    max_links=st.integers(2, 12),
)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=20_000), params=params_st, seed=st.integers(0, 2**32))
def test_import_then_read_returns_same_bytes(data, params, seed):
    store = MemoryBlockstore()
    root = import_bytes(store, data, params)
    reader = UnixFSReader(store)
    assert b"".join(reader.iter_file(root.cid)) == data
    assert reader.stat(root.cid).size == len(data)
    assert root.size == len(data)
    rng = random.Random(seed)
    for _ in range(5):
        off = rng.randint(0, len(data) + 3)
        size = rng.randint(0, len(data) + 3)
        assert reader.read(root.cid, off, size) == data[off:off + size]


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=30_000), params=params_st)
def test_stream_and_bytes_import_agree(data, params):
    class Trickling(io.RawIOBase):  # short reads, like a pipe
        def __init__(self, payload):
            self.buf = io.BytesIO(payload)

        def read(self, n=-1):
            return self.buf.read(min(n, 777) if n >= 0 else 777)

    a = import_bytes(MemoryBlockstore(), data, params)
    b = import_stream(MemoryBlockstore(), Trickling(data), params)
    assert a == b


def test_tsize_is_cumulative_block_bytes():
    store = MemoryBlockstore()
    root = import_bytes(store, random.Random(1).randbytes(1_000_000),
                        ImportParams(chunk_size=1000, max_links=5))
    assert root.tsize == sum(len(v) for v in store.blocks.values())


def test_directory_listing_and_path_resolution(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "d" / "sub" / "b.bin").write_bytes(b"beta" * 100000)
    (tmp_path / "d" / "ln").symlink_to("a.txt")
    store = MemoryBlockstore()
    events = list(Adder(store, ImportParams()).add_many([str(tmp_path / "d")], recursive=True,
                                                        wrap=False))
    root = events[-1].root.cid
    reader = UnixFSReader(store)
    assert [link.name for link in reader.list_dir(root)] == ["a.txt", "ln", "sub"]
    b = reader.resolve(root, ["sub", "b.bin"])
    assert reader.read(b, 399_998, 10) == b"ta"
    assert reader.stat(reader.resolve(root, ["ln"])).target == "a.txt"
    assert reader.stat(root).type == "directory"
    with pytest.raises(NotFound):
        reader.resolve(root, ["nope"])
    with pytest.raises(NotADirectory):
        reader.resolve(root, ["a.txt", "x"])
    with pytest.raises(IsADirectory):
        reader.read(root, 0, 1)
    cid, segments = split_ipfs_path(f"/ipfs/{root}/sub/b.bin")
    assert (cid, segments) == (root, ["sub", "b.bin"])


def test_hamt_lookup_and_listing(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    names = [f"{'x' * 200}-{i:05d}" for i in range(1500)]
    for name in names:
        (folder / name).write_bytes(name.encode())
    store = MemoryBlockstore()
    root = list(Adder(store, ImportParams()).add_many([str(folder)], recursive=True,
                                                       wrap=False))[-1].root.cid
    reader = UnixFSReader(store)
    pb, fsdata = reader.unixfs_node(root)
    assert fsdata.type == 5  # HAMTShard: 1500 * (206 + 34) bytes > 256 KiB
    assert sorted(link.name for link in reader.list_dir(root)) == names
    # a whole listing does not keep the decoded shards below the root (its caller keeps
    # the listing); only the root, decoded above, is in the node cache
    assert list(reader._nodes.keys()) == [root]
    hit = reader.find(root, names[777])
    assert reader.read(hit.cid, 0, 1000) == names[777].encode()
    assert reader.find(root, "absent") is None


def test_corrupt_block_is_an_error_naming_the_cid(tmp_path):
    store = FlatFSBlockstore(tmp_path / "blocks")
    data = random.Random(2).randbytes(600_000)
    root = import_bytes(store, data, ImportParams())
    reader = UnixFSReader(store)
    leaf = next(iter(reader.node(root.cid)[0].links)).cid
    store.path_of(leaf).write_bytes(b"garbage")
    with pytest.raises(CorruptBlock, match=str(leaf)):
        reader.read(root.cid, 0, 10)
    assert reader.read(root.cid, 300_000, 5) == data[300_000:300_005]  # other leaves fine


def test_flatfs_layout_matches_kubo(tmp_path):
    store = FlatFSBlockstore(tmp_path / "blocks")
    # The empty UnixFS directory, as every fresh kubo repo stores it.
    cid = CID.decode("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    store.put(cid, bytes.fromhex("0a020801"))
    key = "CIQFTFEEHEDF6KLBT32BFAGLXEZL4UWFNWM4LFTLMXQBCERZ6CMLX3Y"
    assert store.path_of(cid) == tmp_path / "blocks" / "X3" / f"{key}.data"
    assert store.path_of(cid).exists()
    assert (tmp_path / "blocks" / "SHARDING").read_text() == \
        "/repo/flatfs/shard/v1/next-to-last/2\n"


def test_blocks_are_written_through_one_temp_folder(tmp_path, monkeypatch):
    """New block files are created in blocks/.temp and renamed into their shard (kubo's
    flatfs does the same; one folder keeps ext4's inode allocation in one group). A
    crash's leftover there is removed when the store is opened; a young one is kept (a
    process writing now), and .temp is never listed as blocks."""
    import os
    import time
    from mcpfs.backends.ipfs import blockstore as bs

    created = []
    real = bs.write_file
    monkeypatch.setattr(bs, "write_file", lambda path, data, *a: (created.append(path),
                                                                  real(path, data, *a)))
    store = FlatFSBlockstore(tmp_path / "blocks")
    imported = import_bytes(store, os.urandom(600_000), ImportParams())
    temp = tmp_path / "blocks" / ".temp"
    assert created and all(os.path.dirname(path) == str(temp) for path in created)
    assert list(temp.iterdir()) == []
    assert len(list(store.multihashes())) == 4  # 3 leaves, 1 root
    assert len(list((tmp_path / "blocks").glob("*/*.data"))) == 4
    assert store.get(imported.cid)
    old, young = temp / "KEY.data-1-2", temp / "KEY.data-3-4"
    old.write_bytes(b"torn"), young.write_bytes(b"writing")
    os.utime(old, (time.time() - bs.STALE_TEMP - 60,) * 2)
    FlatFSBlockstore(tmp_path / "blocks")
    assert not old.exists() and young.exists()
    assert len(list(store.multihashes())) == 4


def test_invalid_params_are_clean_errors():
    with pytest.raises(InvalidInput):
        ImportParams(chunk_size=0)
    with pytest.raises(InvalidInput):
        ImportParams(chunk_size=2 * 1024 * 1024)
    with pytest.raises(InvalidInput):
        ImportParams(layout="wide")


def test_import_memory_stays_flat():
    """32 MiB streamed through the importer allocate a few chunks, not the file."""
    import tracemalloc

    class Generated(io.RawIOBase):
        def __init__(self, total):
            self.left = total
            self.piece = random.Random(5).randbytes(1 << 20)

        def readable(self):
            return True

        def read(self, n=-1):
            n = min(self.left, n if n >= 0 else self.left, len(self.piece))
            self.left -= n
            return self.piece[:n]

    from mcpfs.backends.ipfs.blockstore import NullBlockstore
    tracemalloc.start()
    try:
        root = import_stream(NullBlockstore(), Generated(32 << 20), ImportParams())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert root.size == 32 << 20
    assert peak < 8 << 20, f"peak {peak} bytes while importing 32 MiB"


def test_sync_many_blocks_uses_syncfs_and_few_use_fsync(tmp_path, monkeypatch):
    from mcpfs.backends.ipfs import blockstore as bs

    calls = []
    monkeypatch.setattr(bs, "_syncfs", lambda folder: calls.append(("syncfs", folder)) or True)
    monkeypatch.setattr(bs, "_fsync_path", lambda path: calls.append(("fsync", path)))
    store = FlatFSBlockstore(tmp_path / "blocks")
    import_bytes(store, random.Random(3).randbytes(64 * 1024), ImportParams(chunk_size=1024))
    store.sync()
    assert calls == [("syncfs", tmp_path / "blocks")]
    calls.clear()
    import_bytes(store, b"one small block", ImportParams())
    store.sync()
    assert calls and all(kind == "fsync" for kind, _ in calls)


def test_real_syncfs_call_succeeds(tmp_path):
    from mcpfs.backends.ipfs.blockstore import _syncfs

    assert _syncfs(tmp_path) is True


# ---------------------------------------------------------------- leaves without decoding
@pytest.mark.parametrize("layout", ["balanced", "trickle"])
def test_leaf_content_is_what_a_full_decode_gives(layout):
    from mcpfs.backends.ipfs import dagpb, unixfs
    from mcpfs.backends.ipfs.reader import leaf_content
    store = MemoryBlockstore()
    data = random.Random(5).randbytes(3 * 262144 + 1000)
    root = import_bytes(store, data, ImportParams(layout=layout)).cid
    reader = UnixFSReader(store)
    leaves = [link.cid for link in reader.node(root)[0].links]
    assert len(leaves) == 4
    for cid in leaves:
        block = store.get(cid)
        full = unixfs.decode(dagpb.decode(block).data).data
        assert bytes(leaf_content(block)) == full
    assert leaf_content(store.get(root)) is None  # links: decoded the full way
    assert reader.read(root, 262000, 5000) == data[262000:267000]


def test_leaf_content_leaves_unusual_nodes_to_the_full_decode():
    from mcpfs.backends.ipfs import dagpb, unixfs
    from mcpfs.backends.ipfs.reader import leaf_content
    with_mtime = unixfs.UnixFSData(unixfs.FILE, data=b"abc", filesize=3, mtime=(5, None))
    directory = unixfs.UnixFSData(unixfs.DIRECTORY)
    for fs in (with_mtime, directory):
        assert leaf_content(dagpb.PBNode([], fs.encode()).encode()) is None
    assert leaf_content(b"\x0a\x05\x08") is None  # truncated: InvalidInput, not a leaf
    empty = unixfs.UnixFSData(unixfs.FILE, filesize=0)
    assert bytes(leaf_content(dagpb.PBNode([], empty.encode()).encode())) == b""
