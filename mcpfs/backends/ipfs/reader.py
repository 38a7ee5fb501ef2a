"""Read UnixFS DAGs: stat, random-access file reads, directory listings, path resolution.

``UnixFSReader(store)`` decodes blocks on demand and keeps recently decoded dag-pb nodes in
a small LRU (decoding is the costly part of a read, the bytes are cached by the blockstore).
A file read at ``offset`` descends by the node's ``blocksizes``, so it touches one node per
level: O(depth) blocks. Missing blocks raise BlockNotFound, corrupt ones CorruptBlock, and a
block that is not what its place in the DAG says raises InvalidInput; nothing returns wrong
bytes.

Concurrency: safe from several threads; the node LRU is guarded by ``_lock``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cachetools import LRUCache

from ...errors import InvalidInput, IsADirectory, NotADirectory, NotFound
from . import dagpb, hamt, protowire as pw, unixfs
from .blockstore import Blockstore
from .cid import CID, DAG_PB, RAW

NODE_CACHE_BYTES = 32 << 20  # decoded dag-pb nodes kept, by size (leaves hold their data)
LINK_BYTES = 320  # memory of one decoded link, for the node cache's budget
READ_AHEAD = 8  # children iter_file fetches ahead (file read + sha256 run without the GIL)
_FETCH = ThreadPoolExecutor(4, thread_name_prefix="unixfs-readahead")


def _node_size(entry) -> int:
    pb, fsdata = entry
    # a link costs ~320 B of Python objects (PBLink, its name, its CID, the CID's bytes)
    return 200 + len(pb.data or b"") + (len(fsdata.data or b"") if fsdata else 0) + \
        LINK_BYTES * len(pb.links)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What ``files stat`` and ``getattr`` need of a node."""

    cid: CID
    type: str  # "file", "directory", "symlink", "raw"
    size: int  # content bytes (files), 0 for directories
    cumulative_size: int  # bytes of every block in the DAG, as Tsize would say
    blocks: int  # number of links of the root node
    block_size: int  # bytes of the root block
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None
    target: str | None = None  # symlinks


class UnixFSReader:
    def __init__(self, store: Blockstore) -> None:
        self.store = store
        self._nodes: LRUCache[CID, tuple[dagpb.PBNode, unixfs.UnixFSData | None]] = \
            LRUCache(NODE_CACHE_BYTES, getsizeof=_node_size)
        self._lock = threading.Lock()

    def clear_cache(self) -> None:
        """Drop every decoded node (after GC removed blocks, so none is served from here)."""
        with self._lock:
            self._nodes.clear()

    # ---------------------------------------------------------------- nodes
    def node(self, cid: CID, cache: bool = True
             ) -> tuple[dagpb.PBNode, unixfs.UnixFSData | None]:
        """Decode a dag-pb block (UnixFS data decoded when present and valid); kept in the
        node cache unless ``cache`` is False (a cached node is still served)."""
        if cid.codec != DAG_PB:
            raise InvalidInput(f"{cid} is not a dag-pb node")
        with self._lock:
            hit = self._nodes.get(cid)
        if hit is not None:
            return hit
        try:
            pb = dagpb.decode(self.store.get(cid))
            fsdata = unixfs.decode(pb.data) if pb.data is not None else None
        except InvalidInput as exc:
            raise InvalidInput(f"{cid}: {exc}") from None
        if cache:
            with self._lock:
                self._nodes[cid] = (pb, fsdata)
        return pb, fsdata

    def unixfs_node(self, cid: CID, cache: bool = True
                    ) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
        pb, fsdata = self.node(cid, cache)
        if fsdata is None:
            raise InvalidInput(f"{cid} is not a UnixFS node")
        return pb, fsdata

    # ---------------------------------------------------------------- stat
    def stat(self, cid: CID) -> NodeInfo:
        if cid.codec == RAW:
            size = len(self.store.get(cid))
            return NodeInfo(cid, "file", size, size, 0, size)
        if cid.codec != DAG_PB:
            block = self.store.get(cid)
            return NodeInfo(cid, "raw", len(block), len(block), 0, len(block))
        pb, fsdata = self.unixfs_node(cid)
        block_size = len(pb.encode(sort_links=False))
        cumulative = block_size + sum(link.tsize or 0 for link in pb.links)
        kind = {unixfs.DIRECTORY: "directory", unixfs.HAMT_SHARD: "directory",
                unixfs.SYMLINK: "symlink"}.get(fsdata.type, "file")
        size = 0 if kind == "directory" else fsdata.file_size()
        target = None
        if kind == "symlink":
            target = (fsdata.data or b"").decode("utf-8", "surrogateescape")
            size = len(fsdata.data or b"")
        return NodeInfo(cid, kind, size, cumulative, len(pb.links), block_size,
                        fsdata.mode, fsdata.mtime, target)

    # ---------------------------------------------------------------- files
    def read(self, cid: CID, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the file at ``offset`` (short only at end of file)."""
        if offset < 0 or size < 0:
            raise InvalidInput("negative offset or size")
        out: list[bytes] = []
        self._read_into(cid, offset, size, out)
        return b"".join(out)

    def _read_into(self, cid: CID, offset: int, size: int, out: list[bytes]) -> int:
        """Append up to ``size`` bytes from ``offset`` of the subtree; return bytes added
        (leaves' bytes as views into their blocks: the caller's join is the one copy)."""
        if size == 0:
            return 0
        if cid.codec == RAW:
            chunk = self.store.get(cid)[offset:offset + size]
            out.append(chunk)
            return len(chunk)
        if cid.codec == DAG_PB:
            with self._lock:
                cached = self._nodes.get(cid)
            if cached is None:  # a leaf is not decoded (nor cached): its bytes are sliced
                block = self.store.get(cid)
                content = leaf_content(block)
                if content is not None:
                    chunk = content[offset:offset + size]
                    out.append(chunk)
                    return len(chunk)
        pb, fsdata = self.unixfs_node(cid)
        if fsdata.type in (unixfs.DIRECTORY, unixfs.HAMT_SHARD):
            raise IsADirectory(f"{cid} is a directory")
        if fsdata.type not in (unixfs.FILE, unixfs.RAW):
            raise InvalidInput(f"{cid} is not a file")
        got = 0
        data = fsdata.data or b""
        if offset < len(data):
            chunk = data[offset:offset + size]
            out.append(chunk)
            got = len(chunk)
        pos = len(data)
        if len(fsdata.blocksizes) != len(pb.links):
            if pb.links:
                raise InvalidInput(f"{cid}: blocksizes do not match links")
        for link, child_size in zip(pb.links, fsdata.blocksizes):
            if got >= size:
                break
            end = pos + child_size
            if offset + got < end:
                want = min(size - got, end - (offset + got))
                n = self._read_into(link.cid, offset + got - pos, want, out)
                if n != want:
                    raise InvalidInput(f"{link.cid}: child shorter than its blocksize")
                got += n
            pos = end
        return got

    def iter_file(self, cid: CID) -> Iterator[bytes]:
        """Every content chunk of the file in order (streams; flat memory)."""
        if cid.codec == RAW:
            yield self.store.get(cid)
            return
        pb, fsdata = self.unixfs_node(cid)
        if fsdata.is_dir:
            raise IsADirectory(f"{cid} is a directory")
        if fsdata.data:
            yield fsdata.data
        window: deque = deque()
        links = iter(pb.links)

        def fill() -> None:
            while len(window) < READ_AHEAD:
                link = next(links, None)
                if link is None:
                    return
                window.append((link.cid, _FETCH.submit(self.store.get, link.cid)))

        fill()
        while window:
            child, fut = window.popleft()
            block = fut.result()
            fill()
            if child.codec == RAW:
                yield block
                continue
            if child.codec != DAG_PB:
                raise InvalidInput(f"{child} is not a dag-pb node")
            try:
                cpb = dagpb.decode(block)
                cfs = unixfs.decode(cpb.data) if cpb.data is not None else None
            except InvalidInput as exc:
                raise InvalidInput(f"{child}: {exc}") from None
            if cfs is None or cfs.is_dir:
                raise InvalidInput(f"{child} is not a UnixFS file node")
            if cpb.links:
                yield from self.iter_file(child)  # inner node: small, decoded again, cached
            elif cfs.data:
                yield cfs.data  # leaf: streamed, never cached

    # ---------------------------------------------------------------- directories
    def _get_shard(self, cid: CID) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
        return self.unixfs_node(cid)

    def _walk_shard(self, cid: CID) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
        # a whole listing visits every shard once and its caller keeps the result
        # (mounts' Listings): decoded shards are not kept, only lookups' are
        return self.unixfs_node(cid, cache=False)

    def _dir_node(self, cid: CID) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
        if cid.codec != DAG_PB:
            raise NotADirectory(f"{cid} is not a directory")
        pb, fsdata = self.unixfs_node(cid)
        if not fsdata.is_dir:
            raise NotADirectory(f"{cid} is not a directory")
        return pb, fsdata

    def list_dir(self, cid: CID) -> Iterator[dagpb.PBLink]:
        """Entries of a directory (plain: sorted by name; HAMT: shard order)."""
        pb, fsdata = self._dir_node(cid)
        if fsdata.type == unixfs.HAMT_SHARD:
            yield from hamt.iter_entries(pb, fsdata, self._walk_shard)
        else:
            yield from pb.links

    def find(self, cid: CID, name: str) -> dagpb.PBLink | None:
        pb, fsdata = self._dir_node(cid)
        if fsdata.type == unixfs.HAMT_SHARD:
            return hamt.find(pb, fsdata, name, self._get_shard)
        for link in pb.links:
            if link.name == name:
                return link
        return None

    def resolve(self, root: CID, segments: list[str]) -> CID:
        """Follow named links from ``root``; NotFound names the missing segment."""
        cid = root
        for i, name in enumerate(segments):
            link = self.find(cid, name)
            if link is None:
                where = "/".join([str(root), *segments[: i + 1]])
                raise NotFound(f"no link named {name!r} under {where}")
            cid = link.cid
        return cid


def leaf_content(block: bytes) -> memoryview | None:
    """The content of a dag-pb UnixFS leaf (file or raw data, no links, no blocksizes, no
    metadata) as a view into ``block``, without the copies a full decode makes; None for
    any other node (decoded the full way, which also validates it)."""
    view = memoryview(block)
    data = None
    try:
        for num, wire, value in pw.iter_fields(view, copy=False):
            if num != 1 or wire != pw.LEN or data is not None:
                return None  # a link, or anything unusual
            data = value
        if data is None:
            return None
        kind = content = None
        for num, wire, value in pw.iter_fields(data, copy=False):
            if num == 1 and wire == pw.VARINT and kind is None:
                kind = value
            elif num == 2 and wire == pw.LEN and content is None:
                content = value
            elif num != 3 or wire != pw.VARINT:  # blocksizes, mode, mtime...
                return None
    except InvalidInput:
        return None
    if kind not in (unixfs.FILE, unixfs.RAW):
        return None
    return content if content is not None else view[0:0]


def split_ipfs_path(path: str) -> tuple[CID, list[str]]:
    """``/ipfs/<cid>/a/b``, ``<cid>/a/b`` -> (CID, ["a", "b"])."""
    text = path.strip()
    if text.startswith("/ipfs/"):
        text = text[len("/ipfs/"):]
    elif text.startswith("ipfs://"):
        text = text[len("ipfs://"):]
    parts = [p for p in text.split("/") if p]
    if not parts:
        raise InvalidInput(f"invalid path {path!r}")
    return CID.decode(parts[0]), parts[1:]
