"""MFS directory nodes (and one-block files) held in memory until the next sync, with a
redo log for ``kill -9``.

Every MFS mutation re-encodes the directories from the changed entry up to the root. Written
as flatfs files, those nodes cost one file creation each (0.1-0.9 ms on ext4 here: most of a
small file's commit), and almost all of them are superseded by the next mutation. A file of
one block written inside a mutation (``Tree.write``) is deferred the same way. While the
daemon's flusher runs (``MFS.deferred``), :class:`PendingBlocks` keeps them in memory instead:

- :meth:`defer` (MFS's tree, in the mutation's worker thread) adds a node to the overlay;
  :meth:`log_batch` (MFS, before it appends the new root to its root log) appends the nodes
  deferred since the last call to ``<repo>/mfs-root.blocks`` with one ``write(2)``, no
  fsync. A process crash keeps what the page cache holds, so the root log never names a
  root whose nodes are neither in flatfs nor in this log.
- :meth:`get` / :meth:`has` answer from the overlay first, so the reader, GC's walk and
  ``/ipfs/<dir cid>`` see pending nodes; everything else goes to the wrapped store.
- :meth:`write_reachable` (MFS's sync, before ``store.sync()`` and the synced root file)
  writes to the store the pending nodes reachable from the root being synced. Nodes that
  are not reachable from it were superseded; :meth:`retire` drops them one sync later (a
  reader that snapshotted an older root keeps its nodes for one more flush interval).
  A superseded directory version is therefore never written: its CID, if someone noted it
  (``getfattr``), stops resolving after two flush intervals (docs/SEMANTICS.md).
- Past ``PENDING_MAX`` bytes, :meth:`spill` (MFS, under its lock) writes what is reachable
  from the root just committed and retires as a sync does: memory stays about twice that.
- :meth:`recover` (MFS load, before it reads the root log) puts every valid logged node
  into the store, fsyncs it and empties the log; the log is rewritten with only the nodes
  still unwritten when it grows past twice their size.

Log record: ``<u32 len(cid)> <cid> <u32 len(data)> <data> <u32 crc32 of the above>``, big
endian; a torn or corrupt record ends the replay (later ones were appended after it).

Concurrency: ``_lock`` guards ``_nodes``/``_bytes``/``_batch``; node bytes are immutable.
:meth:`defer`, :meth:`log_batch`, :meth:`spill` and :meth:`recover` run under MFS's mutation
lock (one writer of the log); :meth:`write_reachable` and :meth:`retire` under its sync
mutex, beside mutations. Blocking (file I/O, hashing): worker threads only. Errors: OSError
from the log becomes McpfsError (NoSpace on a full disk); the store raises its own.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Final

from ...errors import InvalidInput, McpfsError, NoSpace
from . import dagpb
from .blockstore import Blockstore, StoreWrapper
from .cid import CID
from .mfs_root import AppendLog

log = logging.getLogger("mcpfs.mfs")

PENDING_MAX: Final = 64 << 20  # unwritten bytes held before a commit spills (see spill)
_U32: Final = struct.Struct(">I")


def _record(cid: CID, data: bytes) -> bytes:
    raw = bytes(cid)
    body = b"".join([_U32.pack(len(raw)), raw, _U32.pack(len(data)), data])
    return body + _U32.pack(zlib.crc32(body))


def _records(buf: bytes) -> list[tuple[CID, bytes]]:
    """The valid records of a log, up to the first torn or corrupt one."""
    out: list[tuple[CID, bytes]] = []
    pos = 0
    while pos + 4 <= len(buf):
        start = pos
        (n,) = _U32.unpack_from(buf, pos)
        raw_end = pos + 4 + n
        if raw_end + 4 > len(buf):
            break
        (m,) = _U32.unpack_from(buf, raw_end)
        end = raw_end + 4 + m
        if end + 4 > len(buf) or _U32.unpack_from(buf, end)[0] != zlib.crc32(buf[start:end]):
            break
        try:
            cid = CID.from_bytes(buf[pos + 4:raw_end])
        except InvalidInput:
            break
        data = buf[raw_end + 4:end]
        if not cid.verify(data):
            break
        out.append((cid, data))
        pos = end + 4
    return out


def _multihash(raw_cid: bytes) -> bytes:
    if len(raw_cid) == 34 and raw_cid[0] == 0x12:  # CIDv0: the bytes are the multihash
        return raw_cid
    return CID.from_bytes(raw_cid).multihash


class _Node:
    __slots__ = ("cid", "data", "seq", "written")

    def __init__(self, cid: CID, data: bytes, seq: int) -> None:
        self.cid = cid
        self.data = data
        self.seq = seq  # the commit number it was made for
        self.written = False  # in the wrapped store (then only kept for older readers)


class PendingBlocks(StoreWrapper):
    """A blockstore wrapper holding deferred MFS nodes; see the module docstring."""

    def __init__(self, inner: Blockstore, log_path: str | os.PathLike[str]) -> None:
        super().__init__(inner)
        self.log_path = Path(log_path)
        self._nodes: dict[bytes, _Node] = {}  # multihash -> node
        self._bytes = 0  # of nodes not written yet
        self._batch: list[_Node] = []  # deferred since the last log_batch
        self._lock = threading.Lock()
        self._log = AppendLog(self.log_path)
        self._retired_upto = -1  # nodes of commits up to this number go at the next retire

    # ---------------------------------------------------------------- Blockstore
    def get(self, cid: CID) -> bytes:
        with self._lock:
            node = self._nodes.get(cid.multihash)
        return node.data if node is not None else self.inner.get(cid)

    def has(self, cid: CID) -> bool:
        with self._lock:
            if cid.multihash in self._nodes:
                return True
        return self.inner.has(cid)

    # ---------------------------------------------------------------- deferring
    @property
    def pending_bytes(self) -> int:
        """Bytes of nodes held that are not in the wrapped store yet."""
        return self._bytes

    def defer(self, cid: CID, data: bytes, seq: int) -> None:
        """Hold ``data`` for commit ``seq``; a node made again is re-tagged, not re-added.
        (Not checked against the store: a node it holds already is skipped when written.)"""
        with self._lock:
            node = self._nodes.get(cid.multihash)
            if node is not None:
                node.seq = max(node.seq, seq)
                return
            node = self._nodes[cid.multihash] = _Node(cid, bytes(data), seq)
            self._bytes += len(node.data)
            self._batch.append(node)

    @property
    def log_open(self) -> bool:
        """Whether the next batch can be appended (else the log is rewritten whole)."""
        return self._log.is_open

    def log_batch(self, compact: bool = True) -> None:
        """Append the nodes deferred since the last call to the log, in one write; the log
        is rewritten with only the unwritten nodes when it grew past twice their size
        (unless not ``compact``: a later batch does it) or when it is not open (after an
        error: it must hold every unwritten node again)."""
        with self._lock:
            batch, self._batch = self._batch, []
            unwritten = self._bytes
        if not batch:
            return
        try:
            if not self._log.is_open or (compact and
                                         self._log.size > 2 * unwritten + (4 << 20)):
                with self._lock:  # every unwritten node, this batch's among them
                    nodes = [node for node in self._nodes.values() if not node.written]
                self._log.replace(b"".join(_record(node.cid, node.data) for node in nodes))
            else:
                self._log.append(b"".join(_record(node.cid, node.data) for node in batch))
        except OSError as exc:
            self._log.close()  # the next batch rewrites the log with every unwritten node
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left for the MFS log {self.log_path}") from None
            raise McpfsError(f"cannot write the MFS log {self.log_path}: "
                             f"{exc.strerror}") from None

    def _write_out(self, nodes: list[_Node]) -> None:
        for node in nodes:
            self.inner.put(node.cid, node.data)
            with self._lock:
                if not node.written:
                    node.written = True
                    self._bytes -= len(node.data)

    def write_reachable(self, root: CID) -> None:
        """Write to the store every pending node reachable from ``root`` (walking pending
        nodes only: what they link outside the overlay is in the store already)."""
        todo, found, seen = [root.multihash], [], set()
        while todo:
            mh = todo.pop()
            with self._lock:
                node = self._nodes.get(mh)
            if node is None or mh in seen:
                continue
            seen.add(mh)
            if not node.written:
                found.append(node)
            todo.extend(_multihash(raw) for raw in dagpb.link_cid_bytes(node.data))
        self._write_out(found)

    def spill(self, root: CID, seq: int) -> None:
        """Past PENDING_MAX (MFS, under its lock, ``root`` just committed as ``seq``): write
        the nodes reachable from ``root`` and start a new generation as a sync does, so
        memory holds about two generations of nodes and superseded ones are never
        written. (No fsync: the root log still decides what a crash keeps.)"""
        self.write_reachable(root)
        self.retire(seq)

    def retire(self, seq: int) -> None:
        """After the nodes reachable from the root of commit ``seq`` were written (a sync or
        a spill): drop the nodes of commits up to the previous such point, written or
        superseded; the newer ones stay one more round for readers of older roots.

        Safe beside a sync running late: it syncs the latest committed root (MFS), never
        older than the previous point, and every node reachable from such a root with a
        commit number up to that point was written there."""
        with self._lock:
            upto = self._retired_upto
            self._retired_upto = max(upto, seq)
            for mh in [mh for mh, node in self._nodes.items() if node.seq <= upto]:
                node = self._nodes.pop(mh)
                if not node.written:
                    self._bytes -= len(node.data)

    def recover(self) -> int:
        """Put every valid logged node into the store, fsync it and remove the log (MFS
        load, before the root log is read). Returns how many nodes were replayed."""
        try:
            buf = self.log_path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise McpfsError(f"cannot read the MFS log {self.log_path}: "
                             f"{exc.strerror}") from None
        records = _records(buf)
        for cid, data in records:
            self.inner.put(cid, data)
        if records:
            self.inner.sync()
            log.info("MFS: replayed %d directory nodes from %s", len(records), self.log_path)
        self.drop_log()
        return len(records)

    def drop_log(self) -> None:
        """Remove the log (every node it held is in the store, synced)."""
        self._log.drop()


__all__ = ["PendingBlocks", "PENDING_MAX"]
