"""Inode numbers and kernel lookup counts, keyed by path in the mounted tree.

A path (``""`` for the root, ``"mfs/a/b"`` below it) gets an inode number the first time
the kernel learns of it and keeps it while the kernel holds a reference (lookup count > 0).
Numbers are never reused within a daemon's life, so a stale kernel reference can never name
a different file. Unlink/rmdir *detach* a node (its path no longer maps to it) without
forgetting it: an open file keeps working and a new file at the same path gets a new number.
Rename moves a node and every node below it.

Descendants: ``_below`` counts, per directory path, the known paths below it (whether or
not the directory's own node is known), so detaching a name with nothing known below it
(every create, unlink, mkdir) is O(1) instead of a scan of every known path; only a
directory with known descendants (rmdir, rename of a directory) scans. A count costs one
dict entry per directory, nothing per file (RSS per cached entry is a goal).

``cache_id`` is the content identity (CID, etag) the kernel's page cache of the inode may
hold, or None when unknown or mixed: vfs/ decides ``keep_cache`` at open with it.

Concurrency: only touched from the trio thread, between awaits; no lock.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from ..errors import McpfsError
from ..mounts.base import child_path  # (re-exported: vfs spells paths as mounts do)

ROOT_INODE = 1  # FUSE_ROOT_ID


@dataclass(slots=True, eq=False)
class Node:
    ino: int
    path: str
    lookups: int = 0
    attached: bool = True  # False once unlinked/replaced: path no longer maps here
    attr: Any = None  # last Attr seen (served for detached nodes)
    open_file: Any = None  # the OpenFile while one is open (keeps the node while pending)
    cache_id: str | None = None  # content identity the kernel's page cache may hold


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class InodeTable:
    def __init__(self) -> None:
        root = Node(ROOT_INODE, "", lookups=1)
        self.by_ino: dict[int, Node] = {ROOT_INODE: root}
        self.by_path: dict[str, Node] = {"": root}
        self._below: dict[str, int] = {}  # directory path -> known paths below it
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Node:
        node = self.by_ino.get(ino)
        if node is None:
            raise McpfsError(f"stale inode {ino}", errno=errno.ESTALE)
        return node

    def find(self, path: str) -> Node | None:
        return self.by_path.get(path)

    def knows_below(self, path: str) -> bool:
        """Whether any known path lies below ``path`` (O(1): the descendant counts)."""
        return bool(self._below.get(path))

    def ensure(self, path: str) -> Node:
        """The node of ``path``, created (with lookup count 0) if unknown."""
        node = self.by_path.get(path)
        if node is None:
            node = Node(self._next, path)
            self._next += 1
            self.by_ino[node.ino] = node
            self.by_path[path] = node
            self._link(path)
        return node

    def remember(self, path: str, attr: Any = None) -> Node:
        """A reply told the kernel of ``path``: count one lookup."""
        node = self.ensure(path)
        node.lookups += 1
        if attr is not None:
            node.attr = attr
        return node

    def forget(self, ino: int, n: int) -> None:
        node = self.by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups -= n
        if node.lookups <= 0 and node.open_file is None:
            self.drop(node)

    def drop(self, node: Node) -> None:
        self.by_ino.pop(node.ino, None)
        if node.attached and self.by_path.get(node.path) is node:
            del self.by_path[node.path]
            self._unlink(node.path)

    # ---------------------------------------------------------------- descendants
    def _link(self, path: str) -> None:
        """Count ``path`` as a known descendant of each of its ancestors."""
        below = self._below
        while path:
            path = path.rpartition("/")[0]
            below[path] = below.get(path, 0) + 1

    def _unlink(self, path: str) -> None:
        below = self._below
        while path:
            path = path.rpartition("/")[0]
            n = below[path] - 1
            if n:
                below[path] = n
            else:
                del below[path]

    def _cut(self, path: str) -> list[Node]:
        """Remove ``path`` (never the root) and every known path below it from the path
        map; their nodes. O(1) unless known paths lie below ``path`` (then one scan)."""
        node = self.by_path.pop(path, None)
        nodes = [node] if node is not None else []
        if node is not None:
            self._unlink(path)
        if self._below.get(path):
            prefix = path + "/"
            for p in [p for p in self.by_path if p.startswith(prefix)]:
                nodes.append(self.by_path.pop(p))
                self._unlink(p)
        return nodes

    # ---------------------------------------------------------------- removal, moves
    def detach(self, path: str) -> None:
        """``path`` was removed: its node (and nodes below it) stop mapping from paths."""
        for node in self._cut(path):
            node.attached = False
            if node.lookups <= 0 and node.open_file is None:
                self.by_ino.pop(node.ino, None)

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` (and everything below it) to ``new``, detaching what was at ``new``."""
        self.detach(new)
        for node in self._cut(old):
            node.path = new + node.path[len(old):]
            self.by_path[node.path] = node
            self._link(node.path)


__all__ = ["InodeTable", "Node", "ROOT_INODE", "child_path", "parent_of"]
