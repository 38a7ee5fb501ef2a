"""A copy checked byte for byte as it is written: no spool, no hash, a native commit.

When a process opens a file for writing while it holds, not yet read, another file of the
mount whose bytes can be committed natively at the destination (a DAG in the blockstore
into /mfs: a link; an S3 object into /s3: a server-side copy), vfs gives the new file a
:class:`CopyCheck` instead of spooling it: the source's tracker keeps what it reads
(``ReadTracker.keep_window``), and each write that appends exactly the bytes read at that
offset is only counted (``accept``); a ``copy_file_range`` from the source itself is
counted without reading (``accept_unread``). At the commit, a file that is the whole source is
committed through ``native_extra`` (the Mount's ``link``/``copy_from``), with nothing
written locally. Anything else (other bytes, a write elsewhere, a truncate, a read of the
pending file, a shorter file at close) ends the check: ``materialize`` puts the bytes
accepted so far into the spool, read again from the source, and the file goes on as an
ordinary spooled write. So nothing a writer wrote is ever lost; at worst the source is
read twice.

Errors: ``materialize`` raises what reading the source raises (EIO; ESTALE if an S3 source
changed meanwhile), which reaches the writer's write or close.

Concurrency: used under the OpenFile's lock, on the trio thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..backends.ipfs.cid import CID
from .identity import ReadTracker

PIECE: Final = 1 << 20  # bytes per read of the source when materializing


class CopyCheck:
    def __init__(self, source: ReadTracker, route: str,
                 open_source: Callable[[], Awaitable[Any]]) -> None:
        """``route``: "mfs-link" or "s3-copy"; ``open_source()`` opens a Reader of the
        source (for ``materialize``)."""
        self.source = source
        self.route = route
        self.verified = 0
        self._open_source = open_source

    def accept(self, offset: int, data: bytes) -> bool:
        """Count ``data`` written at ``offset`` if it is the source's next bytes."""
        if offset != self.verified or not self.source.matches(offset, data):
            return False
        self.verified += len(data)
        return True

    def accept_unread(self, offset: int, length: int) -> int | None:
        """Count the source's own bytes ``[offset, offset + length)`` (clipped to its end)
        as written, unread (``copy_file_range`` from the source itself); None unless the
        copy has reached exactly ``offset``."""
        if offset != self.verified:
            return None
        count = max(0, min(length, self.source.size - offset))
        self.verified += count
        return count

    def complete(self, size: int) -> bool:
        return self.verified == size == self.source.size

    async def materialize(self, spool: Any) -> None:
        """Write the accepted bytes (``[0, verified)``, read again from the source) into
        ``spool``."""
        self.source.window = None
        if not self.verified:
            return
        reader = await self._open_source()
        try:
            offset = 0
            while offset < self.verified:
                data = await reader.read(offset, min(PIECE, self.verified - offset))
                if not data:
                    raise OSError(5, "copy source shorter than what was read")
                await spool.write(offset, data)
                offset += len(data)
        finally:
            await reader.close()

    def native_extra(self, size: int) -> dict[str, Any]:
        """What the Mount's commit needs for the native route (``content_size`` is the
        file's size: the spool is empty)."""
        src = self.source
        extra: dict[str, Any] = {"content_size": size, "source": src.location,
                                 "route": self.route, "copy_only": True}
        if src.identity is not None:
            extra["identity"] = src.identity
        if self.route == "mfs-link":
            extra["link_cid"] = CID.decode(src.ipfs_cid or "")
        else:
            _, _, bucket, key = src.location.split("/", 3)
            extra["copy_from"] = (bucket, key, src.version)
            if src.ipfs_cid:
                extra["ipfs_cid"] = src.ipfs_cid
        return extra


def native_route(dest_mount: str, source: ReadTracker) -> str | None:
    """The route a verified copy of ``source`` into ``dest_mount`` can take, if any."""
    if dest_mount == "mfs" and source.ipfs_cid is not None and \
            source.ipfs_cid == source.version:  # a DAG read from /ipfs or /mfs
        return "mfs-link"
    if dest_mount == "s3" and source.location.startswith("/s3/") and source.version:
        return "s3-copy"
    return None


__all__ = ["CopyCheck", "native_route"]
