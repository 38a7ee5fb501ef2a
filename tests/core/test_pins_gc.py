"""links_of, pins (kubo semantics, persistence) and mark & sweep GC on a real flatfs store."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import dag_cbor
import pytest
from multiformats import CID as MFCID

from mcpfs.backends.ipfs import gc
from mcpfs.backends.ipfs.blockstore import FlatFSBlockstore
from mcpfs.backends.ipfs.cid import CID, DAG_CBOR, DAG_JSON, DAG_PB, IDENTITY, RAW
from mcpfs.backends.ipfs.directory import build_directory
from mcpfs.backends.ipfs.importer import ImportParams, import_bytes
from mcpfs.backends.ipfs.links import links_of
from mcpfs.backends.ipfs.pins import Pinner, walk_dag
from mcpfs.backends.ipfs.reader import UnixFSReader
from mcpfs.backends.ipfs.mfs import MFS
from mcpfs.errors import BlockNotFound, InvalidInput, NotFound

SMALL = ImportParams(chunk_size=64, max_links=3)  # multi-level DAGs from a few hundred bytes


def rand(n: int, seed: int) -> bytes:
    """Distinct chunks, so no leaf is deduplicated (300 bytes -> 5 leaves, 2 inner, 1 root)."""
    return random.Random(seed).randbytes(n)


@pytest.fixture
def store(tmp_path):
    return FlatFSBlockstore(tmp_path / "blocks")


def put_raw(store, data: bytes) -> CID:
    cid = CID.of(data, RAW)
    store.put(cid, data)
    return cid


def make_dir(store, entries, params=SMALL):
    def put_node(block):
        cid = params.node_cid(block)
        store.put(cid, block)
        return cid
    return build_directory(entries, params, put_node).cid


def all_mhs(store):
    return set(store.multihashes())


def dag_mhs(store, root):
    return {cid.multihash for cid in walk_dag(store, root)}


def backdate(store, seconds=3600):
    """Make every stored block look old, so GC's mtime guard does not keep it."""
    old = time.time() - seconds
    for mh in store.multihashes():
        os.utime(store.path_of(CID(1, RAW, mh)), (old, old))


# ---------------------------------------------------------------- links_of

def test_links_of_dag_pb_and_raw(store):
    f = import_bytes(store, rand(300, 1), SMALL)
    assert f.cid.codec == DAG_PB
    children = links_of(f.cid, store.get(f.cid))
    assert len(children) == 2 and all(store.has(c) for c in children)
    raw = put_raw(store, b"leaf")
    assert links_of(raw, b"leaf") == []
    ident = CID(1, IDENTITY, b"\x00\x03abc")
    assert links_of(ident, b"abc") == []


def test_links_of_dag_cbor():
    a, b = CID.of(b"a", RAW), CID.of(b"b", DAG_PB, version=0)
    block = dag_cbor.encode({"x": [MFCID.decode(str(a)), 1, {"y": MFCID.decode(str(b))}],
                             "z": "text"})
    cid = CID.of(block, DAG_CBOR)
    assert links_of(cid, block) == [a, b]


def test_links_of_dag_json():
    a, b = CID.of(b"a", RAW), CID.of(b"b", DAG_PB, version=0)
    block = json.dumps({"l": {"/": str(a)}, "m": [{"/": str(b)}, {"/": {"bytes": "AA"}}],
                        "n": {"/": str(a), "extra": 1}}).encode()
    cid = CID.of(block, DAG_JSON)
    assert links_of(cid, block) == [a, b]


@pytest.mark.parametrize("codec,block", [(DAG_PB, b"\xff\xff"), (DAG_CBOR, b"\xff\x00"),
                                          (DAG_JSON, b"{nope"),
                                          (DAG_JSON, b'{"/": "not-a-cid"}')])
def test_links_of_invalid_blocks(codec, block):
    with pytest.raises(InvalidInput):
        links_of(CID.of(block, codec), block)


# ---------------------------------------------------------------- pins

def test_pin_recursive_direct_and_ls(store, tmp_path):
    f = import_bytes(store, rand(300, 2), SMALL)
    d = make_dir(store, [("f", f.cid, f.tsize)])
    other = put_raw(store, b"other")
    pins = Pinner(tmp_path, store)
    pins.add(d, name="tree")
    pins.add(other, recursive=False, name="one")
    assert list(pins.ls("recursive")) == [(d, "recursive", "tree")]
    assert list(pins.ls("direct")) == [(other, "direct", "one")]
    indirect = {cid for cid, kind, _ in pins.ls("indirect")}
    assert indirect == dag_mhs_cids(store, d) - {d}
    assert {kind for _, kind, _ in pins.ls()} == {"recursive", "direct", "indirect"}
    assert pins.is_pinned(d) == "recursive"
    assert pins.is_pinned(other) == "direct"
    assert pins.is_pinned(f.cid) == "indirect"
    assert pins.is_pinned(put_raw(store, b"loose")) is None
    with pytest.raises(InvalidInput):
        list(pins.ls("bogus"))


def dag_mhs_cids(store, root):
    return set(walk_dag(store, root))


def test_pins_persist_atomically(store, tmp_path):
    a, b = put_raw(store, b"a"), put_raw(store, b"b")
    pins = Pinner(tmp_path, store)
    pins.add(a)
    pins.add(b, recursive=False, name="bee")
    reloaded = Pinner(tmp_path, store)
    assert reloaded.recursive_roots() == [a] and reloaded.direct_roots() == [b]
    assert list(reloaded.ls("direct")) == [(b, "direct", "bee")]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_pin_errors_like_kubo(store, tmp_path):
    pins = Pinner(tmp_path, store)
    f = import_bytes(store, rand(300, 3), SMALL)
    pins.add(f.cid)
    with pytest.raises(InvalidInput, match="already pinned recursively"):
        pins.add(f.cid, recursive=False)
    with pytest.raises(InvalidInput, match="is pinned recursively"):
        pins.rm(f.cid, recursive=False)
    child = links_of(f.cid, store.get(f.cid))[0]
    with pytest.raises(NotFound, match="not pinned or pinned indirectly"):
        pins.rm(child)
    pins.rm(f.cid)
    assert pins.is_pinned(f.cid) is None
    # a direct pin is upgraded by a recursive one, and rm works without -r on direct pins
    pins.add(f.cid, recursive=False)
    pins.rm(f.cid, recursive=False)
    pins.add(f.cid, recursive=False)
    pins.add(f.cid)
    assert pins.direct_roots() == [] and pins.recursive_roots() == [f.cid]


def test_pin_recursive_needs_whole_dag(store, tmp_path):
    pins = Pinner(tmp_path, store)
    f = import_bytes(store, rand(300, 4), SMALL)
    missing = links_of(f.cid, store.get(f.cid))[1]
    store.delete(missing)
    with pytest.raises(BlockNotFound, match=str(missing)):
        pins.add(f.cid)
    assert pins.recursive_roots() == []
    pins.add(f.cid, recursive=False)  # direct needs only the root
    with pytest.raises(BlockNotFound):
        pins.add(CID.of(b"never stored", RAW), recursive=False)


def test_pinner_is_thread_safe(store, tmp_path):
    pins = Pinner(tmp_path, store)
    cids = [put_raw(store, str(i).encode()) for i in range(40)]
    threads = [threading.Thread(target=pins.add, args=(c,)) for c in cids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(Pinner(tmp_path, store).recursive_roots()) == sorted(cids)


# ---------------------------------------------------------------- gc

def test_gc_keeps_reachable_and_direct(store, tmp_path):
    kept_file = import_bytes(store, rand(300, 5), SMALL)
    kept_dir = make_dir(store, [("k", kept_file.cid, kept_file.tsize)])
    direct_dir = make_dir(store, [("k2", put_raw(store, b"child of a direct pin"), 21)])
    direct_child = links_of(direct_dir, store.get(direct_dir))[0]
    garbage = import_bytes(store, rand(300, 6), SMALL)
    pins = Pinner(tmp_path, store)
    pins.add(kept_dir)
    pins.add(direct_dir, recursive=False)
    backdate(store)
    garbage_mhs = dag_mhs(store, garbage.cid) | {direct_child.multihash}
    expected_keep = dag_mhs(store, kept_dir) | {direct_dir.multihash}
    removed = gc.collect(store, pins.recursive_roots(), pins.direct_roots())
    assert set(removed) == garbage_mhs
    assert all_mhs(store) == expected_keep
    assert gc.collect(store, pins.recursive_roots(), pins.direct_roots()) == []


def test_gc_tolerates_missing_block_under_root(store, caplog):
    f = import_bytes(store, rand(300, 7), SMALL)
    d = make_dir(store, [("f", f.cid, f.tsize)])
    store.delete(f.cid)  # root's child is gone; the leaves under it become unreachable
    backdate(store)
    removed = gc.collect(store, [d], [])
    assert store.has(d)
    assert len(removed) == 7  # the 2 inner nodes and 5 leaves of the lost file
    assert "cannot follow links" in caplog.text


def test_gc_mtime_guard_keeps_new_blocks(store):
    old = put_raw(store, b"old garbage")
    backdate(store)
    new = put_raw(store, b"written while GC runs")
    removed = gc.collect(store, [], [])
    assert removed == [old.multihash]
    assert store.has(new)


async def test_gc_keeps_mfs_roots_and_pins(store, tmp_path):
    reader = UnixFSReader(store)
    mfs = MFS(store, reader, SMALL, tmp_path / "mfs-root")
    await mfs.write("/a/flushed", b"F" * 200, create=True, parents=True)
    await mfs.write("/a/unflushed", b"U" * 200, create=True, flush=False)
    pins = Pinner(tmp_path, store)
    pinned = import_bytes(store, b"P" * 200, SMALL)
    pins.add(pinned.cid)
    garbage = put_raw(store, b"nobody wants me")
    backdate(store)
    assert mfs.root() != mfs.flushed_root()
    keep = set().union(*(dag_mhs(store, r) for r in [pinned.cid, *mfs.pending_roots()]))
    before = all_mhs(store)
    removed = gc.collect(store, [*pins.recursive_roots(), *mfs.pending_roots()],
                         pins.direct_roots())
    assert garbage.multihash in removed
    assert set(removed) == before - keep  # the garbage block and the superseded empty root
    assert all_mhs(store) == keep
    assert await mfs.read("/a/unflushed") == b"U" * 200
    assert await mfs.read("/a/flushed") == b"F" * 200
    for root in mfs.pending_roots():
        list(walk_dag(store, root))  # every block of both roots is still there


def test_gc_lock_excludes_writers():
    lock = gc.GCLock()
    events = []
    with lock.writing():
        with lock.writing():  # nesting is allowed
            t = threading.Thread(target=lambda: (lock.collecting().__enter__(),
                                                 events.append("gc")))
            t.start()
            time.sleep(0.05)
            assert events == []  # GC waits for writers
    t.join(2)
    assert events == ["gc"]
