"""Decoded MFS directories, cached by CID, updated incrementally and re-encoded cheaply.

A :class:`DirState` is the decoded form of one directory node: its entries (name -> CID,
cumulative size, and the entry's encoded dag-pb link), its UnixFS mode/mtime, the running
sums that decide plain vs HAMT (boxo's ``links`` estimate and the plain block's size), and,
once needed, the sorted key list (plain) or an in-memory shard tree (HAMT). States are
immutable once built: :meth:`DirState.apply` returns a new state (copy-on-write: one C-level
copy of the entries dict, O(entries) but no decoding, hashing or re-encoding of unchanged
entries), so readers holding an older root keep a consistent view without locks.

Encoding gives byte-identical blocks to :func:`directory.build_directory` for the same
entries: a plain directory is the concatenation of the cached link fields in name-byte order
plus the UnixFS data field; a HAMT is kept as a tree of :class:`_Shard` nodes in boxo's
canonical shape (a slot holding one entry links it directly, a slot holding several holds a
sub-shard), updated by path copying and re-encoded only along the changed path. The
plain/HAMT decision uses the same rule as ``directory.should_shard`` on the final entries,
so the switch happens at the same entry both ways.

:class:`DirCache` maps directory CID -> DirState (cachetools LRU bounded by the total number
of entries). Concurrency: the cache is guarded by ``_lock``; states are never mutated after
they are published, so they are shared freely between threads.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final

from cachetools import LRUCache

from . import dagpb, hamt, unixfs
from . import protowire as pw
from .cid import CID
from .importer import Imported, ImportParams

DIR_CACHE_ENTRIES: Final = 400_000  # directory entries kept decoded (all cached states)
SHARD_PATH_BYTES: Final = 64 << 10  # bytes counted for re-encoding one HAMT's changed path

PutNode = Callable[[bytes], CID]
Item = tuple[CID, int, bytes]  # cid, cumulative size, encoded dag-pb link field


def link_field(name: str, cid: CID, tsize: int | None) -> bytes:
    """The dag-pb ``Links`` field (field 2) of one link, as PBNode.encode writes it."""
    return pw.bytes_field(2, dagpb.PBLink(cid, name, tsize).encode())


def _est(name: str, cid: CID) -> int:
    return len(dagpb.name_bytes(name)) + len(bytes(cid))


class _Shard:
    """One HAMT node: slot -> leaf ``(hash, name, cid, tsize)`` or a sub-shard. ``count`` is
    the number of entries below; ``enc`` the cached (cid, tsize) once encoded; ``parts``
    the cached link field per slot."""

    __slots__ = ("slots", "count", "enc", "parts")

    def __init__(self, slots: dict | None = None, count: int = 0) -> None:
        self.slots: dict[int, tuple | _Shard] = slots if slots is not None else {}
        self.count = count
        self.enc: tuple[CID, int] | None = None
        self.parts: dict[int, tuple[bytes, int]] = {}

    def copy(self) -> _Shard:
        new = _Shard(dict(self.slots), self.count)
        new.parts = dict(self.parts)
        return new


class _Hamt:
    """Canonical HAMT operations for one fanout (see hamt.build)."""

    def __init__(self, fanout: int) -> None:
        self.fanout = fanout
        self.bits = fanout.bit_length() - 1
        self.width = len(f"{fanout - 1:X}")

    def slot(self, digest: bytes, depth: int) -> int:
        return hamt._slot(digest, depth, self.bits)

    def build(self, leaves: list[tuple], depth: int = 0) -> _Shard:
        groups: dict[int, list[tuple]] = {}
        for leaf in leaves:
            groups.setdefault(self.slot(leaf[0], depth), []).append(leaf)
        node = _Shard(count=len(leaves))
        for index, group in groups.items():
            node.slots[index] = group[0] if len(group) == 1 else self.build(group, depth + 1)
        return node

    def insert(self, node: _Shard, leaf: tuple, depth: int = 0) -> _Shard:
        new = node.copy()
        index = self.slot(leaf[0], depth)
        cur = node.slots.get(index)
        new.parts.pop(index, None)
        if cur is None:
            new.slots[index] = leaf
            new.count += 1
        elif isinstance(cur, _Shard):
            child = self.insert(cur, leaf, depth + 1)
            new.slots[index] = child
            new.count += child.count - cur.count
        elif cur[1] == leaf[1]:
            new.slots[index] = leaf
        else:
            new.slots[index] = self.build([cur, leaf], depth + 1)
            new.count += 1
        return new

    def delete(self, node: _Shard, digest: bytes, name: str, depth: int = 0) -> _Shard:
        index = self.slot(digest, depth)
        cur = node.slots.get(index)
        if cur is None:
            return node
        new = node.copy()
        new.parts.pop(index, None)
        if isinstance(cur, _Shard):
            child = self.delete(cur, digest, name, depth + 1)
            if child is cur:
                return node
            # a sub-shard left with one entry collapses into a direct link (canonical form)
            new.slots[index] = next(iter(child.slots.values())) if child.count == 1 else child
            new.count -= 1
        elif cur[1] == name:
            del new.slots[index]
            new.count -= 1
        else:
            return node
        return new

    def encode(self, node: _Shard, put_node: PutNode) -> tuple[CID, int]:
        """Store every not yet encoded node below ``node``; (cid, cumulative size)."""
        if node.enc is not None:
            return node.enc
        fields = []
        total = 0
        bitfield = 0
        for index in sorted(node.slots):
            bitfield |= 1 << index
            part = node.parts.get(index)
            if part is None:
                child = node.slots[index]
                prefix = f"{index:0{self.width}X}"
                if isinstance(child, _Shard):
                    cid, tsize = self.encode(child, put_node)
                    part = (link_field(prefix, cid, tsize), tsize)
                else:
                    part = (link_field(prefix + child[1], child[2], child[3]), child[3])
                node.parts[index] = part
            fields.append(part[0])
            total += part[1]
        field = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big") if bitfield else None
        payload = unixfs.UnixFSData(unixfs.HAMT_SHARD, data=field,
                                    hash_type=unixfs.MURMUR3_X64_64, fanout=self.fanout)
        fields.append(pw.bytes_field(1, payload.encode()))
        block = b"".join(fields)
        node.enc = (put_node(block), len(block) + total)
        return node.enc


class DirState:
    """One directory's decoded entries; immutable once published (see module docstring)."""

    __slots__ = ("entries", "mode", "mtime", "est", "plain_len", "tsum", "data_field",
                 "_keys", "_parts", "_shard")

    def __init__(self, entries: dict[str, Item], mode: int | None, mtime, est: int,
                 plain_len: int, tsum: int, data_field: bytes | None = None) -> None:
        self.entries = entries
        self.mode = mode
        self.mtime = mtime
        self.est = est  # boxo's links estimate: sum of len(name) + len(cid bytes)
        self.plain_len = plain_len  # bytes of all link fields of the plain node
        self.tsum = tsum  # sum of the entries' cumulative sizes
        if data_field is None:
            payload = unixfs.UnixFSData(unixfs.DIRECTORY, mode=mode, mtime=mtime)
            data_field = pw.bytes_field(1, payload.encode())
        self.data_field = data_field
        self._keys: list[bytes] | None = None  # names as bytes, sorted (plain encoding)
        self._parts: list[bytes] | None = None  # their link fields, same order
        self._shard: _Shard | None = None  # in-memory HAMT (sharded encoding)

    @classmethod
    def of(cls, items: Iterable[tuple[str, CID, int]], mode: int | None = None,
           mtime=None) -> DirState:
        entries: dict[str, Item] = {}
        est = plain_len = tsum = 0
        for name, cid, tsize in items:
            part = link_field(name, cid, tsize)
            entries[name] = (cid, tsize, part)
            est += _est(name, cid)
            plain_len += len(part)
            tsum += tsize
        return cls(entries, mode, mtime, est, plain_len, tsum)

    def get(self, name: str) -> tuple[CID, int] | None:
        item = self.entries.get(name)
        return None if item is None else (item[0], item[1])

    def __len__(self) -> int:
        return len(self.entries)

    # ---------------------------------------------------------------- changes
    def apply(self, changes: dict[str, tuple[CID, int] | None], params: ImportParams
              ) -> DirState:
        """A new state with ``changes`` (name -> (cid, tsize), or None to remove)."""
        entries = dict(self.entries)
        est, plain_len, tsum = self.est, self.plain_len, self.tsum
        keys = list(self._keys) if self._keys is not None else None
        parts = list(self._parts) if keys is not None and self._parts is not None else None
        if parts is None:
            keys = None
        shard = self._shard
        tree = _Hamt(params.hamt_fanout) if shard is not None else None
        for name, value in changes.items():
            old = entries.pop(name, None)
            key = dagpb.name_bytes(name)
            at = -1 if keys is None else bisect_left(keys, key)
            if old is not None:
                est -= _est(name, old[0])
                plain_len -= len(old[2])
                tsum -= old[1]
                if value is None:
                    if keys is not None:
                        del keys[at]
                        del parts[at]  # type: ignore[union-attr]
                    if tree is not None:
                        shard = tree.delete(shard, hamt.hash_name(name), name)
            if value is None:
                continue
            cid, tsize = value
            part = link_field(name, cid, tsize)
            entries[name] = (cid, tsize, part)
            est += _est(name, cid)
            plain_len += len(part)
            tsum += tsize
            if keys is not None:
                if old is None:
                    keys.insert(at, key)
                    parts.insert(at, part)  # type: ignore[union-attr]
                else:
                    parts[at] = part  # type: ignore[index]
            if tree is not None:
                shard = tree.insert(shard, (hamt.hash_name(name), name, cid, tsize))
        new = DirState(entries, self.mode, self.mtime, est, plain_len, tsum, self.data_field)
        new._keys, new._parts, new._shard = keys, parts, shard
        return new

    # ---------------------------------------------------------------- encoding
    def sharded(self, params: ImportParams) -> bool:
        """directory.should_shard for these entries, from the running sums."""
        if params.hamt_threshold <= 0:
            return False
        if params.hamt_estimation == "block":
            return self.plain_len + len(self.data_field) > params.hamt_threshold
        return self.est >= params.hamt_threshold

    def near_switch(self, params: ImportParams, margin: int = 4096) -> bool:
        """A plain directory within ``margin`` bytes of becoming a HAMT (by either
        estimate): the next additions may rebuild it whole."""
        if params.hamt_threshold <= 0 or self._shard is not None:
            return False
        return max(self.est, self.plain_len + len(self.data_field)) + margin \
            >= params.hamt_threshold

    def encode(self, params: ImportParams, put_node: PutNode) -> Imported:
        """Store the node(s); the same CID as build_directory of the same entries."""
        if self.sharded(params):
            self._keys = self._parts = None
            tree = _Hamt(params.hamt_fanout)
            if self._shard is None:
                self._shard = tree.build([(hamt.hash_name(name), name, item[0], item[1])
                                          for name, item in self.entries.items()])
            cid, tsize = tree.encode(self._shard, put_node)
            return Imported(cid, 0, tsize, sharded=True)
        self._shard = None
        if self._keys is None or self._parts is None:
            names = sorted(self.entries, key=dagpb.name_bytes)
            self._keys = [dagpb.name_bytes(name) for name in names]
            self._parts = [self.entries[name][2] for name in names]
        block = b"".join(self._parts) + self.data_field
        return Imported(put_node(block), 0, len(block) + self.tsum)


class DirCache:
    """Directory CID -> DirState, LRU bounded by the total number of entries."""

    def __init__(self, max_entries: int = DIR_CACHE_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._cache: LRUCache[CID, DirState] = LRUCache(
            max_entries, getsizeof=lambda state: max(1, len(state)))

    def get(self, cid: CID) -> DirState | None:
        with self._lock:
            return self._cache.get(cid)

    def put(self, cid: CID, state: DirState, replaces: CID | None = None) -> None:
        with self._lock:
            if replaces is not None and replaces != cid:
                self._cache.pop(replaces, None)  # the older version is rarely asked again
            if len(state) <= self._cache.maxsize:
                self._cache[cid] = state

    def __contains__(self, cid: CID) -> bool:
        with self._lock:
            return cid in self._cache

    def quick_add(self, root: CID, segs: list[str], params: ImportParams,
                  max_bytes: int) -> bool:
        """Whether adding the new name ``segs[-1]`` in directory ``segs[:-1]`` of ``root``
        needs only what is here, ready: every directory on the path cached with its
        encoding state, the name not taken (replacing an entry looks at its blocks), no
        plain/HAMT switch near, and at most ``max_bytes`` of nodes to encode and hash. MFS
        then runs the change on the trio thread: no block is read and hashing is bounded."""
        if not segs:
            return False
        cost = 0
        cur = root
        for depth, name in enumerate(segs):
            state = self.get(cur)
            if state is None:
                return False
            if state.sharded(params):
                if state._shard is None:
                    return False
                cost += SHARD_PATH_BYTES
            elif state._parts is None:
                return False  # first change since it was decoded: a full sort to do
            else:
                cost += state.plain_len + len(state.data_field)
            entry = state.get(name)
            if depth < len(segs) - 1:
                if entry is None:
                    return False
                cur = entry[0]
            elif entry is not None or state.near_switch(params):
                return False
        return cost <= max_bytes

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


__all__ = ["DirState", "DirCache", "link_field"]
