"""HAMT-sharded UnixFS directories (fanout 256, murmur3-x64-64), as boxo's ``hamt.Shard``.

Building is a pure function of the set of entries: entries whose hashes share a prefix of
``depth`` bytes and collide on the next byte go into a sub-shard; a slot with one entry holds
its link directly. That is the canonical shape boxo's insert/remove converge to, so the root
CID matches kubo's whatever the insertion order.

Link names are the slot index as two upper-case hex digits, followed by the entry name for
value links (sub-shard links carry the prefix only). The node's UnixFS Data holds the bitfield
of occupied slots as a minimal big-endian integer (go-bitfield ``Bytes()`` drops leading zero
bytes), ``hashType`` 0x22 and ``fanout``.

Reading never loads more than the shards on the way to a name (lookup) or one shard at a
time (listing). Malformed shards raise InvalidInput.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import mmh3

from ...errors import InvalidInput
from . import dagpb, unixfs
from .cid import CID

DEFAULT_FANOUT = 256
HASH_BYTES = 8  # boxo uses the first 64 bits of murmur3 x64-128


def hash_name(name: str) -> bytes:
    """murmur3 x64-128 (seed 0) of the name's bytes, first 64 bits, big-endian."""
    h1, _ = mmh3.hash64(dagpb.name_bytes(name), seed=0, x64arch=True, signed=False)
    return h1.to_bytes(8, "big")


def _check_fanout(fanout: int) -> int:
    if fanout < 2 or fanout > 256 or fanout & (fanout - 1):
        raise InvalidInput(f"HAMT fanout must be a power of two up to 256, not {fanout}")
    return fanout.bit_length() - 1


def _slot(digest: bytes, depth: int, bits: int) -> int:
    """Index at ``depth`` when ``bits`` hash bits are consumed per level (MSB first)."""
    start = depth * bits
    if start + bits > len(digest) * 8:
        raise InvalidInput("HAMT depth exceeds the hash length")
    value = int.from_bytes(digest, "big")
    shift = len(digest) * 8 - start - bits
    return (value >> shift) & ((1 << bits) - 1)


def _prefix_len(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


def _prefix(index: int, width: int) -> str:
    return f"{index:0{width}X}"


Entry = tuple[str, CID, int]  # name, cid, cumulative size
PutNode = Callable[[bytes], CID]


def build(entries: list[Entry], put_node: PutNode,
          fanout: int = DEFAULT_FANOUT) -> tuple[CID, int]:
    """Store the shard tree of ``entries``; return (root CID, cumulative size)."""
    bits = _check_fanout(fanout)
    hashed = [(hash_name(name), name, cid, tsize) for name, cid, tsize in entries]
    return _build_level(hashed, 0, bits, fanout, put_node)


def _build_level(hashed, depth: int, bits: int, fanout: int, put_node: PutNode) -> tuple[CID, int]:
    slots: dict[int, list] = {}
    for item in hashed:
        slots.setdefault(_slot(item[0], depth, bits), []).append(item)
    width = _prefix_len(fanout)
    links: list[dagpb.PBLink] = []
    bitfield = 0
    for index in sorted(slots):
        group = slots[index]
        bitfield |= 1 << index
        prefix = _prefix(index, width)
        if len(group) == 1:
            _, name, cid, tsize = group[0]
            links.append(dagpb.PBLink(cid, prefix + name, tsize))
        else:
            sub_cid, sub_size = _build_level(group, depth + 1, bits, fanout, put_node)
            links.append(dagpb.PBLink(sub_cid, prefix, sub_size))
    field = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big") if bitfield else None
    payload = unixfs.UnixFSData(unixfs.HAMT_SHARD, data=field,
                                hash_type=unixfs.MURMUR3_X64_64, fanout=fanout)
    block = dagpb.PBNode(links, payload.encode()).encode()
    cid = put_node(block)
    return cid, len(block) + sum(link.tsize or 0 for link in links)


def _shard_params(fsdata: unixfs.UnixFSData) -> tuple[int, int]:
    if fsdata.type != unixfs.HAMT_SHARD:
        raise InvalidInput("not a HAMT shard")
    if fsdata.hash_type != unixfs.MURMUR3_X64_64:
        raise InvalidInput(f"unsupported HAMT hash function {fsdata.hash_type}")
    fanout = fsdata.fanout or 0
    _check_fanout(fanout)
    return fanout, _prefix_len(fanout)


GetNode = Callable[[CID], tuple[dagpb.PBNode, unixfs.UnixFSData]]


def iter_entries(node: dagpb.PBNode, fsdata: unixfs.UnixFSData,
                 get_node: GetNode) -> Iterator[dagpb.PBLink]:
    """Yield the directory's entries (links with the hex prefix removed), shard order."""
    _, width = _shard_params(fsdata)
    for link in node.links:
        name = link.name or ""
        if len(name) < width:
            raise InvalidInput(f"HAMT link name {name!r} is too short")
        if len(name) == width:
            sub_node, sub_data = get_node(link.cid)
            yield from iter_entries(sub_node, sub_data, get_node)
        else:
            yield dagpb.PBLink(link.cid, name[width:], link.tsize)


def find(node: dagpb.PBNode, fsdata: unixfs.UnixFSData, name: str,
         get_node: GetNode) -> dagpb.PBLink | None:
    """The entry called ``name``, descending only the shards its hash points at."""
    digest = hash_name(name)
    depth = 0
    while True:
        fanout, width = _shard_params(fsdata)
        bits = fanout.bit_length() - 1
        prefix = _prefix(_slot(digest, depth, bits), width)
        for link in node.links:
            link_name = link.name or ""
            if not link_name.startswith(prefix):
                continue
            if len(link_name) == width:
                node, fsdata = get_node(link.cid)
                depth += 1
                break
            if link_name[width:] == name:
                return dagpb.PBLink(link.cid, name, link.tsize)
        else:
            return None
