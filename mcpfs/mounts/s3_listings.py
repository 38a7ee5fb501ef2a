"""The listing cache of ``/s3``: one ListObjectsV2 listing per directory, kept fresh by
our own changes.

:class:`S3Listings` is mixed into :class:`~mcpfs.mounts.s3.S3Mount` (it uses the mount's
``backend``, ``_listings``, ``_heads``, ``_fresh``, ``_negative_ttl``, ``_changes`` and
``_gen``). Listings are kept for ``listing_ttl`` (a TTLCache); a change made through the
mount updates its parent's cached listing in place (``_wrote``) or forgets the path and its
ancestors (``_invalidate``). ``_gen`` counts those changes, so a listing fetched while one
was made is not stored as it came; ``_small_listing`` replays our own in-place changes on
such a page instead (``_replay``), so a burst of creates still gets a listing to keep.

Errors: what the backend raises (ENOENT, EACCES, EIO), and ENOTDIR/ENOENT for a path
whose listing is empty (``_raise_missing_dir``).
Concurrency: trio thread only; no await between reading ``_gen`` and storing a listing.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..backends.s3 import ObjectInfo
from ..errors import McpfsError
from .base import DIR, FILE, Attr, joined, split

CHANGES_KEPT: Final = 4096  # our recent listing changes kept for replay (_replay)
SMALL_LISTING: Final = 1000  # keys of one ListObjectsV2 page: a lookup lists a dir this small

Listing = dict[str, tuple[Attr, ObjectInfo | None]]


def _build_listing(prefix: str, prefixes: list[str], objects: list[ObjectInfo]) -> Listing:
    """name -> (Attr, ObjectInfo or None) of the entries directly under ``prefix``."""
    out: Listing = {}
    for obj in objects:
        name = obj.key[len(prefix):]
        if name and "/" not in name:
            out[name] = (_file_attr(obj), obj)
    for p in prefixes:
        name = p[len(prefix):-1]
        if name and "/" not in name:
            out[name] = (Attr(DIR), None)
    return out


def _file_attr(info: ObjectInfo) -> Attr:
    return Attr(FILE, info.size, mtime_ns=info.mtime_ns or time.time_ns())


class S3Listings:
    _changes: deque[tuple[int, str | None, str, Any]]

    def _invalidate(self, path: str) -> None:
        """Forget ``path`` and every ancestor listing (a new key may create prefixes)."""
        self._gen += 1
        self._changes.append((self._gen, None, "", None))
        segs = split(path)
        self._heads.pop("/".join(segs), None)
        for i in range(len(segs) + 1):
            self._listings.pop("/".join(segs[:i]), None)
            self._fresh.pop("/".join(segs[:i]), None)

    async def _through_cache(self, cache: Any, path: str, fetch: Callable[[], Awaitable[Any]],
                             keep: Callable[[str, Any], None]) -> Any:
        """``cache[path]`` (the hit or miss counted), else ``await fetch()``, stored by
        ``keep(path, value)`` unless one of our own changes came while it was fetched
        (``_gen``: the value may predate it)."""
        hit = cache.get(path)
        self.backend.note_cache(hit is not None)
        if hit is not None:
            return hit
        gen = self._gen
        value = await fetch()
        if gen == self._gen:
            keep(path, value)
        return value

    async def _listing(self, path: str) -> Listing:
        """name -> (Attr, ObjectInfo or None) of the directory ``path`` (cached)."""
        path = joined(path)
        return await self._through_cache(self._listings, path,
                                         lambda: self._fetch_listing(path), self._keep)

    async def _fetch_listing(self, path: str) -> Listing:
        """The listing of ``path`` from the server (all pages); ENOENT/ENOTDIR when empty
        and not a directory."""
        out: Listing = {}
        segs = split(path)
        if not segs:
            for name, ctime in await self.backend.list_buckets():
                out[name] = (Attr(DIR, mtime_ns=ctime or time.time_ns()), None)
        else:
            bucket, prefix = segs[0], "".join(s + "/" for s in segs[1:])
            prefixes, objects = await self.backend.list_dir(bucket, prefix)
            out = _build_listing(prefix, prefixes, objects)
            if not out and segs[1:] and prefix not in {o.key for o in objects}:
                await self._raise_missing_dir(path)
        return out

    def _keep(self, path: str, listing: Listing) -> None:
        """Cache ``listing`` of ``path``, just fetched (fresh for ``negative_ttl``)."""
        self._listings[path] = listing
        if self._negative_ttl > 0:
            self._fresh[path] = True

    async def _small_listing(self, path: str) -> Listing | None:
        """The listing of the directory ``path`` (a bucket or below) when one page of
        ``SMALL_LISTING`` keys holds all of it (then cached), else None. An empty page is
        returned, and cached only when the directory's ``dir/`` marker is in it (else the
        directory may not exist). Lookups in a directory not
        listed yet use it: one request answers every name in it, as rclone's dir cache."""
        segs = split(path)
        gen = self._gen
        bucket, prefix = segs[0], "".join(s + "/" for s in segs[1:])
        prefixes, objects, more = await self.backend.list_dir_page(bucket, prefix,
                                                                   SMALL_LISTING)
        if more:
            return None
        out = _build_listing(prefix, prefixes, objects)
        exists = out or (prefix and any(o.key == prefix for o in objects))  # a marker
        # our own changes made while it was listed are replayed on it (else a burst of
        # creates, each changing the directory, would never get a listing to keep)
        if exists and (gen == self._gen or self._replay(path, gen, out)):
            self._keep(path, out)
        return out

    def _wrote(self, path: str, attr: Attr | None, info: ObjectInfo | None = None) -> None:
        """After our own change of ``path`` (``attr`` None: it is gone): update the parent's
        cached listing in place when there is one (the parent exists, so no ancestor
        changes), else forget the path and its ancestors' listings."""
        segs = split(path)
        listing = self._listings.get("/".join(segs[:-1])) if len(segs) > 1 else None
        if listing is None:
            self._invalidate(path)
            return
        self._gen += 1
        self._heads.pop("/".join(segs), None)
        self._listings.pop("/".join(segs), None)
        entry = None if attr is None else (attr, info)
        self._changes.append((self._gen, "/".join(segs[:-1]), segs[-1], entry))
        if entry is None:
            listing.pop(segs[-1], None)
        else:
            listing[segs[-1]] = entry

    def _replay(self, path: str, since: int, listing: Listing) -> bool:
        """Apply to ``listing`` (fetched from the server while our changes ``since`` were
        made) those of them in ``path``; False when that cannot be done (an invalidation,
        or changes no longer kept): the listing must not be stored then."""
        if not self._changes or self._changes[0][0] > since + 1:
            return False
        for gen, parent, name, entry in self._changes:
            if gen <= since:
                continue
            if parent is None:
                return False
            if parent == path:
                if entry is None:
                    listing.pop(name, None)
                else:
                    listing[name] = entry
        return True

    async def _raise_missing_dir(self, path: str) -> None:
        """An empty listing of a non-bucket path: ENOTDIR for a file, nothing for an empty
        directory (a ``dir/`` marker, or a directory SeaweedFS keeps), else ENOENT."""
        bucket, key = self._where(path)
        if await self._exists(bucket, key):
            raise McpfsError(f"/s3/{path}: not a directory", errno=errno.ENOTDIR)
        if not await self._exists(bucket, key + "/"):
            raise McpfsError(f"/s3/{path}: no such directory", errno=errno.ENOENT)

    async def _exists(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return await self.backend.head(bucket, key)
        except McpfsError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise


__all__ = ["S3Listings", "Listing", "SMALL_LISTING", "CHANGES_KEPT"]
