"""S3 client: boto3 in worker threads (small requests direct: s3_direct.py), every error
mapped once to an McpfsError.

Configuration comes from the ``[s3]`` section (:class:`S3Config`); credentials, and the
endpoint/region when the section leaves them out, come from boto3's own chain (environment,
``~/.aws``, profiles, ``AWS_ENDPOINT_URL``, ``AWS_REGION``), never from mcpfs's config. No
call is made at construction, so wrong credentials do not stop a mount: the first request
fails with EACCES and one log line. ``no_sign_request``: requests are not signed (public
buckets, the AWS CLI's ``--no-sign-request``) and no credentials are read;
``requester_pays``, ``sse``, ``sse_kms_key_id``: s3_defaults.RequestDefaults.

Errors: every botocore error goes through :func:`.s3_errors.map_error` (the only
translation: ENOENT, EACCES, EEXIST, ENOTEMPTY, EINVAL, else EIO; see there); throttling and
5xx are retried by botocore (``retries`` config, ``retry_mode``/``max_attempts``) first.
Messages carry the operation, bucket/key and the S3 error code only, never the server's
text (which may quote request headers).

Resources: one boto3 client (thread-safe, a urllib3 pool of ``threads`` connections) shared
by all calls; every call runs in ``trio.to_thread.run_sync``, or as a direct request from
the trio thread, under one CapacityLimiter (``limiter``), so at most ``threads`` requests
are in flight (s3_calls.py). A multipart upload holds at
most ``part_concurrency`` parts in memory; it is aborted (shielded from cancellation) on any
failure or cancellation, so no partial object ever becomes visible. While it runs, its id
is kept in a small JSON file beside the spool (``<spool>.s3upload``); a process killed
mid-upload leaves that file, and the retried commit (journal recovery at the next start)
resumes the same upload: parts already on the server whose size and MD5 match are kept.
An upload whose id never reached that file (killed between CreateMultipartUpload and the
write) stays on the server until a lifecycle rule removes it; it is never completed.

Endpoint and region: boto3's chain (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
``AWS_DEFAULT_REGION``, ~/.aws) unless the section sets them; ``AWS_REGION`` is used when
nothing else names a region. With ``addressing_style = "auto"`` an endpoint that is not
AWS's gets path-style requests (what MinIO, SeaweedFS and Ceph serve by default).

Statistics: with a :class:`~mcpfs.stats.Stats` in ``stats`` (None by default; the mount's
``attach_stats`` sets it), :meth:`S3Backend.call` counts every request as
``stats.backend("s3", op, ...)``: the short op name its call site gives ("get", "head",
"list", "put", "upload_part", "complete", "copy", "delete"...), the wall time from the call
to the answer (waiting for a worker thread and botocore's retries included), an error when
it raised, bytes in (GetObject bodies) and out (PutObject and UploadPart bodies) when it
succeeded. A paginated listing done in one worker call counts once. CopyObject is
server-side: no byte goes through mcpfs, so it counts 0 bytes out.

Copies are server-side (s3_copy.py): CopyObject, or a multipart copy above 5 GiB.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.config
import botocore.exceptions
import botocore.utils
import trio

from ..errors import McpfsError
from .s3_copy import MAX_COPY_SIZE, ServerSideCopies, left_markers  # noqa: F401
from .s3_calls import STATS_NAME, RequestRuns
from .s3_defaults import RequestDefaults
from .s3_direct import DirectRequests
from .s3_errors import _Denied, map_error  # noqa: F401  (map_error: re-exported)
from .s3_upload import (  # noqa: F401  (re-exported: the mount and tests use them)
    UPLOAD_SUFFIX, MiB, MultipartUploads, ObjectInfo, first_error)

if TYPE_CHECKING:
    from ..stats import Stats

log = logging.getLogger("mcpfs.backends.s3")

DELETE_BATCH: Final = 1000  # keys per DeleteObjects request (S3's limit)

_ALLOWED_KEYS = {"endpoint_url", "region", "addressing_style", "buckets", "profile",
                 "max_attempts", "connect_timeout", "read_timeout", "retry_mode", "threads",
                 "part_size", "multipart_threshold", "part_concurrency", "if_none_match",
                 "listing_ttl", "attr_ttl", "write_back", "negative_ttl", "direct_requests",
                 "no_sign_request", "requester_pays", "sse", "sse_kms_key_id"}


@dataclass(frozen=True)
class S3Config:
    """The ``[s3]`` section. ``None`` endpoint/region: boto3 decides (env, ~/.aws)."""

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"  # "auto", "path" (MinIO, SeaweedFS) or "virtual"
    buckets: tuple[str, ...] | None = None  # shown at /s3 instead of ListBuckets
    profile: str | None = None
    max_attempts: int = 5  # tries in all, first included (throttling, 5xx, connection)
    connect_timeout: float = 10.0  # seconds to connect (rclone's --contimeout)
    read_timeout: float = 60.0  # seconds a request may wait for the server (--timeout)
    retry_mode: str = "standard"  # or "adaptive" (client-side rate limiting)
    threads: int = 32  # concurrent S3 requests (limiter and connection pool)
    part_size: int = 8 * MiB
    multipart_threshold: int = 8 * MiB  # above this a commit is a multipart upload
    part_concurrency: int = 8  # parts of one upload in flight (and in memory)
    if_none_match: bool = True  # new files are PUT with If-None-Match: *
    listing_ttl: float = 30.0  # seconds a cached listing is used (mounts/s3.py)
    attr_ttl: float = 1.0  # seconds a HEAD result is used (mounts/s3.py)
    write_back: bool = False  # close() returns once the file is journaled (vfs/write_back.py)
    negative_ttl: float = 0.0  # seconds a listing says "no such name" without a request
    direct_requests: bool = True  # small GETs, PUTs, HEADs: one signed request (s3_direct)
    no_sign_request: bool = False  # anonymous requests (public buckets; the AWS CLI's flag)
    requester_pays: bool = False  # we pay for requests to requester-pays buckets
    sse: str | None = None  # server-side encryption of what we write: AES256, aws:kms...
    sse_kms_key_id: str | None = None  # the KMS key for sse = "aws:kms"

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> S3Config:
        """Build from a config dict; unknown keys (credentials included) are ignored with a
        warning naming the key only."""
        section = dict(section or {})
        for key in sorted(set(section) - _ALLOWED_KEYS):
            log.warning("[s3] %s: unknown key ignored (credentials come from boto3's chain)",
                        key)
            section.pop(key)
        if section.get("buckets") is not None:
            section["buckets"] = tuple(section["buckets"])
        if section.get("sse") not in (None, "AES256", "aws:kms", "aws:kms:dsse"):
            raise McpfsError("[s3] sse must be AES256, aws:kms or aws:kms:dsse",
                             errno=errno.EINVAL)
        if section.get("sse_kms_key_id") and not str(section.get("sse", "")).startswith(
                "aws:kms"):
            raise McpfsError("[s3] sse_kms_key_id needs sse = \"aws:kms\"", errno=errno.EINVAL)
        if section.get("addressing_style", "auto") not in ("auto", "path", "virtual"):
            raise McpfsError("[s3] addressing_style must be auto, path or virtual",
                             errno=errno.EINVAL)
        return cls(**section)


def enabled(section: dict[str, Any] | None) -> bool:
    """Whether ``/s3`` should appear: an ``[s3]`` section, or credentials boto3 can find
    (blocking: reads ~/.aws; call at startup or in a thread)."""
    if section:
        return True
    try:
        return boto3.session.Session().get_credentials() is not None
    except botocore.exceptions.BotoCoreError:
        return False


def _ns(dt: Any) -> int:
    return int(dt.timestamp() * 1e9) if dt is not None else 0


def fast_timestamp(value: Any) -> datetime.datetime:
    """botocore's timestamp parser for our client: ISO 8601 (every ``LastModified`` of a
    listing) through ``datetime.fromisoformat`` in ~0.2 us, instead of dateutil's ~40 us (a
    10,000-key listing spent 0.4 s there); anything else (HEAD's RFC 822 dates, epochs)
    through botocore's own parser."""
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:  # (a zone-less time is botocore's to read)
                return parsed
    return botocore.utils.parse_timestamp(value)


class S3Backend(RequestRuns, MultipartUploads, ServerSideCopies):
    """Async S3 operations over one boto3 client; see the module docstring.

    Concurrency: the client is thread-safe and shared; ``limiter`` bounds worker threads.
    ``_inm_ok`` (If-None-Match supported) is written once from a worker thread (a plain
    bool store, atomic under the GIL)."""

    def __init__(self, config: S3Config | None = None, *, session: Any = None,
                 limiter: trio.CapacityLimiter | None = None,
                 copy_markers: Path | str | None = None) -> None:
        """Build the client (blocking only as far as boto3 reads its config files and
        ``copy_markers`` is listed). ``session``: a ``boto3.session.Session`` (tests pass
        explicit credentials). ``copy_markers``: the folder where multipart copies in
        flight are recorded (s3_copy.py; None: they are not)."""
        self.copy_markers = Path(copy_markers) if copy_markers is not None else None
        self.left_copies = left_markers(self.copy_markers)
        self.left_lock = trio.Lock()  # one pass over them; multipart copies wait for it
        self.config = config or S3Config()
        cfg = self.config
        session = session or boto3.session.Session(profile_name=cfg.profile)
        # boto3 reads AWS_DEFAULT_REGION; AWS_REGION (the other SDKs' and Lambda's name) is
        # used when neither the section nor boto3's chain names a region
        region = cfg.region or (None if session.region_name else os.environ.get("AWS_REGION"))
        session._session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=fast_timestamp)  # before the client is made

        def make(style: str) -> Any:
            return session.client(
                "s3", endpoint_url=cfg.endpoint_url, region_name=region,
                config=botocore.config.Config(
                    retries={"mode": cfg.retry_mode, "total_max_attempts": cfg.max_attempts},
                    s3={"addressing_style": style},
                    max_pool_connections=max(cfg.threads, 10),
                    connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
                    **({"signature_version": botocore.UNSIGNED}
                       if cfg.no_sign_request else {})))
        self.client = make(cfg.addressing_style)
        endpoint = self.client.meta.endpoint_url or ""
        style = cfg.addressing_style
        if cfg.addressing_style == "auto" and not _is_aws(endpoint):
            # an endpoint from AWS_ENDPOINT_URL or ~/.aws (MinIO, SeaweedFS, Ceph...): these
            # serve path-style requests, rarely bucket.<host> names (rclone does the same)
            style = "path"
            self.client = make(style)
        defaults = RequestDefaults(cfg.requester_pays, cfg.sse, cfg.sse_kms_key_id)
        defaults.install(self.client)
        # small GETs and PUTs, and HEADs, skip botocore's pipeline when requests are signed
        credentials = None if cfg.no_sign_request else session.get_credentials()
        self._direct = DirectRequests(
            self.client, credentials, defaults, cfg.max_attempts, cfg.connect_timeout,
            cfg.read_timeout, session._session.get_config_variable("ca_bundle")) \
            if cfg.direct_requests and credentials is not None else None
        self.limiter = limiter or trio.CapacityLimiter(cfg.threads)
        self._denied = _Denied(unsigned=cfg.no_sign_request)
        self._inm_ok = cfg.if_none_match
        self.stats: Stats | None = None  # request counters (see the module docstring)

    def close(self) -> None:
        """Close the direct requests' connections (blocking: at unmount, in a thread)."""
        if self._direct is not None:
            self._direct.close()

    def aclose(self) -> None:
        """Close the direct requests' trio-thread connections (at unmount, trio thread)."""
        if self._direct is not None:
            self._direct.aclose()

    def note_cache(self, hit: bool) -> None:
        """Count one lookup of an S3 cache (the mount's listing/HEAD caches) when stats
        are attached; a None check otherwise."""
        if self.stats is not None:
            self.stats.backend_cache(STATS_NAME, hit)

    # ---------------------------------------------------------------- buckets
    async def list_buckets(self) -> list[tuple[str, int]]:
        """(name, creation time ns); the configured ``buckets`` when set (no request)."""
        if self.config.buckets is not None:
            return [(b, 0) for b in self.config.buckets]
        resp = await self.call(self.client.list_buckets, "list buckets", "list_buckets")
        return [(b["Name"], _ns(b.get("CreationDate"))) for b in resp.get("Buckets", [])]

    async def head_bucket(self, bucket: str) -> None:
        await self.call(lambda: self.client.head_bucket(Bucket=bucket), f"bucket {bucket}",
                        "head_bucket")

    async def create_bucket(self, bucket: str) -> None:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1" and self.config.endpoint_url is None:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        await self.call(lambda: self.client.create_bucket(**kwargs), f"create bucket {bucket}",
                        "create_bucket")

    async def delete_bucket(self, bucket: str) -> None:
        await self.call(lambda: self.client.delete_bucket(Bucket=bucket),
                        f"delete bucket {bucket}", "delete_bucket")

    # ---------------------------------------------------------------- listing
    async def list_dir(self, bucket: str, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        """Common prefixes and objects directly under ``prefix`` (delimiter "/"), every page
        (ListObjectsV2 continuation) fetched in one worker thread."""
        def work() -> tuple[list[str], list[ObjectInfo]]:
            prefixes: list[str] = []
            objects: list[ObjectInfo] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
                objects.extend(_listed(o) for o in page.get("Contents", []))
            return prefixes, objects
        return await self.call(work, f"list s3://{bucket}/{prefix}", "list")

    async def list_dir_page(self, bucket: str, prefix: str, max_keys: int
                            ) -> tuple[list[str], list[ObjectInfo], bool]:
        """The first page (at most ``max_keys`` entries) of :meth:`list_dir`, and whether
        there is more."""
        def work() -> tuple[list[str], list[ObjectInfo], bool]:
            page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/",
                                               MaxKeys=max_keys)
            return ([p["Prefix"] for p in page.get("CommonPrefixes", [])],
                    [_listed(o) for o in page.get("Contents", [])],
                    bool(page.get("IsTruncated")))
        return await self.call(work, f"list s3://{bucket}/{prefix}", "list")

    async def walk(self, bucket: str, prefix: str, page_size: int = 1000
                   ) -> AsyncIterator[list[ObjectInfo]]:
        """Every object under ``prefix`` (no delimiter), one page per worker-thread call."""
        token: str | None = None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self.call(lambda: self.client.list_objects_v2(**kwargs),
                                   f"list s3://{bucket}/{prefix}", "list")
            yield [_listed(o) for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def first_keys(self, bucket: str, prefix: str, n: int = 2) -> list[str]:
        """Up to ``n`` keys under ``prefix`` (existence and emptiness checks)."""
        page = await self.call(lambda: self.client.list_objects_v2(
            Bucket=bucket, Prefix=prefix, MaxKeys=n), f"list s3://{bucket}/{prefix}", "list")
        return [o["Key"] for o in page.get("Contents", [])]

    async def list_multipart_uploads(self, bucket: str) -> list[tuple[str, str]]:
        """(key, upload id) of the bucket's unfinished multipart uploads (first page)."""
        resp = await self.call(lambda: self.client.list_multipart_uploads(Bucket=bucket),
                               f"list uploads s3://{bucket}", "list_uploads")
        return [(u["Key"], u["UploadId"]) for u in resp.get("Uploads", [])]

    # ---------------------------------------------------------------- objects
    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """HeadObject: a direct request from the trio thread once the bucket's target is
        known, else (or for a bucket that turned out elsewhere) in a worker thread."""
        def work() -> dict[str, Any]:
            target = self._direct_to(bucket)
            resp = self._direct.head(bucket, target, key) if target is not None else None
            return resp or self.client.head_object(Bucket=bucket, Key=key)
        return _headed(key, await self.direct_first(
            bucket, 0, lambda target: self._direct.ahead(bucket, target, key), work,
            f"head s3://{bucket}/{key}", "head"))

    async def open_object(self, bucket: str, key: str, first: int
                          ) -> tuple[ObjectInfo, bytes]:
        """What a HEAD says of the object and its first ``first`` bytes (fewer when it is
        shorter), in one ranged GET: an open that reads next costs one request, not two.
        An empty object (a range past its end is InvalidRange) costs a HEAD instead."""
        def work() -> tuple[ObjectInfo, bytes]:
            resp = self._get_sync(bucket, key, 0, first - 1)
            data = resp["Body"]
            total = str(resp.get("ContentRange") or "").rpartition("/")[2]
            size = int(total) if total.isdigit() else len(data)  # no range: the whole body
            return _headed(key, dict(resp, ContentLength=size)), data
        try:
            return await self.call(work, f"read s3://{bucket}/{key}", "get",
                                   bytes_in=lambda r: len(r[1]))
        except McpfsError as exc:
            if exc.errno != errno.EINVAL:
                raise
        return await self.head(bucket, key), b""

    async def get_range(self, bucket: str, key: str, start: int, end: int,
                        etag: str | None = None) -> bytes:
        """Bytes ``[start, end)`` of the object (shorter at its end; b"" past it). With
        ``etag``, an object replaced since it was opened is ESTALE."""
        if end <= start:
            return b""

        try:
            return await self.call(
                lambda: self._get_sync(bucket, key, start, end - 1, etag)["Body"],
                f"read s3://{bucket}/{key}", "get", bytes_in=len)
        except McpfsError as exc:
            if exc.errno == errno.EINVAL:  # InvalidRange: start at or past the end
                return b""
            if exc.errno == errno.EEXIST:  # If-Match failed
                raise McpfsError(f"s3://{bucket}/{key} changed since it was opened",
                                 errno=errno.ESTALE) from None
            raise

    def _get_sync(self, bucket: str, key: str, first: int, last: int,
                  if_match: str | None = None) -> dict[str, Any]:
        """GetObject of bytes ``first..last`` (inclusive; a worker thread): one direct
        request up to ``DIRECT_MAX`` bytes (s3_direct), else boto3's; the ``Body`` read
        whole, as bytes, either way, and only the bytes asked for (with the object's size
        in ContentRange) from a server that answers a range with the whole object."""
        target = self._direct_to(bucket, last - first + 1)
        resp = self._direct.get(bucket, target, key, first, last, if_match) \
            if target is not None else None
        if resp is None:
            kwargs = {"Bucket": bucket, "Key": key, "Range": f"bytes={first}-{last}"}
            if if_match:
                kwargs["IfMatch"] = if_match
            resp = self.client.get_object(**kwargs)
            body = resp["Body"]
            try:
                resp = dict(resp, Body=body.read())
            finally:
                body.close()
        if not resp.get("ContentRange"):  # a server that ignores Range: the whole object
            whole = resp["Body"]
            resp["Body"] = whole[first:last + 1]
            resp["ContentRange"] = f"bytes {first}-{last}/{len(whole)}"
        return resp

    async def put_bytes(self, bucket: str, key: str, data: bytes, *,
                        if_none_match: bool = False, content_type: str | None = None,
                        metadata: dict[str, str] | None = None) -> ObjectInfo:
        """One PutObject of ``data`` (markers, small files committed from memory)."""
        return await self._put_object(
            bucket, key, lambda: nullcontext(data), len(data), if_none_match, content_type,
            metadata, lambda: hashlib.md5(data, usedforsecurity=False).hexdigest(), data)

    async def delete(self, bucket: str, key: str) -> None:
        await self.call(lambda: self.client.delete_object(Bucket=bucket, Key=key),
                        f"delete s3://{bucket}/{key}", "delete")

    async def delete_many(self, bucket: str, keys: list[str]) -> None:
        """DeleteObjects in batches of 1000; any per-key error is EIO naming the count."""
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            resp = await self.call(lambda: self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}),
                f"delete in s3://{bucket}", "delete_many")
            if resp.get("Errors"):
                raise McpfsError(f"delete in s3://{bucket}: {len(resp['Errors'])} keys "
                                 f"failed ({resp['Errors'][0].get('Code')})", errno=errno.EIO)


def _is_aws(endpoint: str) -> bool:
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _listed(o: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(o["Key"], o.get("Size", 0), _ns(o.get("LastModified")), o.get("ETag"),
                      storage_class=o.get("StorageClass"))


def _headed(key: str, r: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(key, r.get("ContentLength", 0), _ns(r.get("LastModified")),
                      r.get("ETag"), r.get("VersionId"), r.get("StorageClass") or "STANDARD",
                      r.get("ContentType"),  # (names as S3 and the direct HEAD give them)
                      {k.lower(): v for k, v in (r.get("Metadata") or {}).items()})


__all__ = ["S3Backend", "S3Config", "ObjectInfo", "enabled", "map_error", "first_error",
           "MAX_COPY_SIZE"]
