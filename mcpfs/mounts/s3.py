"""``/s3/<bucket>/<key...>``: S3 buckets as directories, read-write.

``lookup("")`` lists buckets (ListBuckets, or the configured ``buckets``); inside a bucket
a key ``a/b/c`` is the file ``a/b/c`` and every prefix ending in ``/`` a directory, whether a
``dir/`` marker object exists (``mkdir`` makes one) or keys below it do. A key that is also
a prefix (``a`` and ``a/x``) shows as the directory; keys with empty segments (``a//b``) are
not shown.

Caching: listings (``TTLCache``, ``listing_ttl``) and HEAD results (``attr_ttl``) are kept
per prefix/key. A change made through this mount updates its parent's cached listing in
place (or drops the key's and its ancestors' caches when the parent is not cached). A
lookup whose parent listing is cached is answered from it, so an ``ls -l`` of 20,000 keys
costs the listing pages, not 20,000 HEADs; a lookup in a directory not listed yet lists it
when one page (``SMALL_LISTING`` keys) holds it all, so lookups of its other names are free.
A name a cached listing lacks costs one HEAD: an object another client put is found at
once (and added to the listing); ``ls`` shows it once the listing expires.

Reads: an open is one ranged GET of the first ``OPEN_READ`` bytes, which also says what a
HEAD would (so an open sees the object as it is now, and a small read after it costs no
request); later reads are ranged GETs through :class:`~mcpfs.mounts.prefetch.Prefetcher`,
pinned to the ETag seen at open (an object replaced meanwhile reads as ESTALE). Writes: vfs
spools the file; ``fill_spool`` (the base method) copies the current object in through the
prefetcher, so overwrite, append and random writes work; ``commit`` is one PutObject or a
multipart upload (backends/s3.py), with ``If-None-Match: *`` for files that did not exist at
open when the config says ``if_none_match`` (a concurrent creator wins: EEXIST from close()).

POSIX deviations: ``mkdir`` of a name at ``/s3`` creates a bucket, ``rmdir`` deletes an empty
one; renaming a bucket is EPERM; renaming an object above 5 GiB is a multipart copy;
a directory rename copies every key then deletes the sources (not atomic: on failure the
copies made so far stay, the sources are untouched, EIO); mtimes are the objects' upload
times; permissions are fixed (0644/0755).

Concurrency: caches are touched only from the trio thread. A listing fetched while a
change invalidated the cache is not stored (``_gen`` counts invalidations). ``_ns_lock``
(trio.Lock) serializes renames against each other; it is taken after vfs's OpenFile lock.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import mimetypes
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import trio
from cachetools import TTLCache

from ..backends.s3 import ObjectInfo, S3Backend
from ..backends.s3_upload import read_upload_marker
from ..errors import McpfsError
from .base import (DIR, FILE, XATTR_PREFIX, Attr, Capabilities, Mount, StatFS, Writer,
                   child_path, joined, split)
from .prefetch import Prefetcher
from .s3_listings import CHANGES_KEPT, SMALL_LISTING, Listing, S3Listings, _file_attr
from .kept_attrs import KeptAttrs
from .s3_rename import S3Renames
from .s3_times import S3Times

log = logging.getLogger("mcpfs.mounts.s3")

LISTING_CACHE_ENTRIES: Final = 500_000  # directory entries kept over all cached listings
ATTR_CACHE: Final = 100_000  # HEAD results kept
META_PREFIX: Final = "user.s3.meta."
CID_META: Final = "ipfs-cid"  # x-amz-meta-ipfs-cid: a CID of the object's bytes (the bridge)
SOURCE_META: Final = "mcpfs-source"  # x-amz-meta-mcpfs-source: where a copy came from
OPEN_READ: Final = 64 * 1024  # bytes the open's GET fetches: the kernel's first read of a
# small read() (16 KiB) and any object this small; a random reader wastes at most this much
FAKE_BLOCKS: Final = 1 << 38  # statfs: 1 PiB of 4 KiB blocks ("no limit")
ATTRS_DB: Final = "s3-attrs.sqlite"  # in the state folder: kept modes and mtimes



# a bucket name: 3-255 of the characters botocore lets through, starting and ending with a
# letter or digit (S3's rule, legacy names included: .git or .Trash-0 cost no request)
_BUCKET_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def _bucket_name(name: str) -> None:
    """ENOENT for a name no bucket can have (botocore would refuse some as a parameter, an
    EIO; a name the server refuses is InvalidBucketName: ENOENT too, after a request)."""
    if not _BUCKET_CHARS.fullmatch(name):
        raise McpfsError(f"/s3/{name}: no such bucket", errno=errno.ENOENT)


class S3Reader:
    """One open object: reads through a prefetcher pinned to its ETag. ``identity`` (the
    ETag) and ``ipfs_cid`` (the ``x-amz-meta-ipfs-cid`` a copy from IPFS left) are what
    the bridge knows of the object."""

    def __init__(self, backend: S3Backend, bucket: str, info: ObjectInfo,
                 first: bytes = b"") -> None:
        async def fetch(start: int, end: int) -> bytes:
            return await backend.get_range(bucket, info.key, start, end, info.etag)
        self.prefetcher = Prefetcher(fetch, info.size, name=f"s3://{bucket}/{info.key}",
                                     on_cache=backend.note_cache if backend.stats else None)
        self.prefetcher.seed(first)  # the open's GET: the first read is served from it
        self.identity = info.etag
        self.ipfs_cid = info.metadata.get(CID_META)

    async def read(self, offset: int, size: int) -> bytes:
        return await self.prefetcher.read(offset, size)

    async def close(self) -> None:
        await self.prefetcher.close()


class S3Mount(S3Renames, S3Listings, S3Times, Mount):
    name = "s3"
    # vfs may hand commit() a spool still in memory (up to spool.MEMORY_MAX): one PUT from
    # memory, no spool file or journal row; all-or-nothing like any PUT, and close() has
    # not returned until it is done (a crash before that loses a write never confirmed)
    memory_commit = True

    def __init__(self, backend: S3Backend, attrs_db: Path | str = ":memory:") -> None:
        """``attrs_db``: where modes and mtimes set through the mount are kept
        (s3_times.py; the daemon's is ``<state>/s3-attrs.sqlite``)."""
        self.backend = backend
        self.attrs = KeptAttrs(attrs_db)  # (trio thread only)
        cfg = backend.config
        self.capabilities = Capabilities(writable=True, rename=True, random_write=True,
                                         attr_timeout=cfg.attr_ttl,
                                         entry_timeout=cfg.attr_ttl)
        self._listings: TTLCache[str, Listing] = TTLCache(
            LISTING_CACHE_ENTRIES, cfg.listing_ttl, getsizeof=lambda v: max(1, len(v)))
        self._heads: TTLCache[str, ObjectInfo] = TTLCache(ATTR_CACHE, cfg.attr_ttl)
        # directories listed from the server within negative_ttl (0: none): a name their
        # listing lacks is missing without a request (a burst of creates costs one LIST
        # per negative_ttl, not a HEAD per new name; another client's new object shows
        # up to negative_ttl late)
        self._fresh: TTLCache[str, bool] = TTLCache(ATTR_CACHE, max(cfg.negative_ttl, 1e-9))
        # our in-place listing changes: (gen, parent, name, entry or None); parent None is
        # an invalidation. A page listed while some were made gets them replayed on it.
        self._changes: deque[tuple[int, str | None, str, Any]] = deque(maxlen=CHANGES_KEPT)
        self._negative_ttl = cfg.negative_ttl
        self._gen = 0
        self._ns_lock = trio.Lock()
        # vfs commits a closed file in the background ([s3] write_back, vfs/write_back.py)
        self.write_back = cfg.write_back

    @staticmethod
    def _where(path: str) -> tuple[str, str]:
        segs = split(path)
        return segs[0], "/".join(segs[1:])

    # ---------------------------------------------------------------- reading
    async def _head(self, path: str) -> ObjectInfo:
        path = joined(path)
        return await self._through_cache(self._heads, path,
                                         lambda: self.backend.head(*self._where(path)),
                                         self._heads.__setitem__)

    async def _stat(self, path: str) -> tuple[Attr, ObjectInfo | None]:
        segs = split(path)
        if not segs:
            return Attr(DIR), None
        parent = "/".join(segs[:-1])
        cached = self._listings.get(parent)
        if cached is not None:  # a fresh parent listing answers
            return await self._from_listing(path, cached)
        if len(segs) == 1:
            if self.backend.config.buckets is not None and segs[0] not in \
                    self.backend.config.buckets:
                raise McpfsError(f"/s3/{path}: no such bucket", errno=errno.ENOENT)
            await self._probe_bucket(segs[0])
            return Attr(DIR), None
        small = await self._small_listing(parent)
        if small is not None:
            return await self._from_listing(path, small, listed=True)
        bucket, key = self._where(path)
        if await self.backend.first_keys(bucket, key + "/", 1):
            return Attr(DIR), None
        try:
            info = await self._head(path)
        except McpfsError as exc:
            if exc.errno != errno.ENOENT or not await self._exists(bucket, key + "/"):
                raise
            return Attr(DIR), None  # an empty directory the server keeps (SeaweedFS)
        return _file_attr(info), info

    async def _from_listing(self, path: str, listing: Listing, listed: bool = False
                            ) -> tuple[Attr, ObjectInfo | None]:
        """The entry of ``path`` in its parent's ``listing``. A name the listing lacks gets
        one HEAD (an object another client put since the listing was made is found at
        once, and added), unless ``negative_ttl`` is set: then it is missing while the
        listing is younger than that, and after that a directory of one page is listed
        again rather than HEADed. At the /s3 level a bucket ListBuckets did not name (one
        created since, or another account's that a policy opens to us: ListBuckets names
        only our own) is probed by listing it; configured ``buckets`` answer alone."""
        segs = split(path)
        entry = listing.get(segs[-1])
        if entry is not None:
            return entry
        parent = "/".join(segs[:-1])
        if listed and self._negative_ttl > 0:  # ``listing`` came from the server just now
            raise McpfsError(f"/s3/{path}: no such file", errno=errno.ENOENT)
        if len(segs) == 1 and self.backend.config.buckets is None \
                and not (self._negative_ttl > 0 and "" in self._fresh):
            await self._probe_bucket(segs[0])
            entry = listing[segs[0]] = (Attr(DIR), None)
            return entry
        if len(segs) > 1 and parent not in self._fresh:
            again = await self._small_listing(parent) \
                if self._negative_ttl > 0 and len(listing) < SMALL_LISTING else None
            if again is not None:
                entry = again.get(segs[-1])
                if entry is not None:
                    return entry
                raise McpfsError(f"/s3/{path}: no such file", errno=errno.ENOENT)
            info = await self._exists(*self._where(path))
            if info is not None:
                entry = listing[segs[-1]] = (_file_attr(info), info)
                return entry
        raise McpfsError(f"/s3/{path}: no such file", errno=errno.ENOENT)

    async def _probe_bucket(self, name: str) -> None:
        """Return when ``name`` is a bucket we may list: its kept listing says so, else one
        page of it is listed (and kept: lookups in it are then answered). ENOENT for a
        name no bucket can have (no request) or NoSuchBucket, EACCES when denied."""
        _bucket_name(name)
        if self._listings.get(name) is None:
            await self._small_listing(name)

    async def lookup(self, path: str) -> Attr:
        return self._kept(joined(path), *await self._stat(path))

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        folder = joined(path)
        for name, (attr, info) in sorted((await self._listing(path)).items()):
            yield name, self._kept(child_path(folder, name), attr, info)

    async def open_read(self, path: str) -> S3Reader:
        attr, _ = await self._stat(path)
        if attr.is_dir:
            raise McpfsError(f"/s3/{path}: is a directory", errno=errno.EISDIR)
        # one GET: the object as it is now (the ETag the reads are pinned to, the metadata
        # the bridge reads) and its first bytes, so a small read after open costs nothing
        gen = self._gen
        bucket, key = self._where(path)
        if attr.size:
            info, first = await self.backend.open_object(bucket, key, OPEN_READ)
        else:  # empty as far as we know: a range GET of it is an InvalidRange error
            info, first = await self.backend.head(bucket, key), b""
        if gen == self._gen:
            self._heads[joined(path)] = info
        return S3Reader(self.backend, bucket, info, first)

    async def getxattr(self, path: str, name: str) -> bytes:
        values = await self._xattrs(path)
        if name not in values:
            raise McpfsError(f"/s3/{path}: no attribute {name}", errno=errno.ENODATA)
        return values[name].encode()

    async def listxattr(self, path: str) -> list[str]:
        return list(await self._xattrs(path))

    async def _xattrs(self, path: str) -> dict[str, str]:
        attr, _ = await self._stat(path)
        out = {XATTR_PREFIX + "backend": self.name}
        if attr.is_dir:
            return out
        info = await self._head(path)
        out[XATTR_PREFIX + "size"] = str(info.size)
        for field, value in (("etag", info.bare_etag),
                             ("version_id", info.version_id),
                             ("storage_class", info.storage_class),
                             ("content_type", info.content_type)):
            if value:
                out[XATTR_PREFIX + field] = value
        for key, value in sorted(info.metadata.items()):
            out[META_PREFIX + key] = value
        if info.metadata.get(CID_META):
            out[XATTR_PREFIX + "cid"] = info.metadata[CID_META]
        if info.metadata.get(SOURCE_META):
            out[XATTR_PREFIX + "source"] = info.metadata[SOURCE_META]
        return out

    async def statfs(self) -> StatFS:
        return StatFS(blocks=FAKE_BLOCKS, blocks_free=FAKE_BLOCKS, blocks_avail=FAKE_BLOCKS,
                      files=FAKE_BLOCKS, files_free=FAKE_BLOCKS, name_max=1024)

    # ---------------------------------------------------------------- writing
    def resume_state(self, spool: str) -> Any:
        return read_upload_marker(spool)

    async def abandon_resume(self, state: Any) -> None:
        try:
            await self.backend.abandon_upload(state)
        except Exception as exc:  # noqa: BLE001 - a background task: logged, never raised
            log.error("the superseded write's upload may stay open: %s", exc)

    def _object_path(self, path: str, what: str) -> tuple[str, str]:
        segs = split(path)
        if len(segs) < 2:
            raise McpfsError(f"/s3/{path}: {what} needs a path inside a bucket",
                             errno=errno.EISDIR if segs else errno.EPERM)
        return segs[0], "/".join(segs[1:])

    async def _parent_is_dir(self, path: str) -> None:
        parent = "/".join(split(path)[:-1])
        attr, _ = await self._stat(parent)
        if not attr.is_dir:
            raise McpfsError(f"/s3/{parent}: not a directory", errno=errno.ENOTDIR)

    async def open_write(self, path: str, spool: Any, truncate: bool,
                         create: bool = False) -> Writer:
        """EISDIR at /s3 or a bucket, or on a directory; ENOENT/ENOTDIR for a bad parent
        (skipped when ``create``). ``extra["etag"]`` is the object's ETag at open."""
        self._object_path(path, "a file")
        if create:
            return Writer(path, spool, existed=False)
        try:
            attr, _ = await self._stat(path)
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            await self._parent_is_dir(path)
            return Writer(path, spool, existed=False)
        if attr.is_dir:
            raise McpfsError(f"/s3/{path}: is a directory", errno=errno.EISDIR)
        return Writer(path, spool, existed=True, extra={"size": attr.size})

    async def commit(self, writer: Writer) -> Attr:
        """Upload the spool (single PUT or multipart), or, when the bridge found the same
        bytes in an S3 object (``writer.extra["copy_from"]`` = bucket, key, ETag), copy
        that object server-side (CopyObject if its ETag still matches; otherwise the
        upload). ``extra["ipfs_cid"]``/``["source"]`` become the object's
        ``ipfs-cid``/``mcpfs-source`` metadata; ``extra["version"]`` gets the new ETag.
        The caches of the path are dropped whatever the outcome. The spool is left to vfs."""
        bucket, key = self._object_path(writer.path, "a file")
        size = writer.extra.pop("content_size", None)
        if size is None:
            size = await writer.spool.size()
        ctype = mimetypes.guess_type(key)[0]
        inm = self.backend.config.if_none_match and not writer.existed
        meta = {k: v for k, v in ((CID_META, writer.extra.get("ipfs_cid")),
                                  (SOURCE_META, writer.extra.get("source"))) if v}
        mtime_ns = self._upload_mtime(writer, meta)
        copy_from = writer.extra.get("copy_from")
        try:
            info = None
            if copy_from is not None:
                info = await self._copy_if_unchanged(copy_from, bucket, key, size, meta, ctype)
                if info is None and writer.extra.get("copy_only"):  # no spool to upload
                    raise McpfsError(f"s3://{copy_from[0]}/{copy_from[1]} changed during "
                                     "the copy", errno=errno.ESTALE)
                if info is None:
                    writer.extra["route"] = "stream"
            content = writer.spool.content() if info is None else None
            if content is not None:  # a small file: its bytes at hand, no spool file read
                info = await self.backend.put_bytes(
                    bucket, key, content[:size], if_none_match=inm, content_type=ctype,
                    metadata=meta)
            elif info is None:
                info = await self.backend.upload_file(bucket, key, writer.spool.path, size,
                                                      if_none_match=inm, content_type=ctype,
                                                      metadata=meta)
        except BaseException:
            self._invalidate(writer.path)
            raise
        writer.extra["version"] = info.etag
        attr = Attr(FILE, size, mtime_ns=self._uploaded(writer, info, mtime_ns))
        self._wrote(writer.path, attr, dataclasses.replace(info, mtime_ns=attr.mtime_ns))
        return self._kept(joined(writer.path), attr, info)

    async def _copy_if_unchanged(self, copy_from: tuple[str, str, str], bucket: str,
                                 key: str, size: int, meta: dict[str, str],
                                 ctype: str | None) -> ObjectInfo | None:
        """CopyObject from ``copy_from`` when it still has its ETag; None when it changed
        or is gone (the caller uploads instead)."""
        sb, sk, etag = copy_from
        etag = etag if etag.startswith('"') else f'"{etag}"'
        try:
            return await self.backend.copy(sb, sk, bucket, key, size, if_match=etag,
                                           metadata=meta, content_type=ctype)
        except McpfsError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOENT):
                raise
            log.info("s3://%s/%s changed or is gone: uploading s3://%s/%s instead", sb, sk,
                     bucket, key)
            return None

    async def copy_in(self, path: str, copy_from: tuple[str, str, str], size: int,
                      meta: dict[str, str]) -> ObjectInfo | None:
        """A transfer's server-side copy of ``copy_from`` (bucket, key, ETag) to ``path``
        with ``meta`` added; None when the source changed or is gone."""
        bucket, key = self._object_path(path, "a file")
        try:
            info = await self._copy_if_unchanged(copy_from, bucket, key, size, meta,
                                                 mimetypes.guess_type(key)[0])
        except BaseException:
            self._invalidate(path)
            raise
        if info is not None:
            attr = Attr(FILE, size, mtime_ns=time.time_ns())
            self._wrote(path, attr, dataclasses.replace(info, mtime_ns=attr.mtime_ns))
        return info

    async def unlink(self, path: str) -> None:
        bucket, key = self._object_path(path, "unlink")
        attr, _ = await self._stat(path)
        if attr.is_dir:
            raise McpfsError(f"/s3/{path}: is a directory", errno=errno.EISDIR)
        try:
            await self.backend.delete(bucket, key)
        except BaseException:
            self._invalidate(path)
            raise
        self._wrote(path, None)
        self.attrs.removed(joined(path))

    async def mkdir(self, path: str) -> Attr:
        """A ``key/`` marker (a bucket at /s3); EEXIST if the name exists."""
        segs = split(path)
        if not segs:
            raise McpfsError("/s3: exists", errno=errno.EEXIST)
        try:
            await self._stat(path)
            raise McpfsError(f"/s3/{path}: exists", errno=errno.EEXIST)
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
        try:
            if len(segs) == 1:
                await self.backend.create_bucket(segs[0])
            else:
                await self._parent_is_dir(path)
                bucket, key = self._where(path)
                await self.backend.put_bytes(bucket, key + "/", b"")
        except BaseException:
            self._invalidate(path)
            raise
        attr = Attr(DIR, mtime_ns=time.time_ns())
        self._wrote(path, attr)
        return attr

    async def rmdir(self, path: str) -> None:
        """ENOTEMPTY if any key other than the marker is below; deletes the marker (a
        bucket at /s3: DeleteBucket)."""
        segs = split(path)
        if not segs:
            raise McpfsError("/s3: busy", errno=errno.EBUSY)
        attr, _ = await self._stat(path)
        if not attr.is_dir:
            raise McpfsError(f"/s3/{path}: not a directory", errno=errno.ENOTDIR)
        try:
            if len(segs) == 1:
                if await self.backend.first_keys(segs[0], "", 1):
                    raise McpfsError(f"/s3/{path}: bucket not empty", errno=errno.ENOTEMPTY)
                await self.backend.delete_bucket(segs[0])
                return
            bucket, key = self._where(path)
            keys = await self.backend.first_keys(bucket, key + "/", 2)
            if any(k != key + "/" for k in keys):
                raise McpfsError(f"/s3/{path}: directory not empty", errno=errno.ENOTEMPTY)
            await self.backend.delete(bucket, key + "/")  # the marker (no-op without)
        finally:
            self._invalidate(path)

    def refresh(self, path: str) -> None:
        self._invalidate(path)

    async def warm(self) -> None:
        """At start: two cheap requests (ListBuckets unless the buckets are configured, and
        one page of the first bucket's top level), so the first access through the mount
        does not also pay the client's first-call costs (its connection, botocore's lazy
        set-up: about 10 ms of a fresh mount's time to first byte here). The bucket's page
        is kept as its listing (for ``listing_ttl``, when it holds the whole top level):
        the bucket and the names in it are then found without a request of their own. The
        bucket list is not kept: the first ``ls /s3`` asks the server, so a bucket made
        since the start shows. A failure is logged at info level (a denial also gives the
        backend's one warning about credentials, earlier). First, the multipart copies a
        previous daemon left open when it was killed are aborted (s3_copy.py)."""
        await self.backend.abort_interrupted_copies()
        try:
            buckets = [name for name, _ in await self.backend.list_buckets()]
            if buckets:
                await self._small_listing(buckets[0])
        except Exception as exc:  # noqa: BLE001 - only a warm-up: never ends the daemon
            log.info("/s3: the request made at start failed: %s", exc)
        await self.attrs.run()  # then save kept modes and mtimes every few seconds

    async def aclose(self) -> None:
        """Unmount: close the backend's direct-request connections; save kept modes and
        mtimes."""
        try:
            self.backend.aclose()
            await trio.to_thread.run_sync(self.backend.close)
        finally:
            await self.attrs.close()

    def attach_stats(self, stats: Any) -> None:
        """Count the backend's requests and this mount's listing/HEAD cache lookups in
        ``stats`` (a :class:`~mcpfs.stats.Stats`; the daemon calls this once at start)."""
        self.backend.stats = stats


def build_s3_mount(section: dict[str, Any] | None, **backend_kwargs: Any) -> S3Mount:
    """The /s3 subtree from an ``[s3]`` config section (blocking: boto3 reads its config)."""
    from ..backends.s3 import S3Config
    from ..backends.s3_copy import COPIES_DIR
    from ..config import paths
    state = paths().state_dir
    return S3Mount(S3Backend(S3Config.from_section(section), copy_markers=state / COPIES_DIR,
                             **backend_kwargs), state / ATTRS_DB)


__all__ = ["S3Mount", "S3Reader", "build_s3_mount"]
