"""The kernel's page cache of an inode: whether a read-only open may keep it
(``keep_cache``), and whether a write-only open bypasses it (``direct_io``, see
:func:`write_only_direct`).

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

import os
import re

from .inodes import Node


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (or of ``release``, as ``uname -r`` spells it);
    (0, 0) when it cannot be read."""
    found = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


DIRECT_WRITES_SINCE = (6, 6)  # the kernel drops a direct write's range from the page cache


def write_only_direct(flags: int, kernel: tuple[int, int] | None = None) -> bool:
    """Whether an open with ``flags`` gets ``direct_io``: a write-only open, on Linux 6.6
    and later.

    Its writes then reach the daemon from the writer's own pages instead of being copied
    into the inode's page cache first. Those copies were never read again: a write resets
    the cache identity, so the next reader's open drops them (``PageCache.opened``). For
    ``cp`` of a large file they were a second copy of every byte, and on a VM whose fresh
    guest pages fault in slowly most of its system time (bench: cp of 1 GiB into /mfs went
    from 0.65x to 1.14x kubo's add). A write-only descriptor can neither read nor be
    mmapped, so nothing changes for its writer. Other descriptors see what they saw with
    write-through: one opened after the writer reads the pending bytes (since 6.6 the
    kernel drops a direct write's range from the page cache before sending it, and a read
    that refilled it meanwhile is dropped at the next read by the write's new mtime, as
    after any write; before 6.6 nothing dropped the range, so older kernels keep
    write-through); one opened before keeps reading the content it opened (with
    write-through too: the new mtime made the kernel drop the pages the write had filled).
    Read-write opens keep the page cache: their mmaps need it.
    """
    if flags & os.O_ACCMODE != os.O_WRONLY:
        return False
    return (kernel or KERNEL) >= DIRECT_WRITES_SINCE


KERNEL = kernel_version()


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


__all__ = ["PageCache", "write_only_direct"]
