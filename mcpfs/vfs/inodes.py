"""Inode numbers and kernel lookup counts, keyed by path in the mounted tree.

A path (``""`` for the root, ``"mfs/a/b"`` below it) gets an inode number the first time
the kernel learns of it and keeps it while the kernel holds a reference (lookup count > 0).
Numbers are never reused within a daemon's life, so a stale kernel reference can never name
a different file. Unlink/rmdir *detach* a node (its path no longer maps to it) without
forgetting it: an open file keeps working and a new file at the same path gets a new number.
Rename moves a node and every node below it.

Concurrency: only touched from the trio thread, between awaits; no lock. Renames scan the
table for descendants (O(known inodes)); fine for the sizes the kernel keeps referenced.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from ..errors import McpfsError

ROOT_INODE = 1  # FUSE_ROOT_ID


@dataclass(slots=True, eq=False)
class Node:
    ino: int
    path: str
    lookups: int = 0
    attached: bool = True  # False once unlinked/replaced: path no longer maps here
    attr: Any = None  # last Attr seen (served for detached nodes)
    extra: dict = field(default_factory=dict)


def child_path(parent: str, name: str) -> str:
    return name if not parent else f"{parent}/{name}"


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class InodeTable:
    def __init__(self) -> None:
        root = Node(ROOT_INODE, "", lookups=1)
        self.by_ino: dict[int, Node] = {ROOT_INODE: root}
        self.by_path: dict[str, Node] = {"": root}
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

    def ensure(self, path: str) -> Node:
        """The node of ``path``, created (with lookup count 0) if unknown."""
        node = self.by_path.get(path)
        if node is None:
            node = Node(self._next, path)
            self._next += 1
            self.by_ino[node.ino] = node
            self.by_path[path] = node
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
        if node.lookups <= 0 and not node.extra:
            self.drop(node)

    def drop(self, node: Node) -> None:
        self.by_ino.pop(node.ino, None)
        if node.attached and self.by_path.get(node.path) is node:
            del self.by_path[node.path]

    def detach(self, path: str) -> None:
        """``path`` was removed: its node (and nodes below it) stop mapping from paths."""
        prefix = path + "/"
        for p in [p for p in self.by_path if p == path or p.startswith(prefix)]:
            node = self.by_path.pop(p)
            node.attached = False
            if node.lookups <= 0 and not node.extra:
                self.by_ino.pop(node.ino, None)

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` (and everything below it) to ``new``, detaching what was at ``new``."""
        self.detach(new)
        prefix = old + "/"
        moved = [self.by_path.pop(p) for p in list(self.by_path)
                 if p == old or p.startswith(prefix)]
        for node in moved:
            node.path = new + node.path[len(old):]
            self.by_path[node.path] = node


__all__ = ["InodeTable", "Node", "ROOT_INODE", "child_path", "parent_of"]
