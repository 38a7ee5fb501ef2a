"""Whether a read-only open may keep the kernel's page cache of an inode (``keep_cache``).

Always on an immutable subtree. Elsewhere only when the content identity (CID, ETag) the
new reader reads equals the one the cache was filled from (``Node.cache_id``) and every
other open reader of the inode reads it too (an older reader still open could refill the
cache with its content). Otherwise the kernel drops the cache at this open and
``node.cache_id`` becomes the new identity (None while readers disagree). Writes through
the mount reset ``cache_id`` (vfs.py); a reader closing with another identity than the
cache's resets it too (its reads may be in the cache).

Concurrency: trio thread only (called from VFS.open/release); no lock.
"""

from __future__ import annotations

from .inodes import Node


class PageCache:
    def __init__(self) -> None:
        self._reading: dict[int, dict[str | None, int]] = {}  # ino -> identity -> readers

    def opened(self, node: Node, identity: str | None, immutable: bool) -> bool:
        """A reader of ``identity`` opened ``node``: may it keep the kernel's pages?"""
        if immutable:
            return True
        others = self._reading.setdefault(node.ino, {})
        agree = all(ident == identity for ident in others)
        keep = identity is not None and node.cache_id == identity and agree
        if not keep:
            node.cache_id = identity if agree else None
        others[identity] = others.get(identity, 0) + 1
        return keep

    def closed(self, node: Node, identity: str | None) -> None:
        """A reader of ``identity`` released ``node``."""
        others = self._reading.get(node.ino)
        if others is None:
            return
        n = others.get(identity, 0) - 1
        if n > 0:
            others[identity] = n
        else:
            others.pop(identity, None)
            if not others:
                del self._reading[node.ino]
        if identity != node.cache_id:
            node.cache_id = None


__all__ = ["PageCache"]
