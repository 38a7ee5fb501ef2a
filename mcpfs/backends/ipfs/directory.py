"""UnixFS directory nodes: a plain sorted directory, or a HAMT past kubo's threshold.

``build_directory`` is the one place that decides between the two (boxo's
``DynamicDirectory``): with ``links`` estimation the size is the sum over entries of the
name length plus the CID's byte length, and the directory shards once that sum reaches the
threshold; with ``block`` estimation (unixfs-v1-2025) it is the encoded size of the plain
directory node, sharding once that exceeds the threshold. The decision depends only on the
final set of entries, so adding in any order gives kubo's CID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ...errors import InvalidInput
from . import dagpb, hamt, unixfs
from .cid import CID
from .importer import Imported, ImportParams

Entry = tuple[str, CID, int]  # name, cid, cumulative size


def check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidInput(f"invalid entry name {name!r}")
    return name


def links_estimate(entries: Iterable[Entry]) -> int:
    """boxo's legacy ``estimatedLinkSize``: len(name) + len(CID bytes) per entry."""
    return sum(len(dagpb.name_bytes(name)) + len(bytes(cid)) for name, cid, _ in entries)


def _basic_block(entries: list[Entry], mode: int | None, mtime) -> tuple[bytes, int]:
    links = [dagpb.PBLink(cid, name, tsize) for name, cid, tsize in entries]
    payload = unixfs.UnixFSData(unixfs.DIRECTORY, mode=mode, mtime=mtime)
    block = dagpb.PBNode(links, payload.encode()).encode()
    return block, len(block) + sum(tsize for _, _, tsize in entries)


def should_shard(entries: list[Entry], params: ImportParams, basic_block_size: int) -> bool:
    if params.hamt_threshold <= 0:
        return False
    if params.hamt_estimation == "block":
        return basic_block_size > params.hamt_threshold
    return links_estimate(entries) >= params.hamt_threshold


def build_directory(entries: Iterable[Entry], params: ImportParams,
                    put_node: Callable[[bytes], CID], mode: int | None = None,
                    mtime: tuple[int, int | None] | None = None) -> Imported:
    """Store the directory node(s) for ``entries`` and return its root.

    Names must be unique; duplicates raise InvalidInput.
    """
    entries = sorted(entries, key=lambda e: dagpb.name_bytes(e[0]))
    for prev, cur in zip(entries, entries[1:]):
        if prev[0] == cur[0]:
            raise InvalidInput(f"duplicate directory entry {cur[0]!r}")
    block, tsize = _basic_block(entries, mode, mtime)
    if should_shard(entries, params, len(block)):
        cid, tsize = hamt.build(entries, put_node, params.hamt_fanout)
        return Imported(cid, 0, tsize, sharded=True)
    return Imported(put_node(block), 0, tsize)
