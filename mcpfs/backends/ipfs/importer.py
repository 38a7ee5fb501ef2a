"""Import a byte stream as a UnixFS file DAG, byte-identical to kubo's ``ipfs add``.

``import_stream(store, stream, params)`` chunks the stream (fixed size), builds the
balanced or trickle layout exactly as boxo's ``importer/balanced`` and
``importer/trickle`` do, writes every block to ``store`` as it is made, and returns the root
:class:`Imported`. Memory stays flat: at most one chunk plus ``max_links`` links per level of
the tree are held, whatever the file size.

Errors: an I/O error of the stream propagates unchanged; a full disk raises
:class:`NoSpace` from the blockstore. Blocks already written stay in the store (unpinned,
so the next GC removes them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from ...errors import InvalidInput
from . import dagpb, protowire as pw, unixfs
from .blockstore import Blockstore, MemoryBlockstore
from .cid import CID, DAG_PB, RAW, SHA2_256, encode_varint

DEFAULT_CHUNK_SIZE = 256 * 1024  # kubo's size-262144
DEFAULT_MAX_LINKS = 174  # boxo helpers.DefaultLinksPerBlock
MAX_CHUNK_SIZE = 1024 * 1024  # boxo chunk.ChunkSizeLimit
TRICKLE_DEPTH_REPEAT = 4  # boxo trickle.depthRepeat
DEFAULT_HAMT_THRESHOLD = 256 * 1024  # boxo io.HAMTShardingSize
WRITE_THREADS = 2  # block writes overlapping the chunking/hashing of the next chunks
MAX_PENDING_WRITES = 8  # blocks handed to the writers and not yet written (memory bound)


@dataclass(frozen=True, slots=True)
class ImportParams:
    """The knobs of ``ipfs add``; ``raw_leaves=None`` means "implied by the CID version"."""

    cid_version: int = 0
    raw_leaves: bool | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    layout: str = "balanced"  # or "trickle"
    max_links: int = DEFAULT_MAX_LINKS
    hamt_threshold: int = DEFAULT_HAMT_THRESHOLD
    hamt_estimation: str = "links"  # "links" (kubo <= 0.38) or "block" (unixfs-v1-2025)
    hamt_fanout: int = 256
    dir_max_links: int = 0  # 0: no limit besides sharding
    hash_code: int = SHA2_256

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise InvalidInput(f"unsupported CID version {self.cid_version}")
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidInput(f"chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes")
        if self.layout not in ("balanced", "trickle"):
            raise InvalidInput(f"unknown layout {self.layout!r}")
        if self.max_links < 2:
            raise InvalidInput("max links must be at least 2")
        if self.hamt_estimation not in ("links", "block"):
            raise InvalidInput(f"unknown HAMT size estimation {self.hamt_estimation!r}")
        if self.cid_version == 0 and self.hash_code != SHA2_256:
            raise InvalidInput("CIDv0 only supports sha2-256")

    @property
    def uses_raw_leaves(self) -> bool:
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves

    def node_cid(self, block: bytes) -> CID:
        return CID.of(block, DAG_PB, self.cid_version, self.hash_code)

    def raw_cid(self, block: bytes | memoryview) -> CID:
        return CID.of(block, RAW, 1, self.hash_code)


# `ipfs add --profile` presets (kubo config profiles of the same names).
PROFILES: dict[str, ImportParams] = {
    "legacy-cid-v0": ImportParams(),
    "unixfs-v1-2025": ImportParams(cid_version=1, raw_leaves=True, chunk_size=1024 * 1024,
                                   max_links=1024, hamt_estimation="block"),
}


def parse_chunker(spec: str) -> int:
    """``size-N`` -> N; anything else is InvalidInput (rabin/buzhash are not supported)."""
    if spec == "default":
        return DEFAULT_CHUNK_SIZE
    if spec.startswith("size-"):
        try:
            size = int(spec[5:])
        except ValueError:
            raise InvalidInput(f"invalid chunker {spec!r}") from None
        if not 0 < size <= MAX_CHUNK_SIZE:
            raise InvalidInput(f"chunker size must be between 1 and {MAX_CHUNK_SIZE}")
        return size
    raise InvalidInput(f"unsupported chunker {spec!r} (only size-N)")


def params_for(profile: str | None = None, **overrides) -> ImportParams:
    """Start from a profile (or kubo's defaults) and apply the flags that were given."""
    base = ImportParams()
    if profile:
        try:
            base = PROFILES[profile]
        except KeyError:
            raise InvalidInput(f"unknown profile {profile!r}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    if "cid_version" in given and "raw_leaves" not in given and given["cid_version"] == 0:
        given["raw_leaves"] = None
    return replace(base, **given)


@dataclass(frozen=True, slots=True)
class Imported:
    """One imported DAG root: ``size`` is the content size, ``tsize`` the cumulative size;
    ``sharded`` tells a HAMT directory (its listing order is hash order, not name order)."""

    cid: CID
    size: int
    tsize: int
    sharded: bool = False


def iter_chunks(stream: BinaryIO, size: int) -> Iterator[bytes]:
    """Fixed-size chunks; only the last may be shorter (short reads from pipes are filled)."""
    read = stream.read
    while True:
        chunk = read(size)
        if not chunk:
            return
        while len(chunk) < size:
            more = read(size - len(chunk))
            if not more:
                break
            chunk += more
        yield chunk
        if len(chunk) < size:
            return


@dataclass(slots=True)
class _FSNode:
    """A file node being filled: child links plus the blocksizes of their content."""

    type: int = unixfs.FILE
    links: list[dagpb.PBLink] = field(default_factory=list)
    blocksizes: list[int] = field(default_factory=list)

    def add(self, child: Imported) -> None:
        self.links.append(dagpb.PBLink(child.cid, "", child.tsize))
        self.blocksizes.append(child.size)


class DagBuilder:
    """Turns chunks into leaves and file nodes, writing each block to the store."""

    def __init__(self, store: Blockstore, params: ImportParams, chunks: Iterator[bytes],
                 on_block: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.params = params
        self.raw_leaves = params.uses_raw_leaves
        self._chunks = chunks
        self._next: bytes | None = next(chunks, None)
        self._on_block = on_block

    def done(self) -> bool:
        return self._next is None

    def _take(self) -> bytes:
        chunk = self._next
        assert chunk is not None
        self._next = next(self._chunks, None)
        return chunk

    def _put(self, cid: CID, block: bytes) -> None:
        self.store.put(cid, block)

    def leaf(self, data: bytes, fs_type: int) -> Imported:
        if self.raw_leaves:
            cid = self.params.raw_cid(data)
            self._put(cid, data)
            if self._on_block:
                self._on_block(len(data))
            return Imported(cid, len(data), len(data))
        block = leaf_block(data, fs_type)
        cid = self.params.node_cid(block)
        self._put(cid, block)
        if self._on_block:
            self._on_block(len(data))
        return Imported(cid, len(data), len(block))

    def next_leaf(self, fs_type: int) -> Imported:
        return self.leaf(self._take(), fs_type)

    def commit(self, node: _FSNode) -> Imported:
        size = sum(node.blocksizes)
        payload = unixfs.UnixFSData(node.type, filesize=size, blocksizes=node.blocksizes)
        block = dagpb.PBNode(node.links, payload.encode()).encode(sort_links=False)
        cid = self.params.node_cid(block)
        self._put(cid, block)
        return Imported(cid, size, len(block) + sum(link.tsize or 0 for link in node.links))


def leaf_block(data: bytes, fs_type: int) -> bytes:
    """``PBNode(data=UnixFSData(fs_type, data, filesize=len(data)).encode()).encode()``
    with one copy of ``data`` instead of four."""
    n = len(data)
    head = pw.varint_field(1, fs_type) + (pw.key(2, pw.LEN) + encode_varint(n) if n else b"")
    tail = pw.varint_field(3, n)
    outer = pw.key(1, pw.LEN) + encode_varint(len(head) + n + len(tail))
    return b"".join((outer + head, data, tail))


_WRITE_POOL = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="import-write")


class _WriteBehind:
    """``put`` hands the block to the shared writer threads and returns; ``drain`` waits for
    this import's writes and raises the first write error. At most MAX_PENDING_WRITES blocks
    of one import are held in memory.

    Concurrency: ``_pending`` and ``_error`` are touched by the importing thread and the
    writers' done-callbacks, guarded by ``_lock``.
    """

    def __init__(self, store: Blockstore) -> None:
        self.store = store
        self._slots = threading.BoundedSemaphore(MAX_PENDING_WRITES)
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        self._error: BaseException | None = None

    def put(self, cid: CID, block: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        fut = _WRITE_POOL.submit(self.store.put, cid, block)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._pending.discard(fut)
            if fut.exception() is not None and self._error is None:
                self._error = fut.exception()
        self._slots.release()

    def drain(self) -> None:
        with self._lock:
            pending = list(self._pending)
        wait(pending)
        if self._error is not None:
            raise self._error


def _balanced(db: DagBuilder) -> Imported:
    """boxo importer/balanced.Layout."""
    if db.done():
        return db.leaf(b"", unixfs.FILE)
    root = db.next_leaf(unixfs.FILE)
    depth = 1
    while not db.done():
        node = _FSNode()
        node.add(root)
        root = _fill_balanced(db, node, depth)
        depth += 1
    return root


def _fill_balanced(db: DagBuilder, node: _FSNode | None, depth: int) -> Imported:
    node = node or _FSNode()
    max_links = db.params.max_links
    while len(node.links) < max_links and not db.done():
        if depth == 1:
            node.add(db.next_leaf(unixfs.FILE))
        else:
            node.add(_fill_balanced(db, None, depth - 1))
    return db.commit(node)


def _trickle(db: DagBuilder) -> Imported:
    """boxo importer/trickle.Layout."""
    return _fill_trickle(db, _FSNode(), -1)


def _fill_trickle(db: DagBuilder, node: _FSNode, max_depth: int) -> Imported:
    max_links = db.params.max_links
    while len(node.links) < max_links and not db.done():
        node.add(db.next_leaf(unixfs.RAW))
    depth = 1
    while (max_depth == -1 or depth < max_depth) and not db.done():
        for _ in range(TRICKLE_DEPTH_REPEAT):
            if db.done():
                break
            node.add(_fill_trickle(db, _FSNode(), depth))
        depth += 1
    return db.commit(node)


def import_chunks(store: Blockstore, chunks: Iterator[bytes], params: ImportParams,
                  on_block: Callable[[int], None] | None = None) -> Imported:
    """Build the file DAG of ``chunks`` (already cut to ``params.chunk_size``)."""
    writer = None if isinstance(store, MemoryBlockstore) else _WriteBehind(store)
    db = DagBuilder(writer or store, params, chunks, on_block)
    try:
        return _trickle(db) if params.layout == "trickle" else _balanced(db)
    finally:
        if writer is not None:
            writer.drain()  # the root is returned only once every block is in the store


def import_stream(store: Blockstore, stream: BinaryIO, params: ImportParams | None = None,
                  on_block: Callable[[int], None] | None = None) -> Imported:
    """Import everything ``stream`` yields; ``on_block(n)`` is told of each n content bytes."""
    params = params or ImportParams()
    return import_chunks(store, iter_chunks(stream, params.chunk_size), params, on_block)


def import_bytes(store: Blockstore, data: bytes, params: ImportParams | None = None) -> Imported:
    params = params or ImportParams()
    size = params.chunk_size
    view = memoryview(data)
    return import_chunks(store, (bytes(view[i:i + size]) for i in range(0, len(data), size)),
                         params)
