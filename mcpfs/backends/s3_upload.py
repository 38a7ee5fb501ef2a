"""Uploads of local files to S3: a single PutObject, or a multipart upload that resumes.

Mixed into :class:`~mcpfs.backends.s3.S3Backend` (it uses the backend's ``client``,
``config``, ``call``, ``direct_first``, ``_conditional``, ``_direct`` and ``_direct_to``;
every request is named for the stats: "put", "create_upload", "upload_part", "complete",
"abort", "list_parts", bodies counted as bytes out). A multipart upload holds at most
``part_concurrency`` parts in memory and is aborted (shielded from cancellation) on any
failure or cancellation, so no partial object ever becomes visible. While it runs, its id is
kept in a small JSON file beside the spool (``<spool>.s3upload``); a process killed
mid-upload leaves that file, and the retried commit resumes the same upload: parts already
on the server whose size and MD5 match are kept, the rest are sent. The file is written
once before CreateMultipartUpload too (without an id, with the time): a process killed
between that request and recording its answer leaves an upload nobody knows the id of, and
the retried commit aborts the open uploads of that key begun within 5 minutes of that time
(found with ListMultipartUploads; "list_uploads") instead of leaving it to be billed until a
lifecycle rule removes it.

A conditional write (``If-None-Match: *``) answered 412 is EEXIST, unless botocore had sent
it before (it retries a request whose response was lost, and the retry of a PUT whose first
attempt succeeded meets that attempt's object) and the object now at the key is the one just
sent: same size, and the ETag our bytes give (their MD5, or the multipart form "MD5 of the
parts' MD5s-N"). That costs one HEAD and one MD5 of the spool, on that path only. A 412 at
the first attempt is always a conflict, whatever the object there holds.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from ..errors import McpfsError
from .s3_errors import Conflict
from .s3_defaults import put_kwargs

log = logging.getLogger("mcpfs.backends.s3")

MiB: Final = 1 << 20
MAX_PARTS: Final = 10_000  # S3's limit on parts per multipart upload
UPLOAD_SUFFIX: Final = ".s3upload"  # beside a spool: its multipart upload in flight (JSON)
CLOCK_SLACK: Final = 300.0  # seconds: a server's clock may be this far from ours


@dataclass
class ObjectInfo:
    """What S3 says of one object (from HEAD, or the subset a listing carries)."""

    key: str
    size: int
    mtime_ns: int
    etag: str | None = None
    version_id: str | None = None
    storage_class: str | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def bare_etag(self) -> str | None:
        """The ETag without the quotes listings, HEADs and copies put around it."""
        return self.etag.strip('"') if self.etag else None


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first McpfsError leaf of an exception group (else its first leaf)."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)
    walk(group)
    return next((e for e in leaves if isinstance(e, McpfsError)), leaves[0])


class MultipartUploads:
    """The upload half of S3Backend (see the module docstring)."""

    async def upload_file(self, bucket: str, key: str, path: str, size: int, *,
                          if_none_match: bool = False, content_type: str | None = None,
                          metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Make the local file ``path`` (``size`` bytes) the object: a single PutObject up
        to ``multipart_threshold``, a multipart upload above it. ``metadata``: the
        object's ``x-amz-meta-*``."""
        if size > self.config.multipart_threshold:
            return await self._multipart(bucket, key, path, size, if_none_match, content_type,
                                         metadata)
        return await self._put_object(bucket, key, lambda: open(path, "rb"), size,
                                      if_none_match, content_type, metadata,
                                      functools.partial(_md5_range, path, 0, size))

    async def _put_object(self, bucket: str, key: str, open_body: Callable[[], Any],
                          size: int, if_none_match: bool, content_type: str | None,
                          metadata: dict[str, str] | None, etag: Callable[[], str],
                          data: bytes | None = None) -> ObjectInfo:
        """One PutObject; ``open_body()`` gives a context manager yielding the body (opened
        in the worker thread, closed after the request); ``etag()`` the body's MD5 (hex),
        asked only after a 412 (see the module docstring). ``data``: the body itself, when
        in memory: then sent from the trio thread once the bucket's direct target is known
        (s3_direct, s3_wire)."""
        what = f"put s3://{bucket}/{key}"

        def work(inm: bool) -> Any:
            target = self._direct_to(bucket, size)
            try:
                with open_body() as body:
                    if target is not None:
                        resp = self._direct.put(bucket, target, key, body, size, inm,
                                                content_type, metadata)
                        if resp is not None:
                            return resp
                        if hasattr(body, "seek"):  # (None: boto3 must send it)
                            body.seek(0)
                    return self.client.put_object(
                        **put_kwargs(bucket, key, body, size, inm, content_type, metadata))
            except OSError as exc:  # the body (a spool) could not be read
                raise McpfsError(f"put s3://{bucket}/{key}: cannot read the spool: "
                                 f"{exc.strerror or exc}", errno=exc.errno or errno.EIO) \
                    from None

        def attempt(inm: bool) -> Awaitable[Any]:
            direct = None if data is None else lambda target: self._direct.aput(
                bucket, target, key, data, inm, content_type, metadata)
            return self.direct_first(bucket, size, direct, lambda: work(inm), what, "put",
                                     bytes_out=size)
        resp = await self._unless_ours(lambda: self._conditional(attempt, if_none_match),
                                       bucket, key, size, etag)
        return ObjectInfo(key, size, 0, resp.get("ETag"), resp.get("VersionId"))

    async def _unless_ours(self, attempt: Callable[[], Awaitable[Any]], bucket: str, key: str,
                           size: int, etag: Callable[[], str]) -> Any:
        """``attempt()``, a conditional write; its 412 after a retry
        (s3_errors.Conflict.retried) becomes the response of a write that succeeded when
        the object at ``key`` is ours: ``size`` bytes and the ETag ``etag()`` (run in a
        worker thread) gives. Anything else stays EEXIST."""
        try:
            return await attempt()
        except Conflict as exc:
            if not exc.retried:
                raise
            conflict = exc
        what = f"s3://{bucket}/{key}"
        try:
            there = await self.head(bucket, key)
        except McpfsError:
            raise conflict from None
        try:  # (a part ETag that is not an MD5, a spool gone: not provably ours)
            want = await trio.to_thread.run_sync(etag, limiter=self.limiter)
        except (ValueError, OSError):
            raise conflict from None
        if there.size != size or there.bare_etag != want:
            raise conflict
        log.info("%s: a conditional write answered 412, but the object there is the one "
                 "sent (a retried request met its first attempt's write)", what)
        return {"ETag": there.etag, "VersionId": there.version_id}

    def part_size_for(self, size: int, minimum: int | None = None) -> int:
        """``minimum`` (default ``part_size``), grown (in MiB steps) so the upload needs at
        most 10,000 parts."""
        need = -(-size // MAX_PARTS)
        return max(self.config.part_size if minimum is None else minimum,
                   -(-need // MiB) * MiB)

    @staticmethod
    async def _all_parts(parts: list[Callable[[], Any]]) -> None:
        """Run ``parts`` (async callables) concurrently; the first failure is raised as
        itself (not a group), the other parts cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                for part in parts:
                    nursery.start_soon(part)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    def _upload_part_sync(self, bucket: str, key: str, upload_id: str, number: int,
                          path: str, offset: int, length: int) -> str:
        """Read one part from ``path`` and upload it; returns its ETag (worker thread)."""
        with open(path, "rb") as fh:
            data = os.pread(fh.fileno(), length, offset)
        if len(data) != length:
            raise McpfsError(f"spool {path} shrank during upload", errno=errno.EIO)
        return self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                       PartNumber=number, Body=data)["ETag"]

    async def _multipart(self, bucket: str, key: str, path: str, size: int,
                         if_none_match: bool, content_type: str | None,
                         metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Upload ``path`` in parts. The upload id is kept beside the file
        (``path + UPLOAD_SUFFIX``) while it is in flight, so a commit retried after a crash
        (journal recovery) resumes it: parts already on the server whose size and MD5 match
        are kept, the rest are sent, then the upload is completed."""
        what = f"upload s3://{bucket}/{key}"
        part = self.part_size_for(size)
        marker = path + UPLOAD_SUFFIX
        etags: dict[int, str] = {}
        upload_id = await self._resume(marker, bucket, key, size, part, etags)
        if upload_id is None:
            layout = {"bucket": bucket, "key": key, "size": size, "part_size": part}
            await trio.to_thread.run_sync(_write_marker, marker, {**layout,
                                                                  "started": time.time()})
            kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if content_type:
                kwargs["ContentType"] = content_type
            if metadata:
                kwargs["Metadata"] = metadata
            upload_id = (await self.call(
                lambda: self.client.create_multipart_upload(**kwargs), what,
                "create_upload"))["UploadId"]
            await trio.to_thread.run_sync(_write_marker, marker, {**layout,
                                                                  "upload_id": upload_id})
        kept = len(etags)
        parts = trio.CapacityLimiter(self.config.part_concurrency)

        async def one(number: int, offset: int) -> None:
            async with parts:
                length = min(part, size - offset)
                etags[number] = await self.call(
                    lambda: self._upload_part_sync(bucket, key, upload_id, number, path,
                                                   offset, length), f"{what} part {number}",
                    "upload_part", bytes_out=length)
        try:
            await self._all_parts([functools.partial(one, i + 1, offset)
                                   for i, offset in enumerate(range(0, size, part))
                                   if i + 1 not in etags])

            def complete(inm: bool) -> Any:
                extra = {"IfNoneMatch": "*"} if inm else {}
                return self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, **extra,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]}
                                               for n in sorted(etags)]})
            resp = await self._unless_ours(
                lambda: self._conditional(
                    lambda inm: self.call(lambda: complete(inm), what, "complete"),
                    if_none_match),
                bucket, key, size, functools.partial(multipart_etag, etags))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort(bucket, key, upload_id, what)
                await trio.to_thread.run_sync(_remove, marker)
            raise
        await trio.to_thread.run_sync(_remove, marker)
        log.info("%s: %d parts of %d MiB%s", what, len(etags), part // MiB,
                 f" ({kept} resumed)" if kept else "")
        return ObjectInfo(key, size, 0, resp.get("ETag"), resp.get("VersionId"))

    async def _abort(self, bucket: str, key: str, upload_id: str, what: str) -> bool:
        """Abort one upload; True when it is gone (aborted now, or before: ENOENT). A
        failure is logged, not raised."""
        try:
            await self.call(lambda: self.client.abort_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id), f"abort {what}", "abort")
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                log.error("%s: abort failed (%s); the upload %s stays until a lifecycle "
                          "rule removes it", what, exc, upload_id)
                return False
        return True

    async def abandon_upload(self, state: dict[str, Any]) -> None:
        """Abort the multipart upload a removed spool's marker names (a kept write that a
        later one superseded before its upload resumed): not left open, billed, until a
        lifecycle rule. A marker without an id (killed before recording it) is left: its
        key's uploads begun near that time may include the later write's own. Logged,
        never raised."""
        bucket, key, upload_id = state.get("bucket"), state.get("key"), state.get("upload_id")
        if not (isinstance(bucket, str) and isinstance(key, str) and bucket and key):
            return
        what = f"upload s3://{bucket}/{key}"
        if not upload_id:
            log.warning("%s: the superseded write's upload may stay open (its id was never "
                        "recorded)", what)
        elif await self._abort(bucket, key, str(upload_id), what):
            log.info("%s: aborted the superseded write's upload %s", what, upload_id)

    async def _abort_unrecorded(self, state: dict[str, Any]) -> bool:
        """Abort the open uploads of the marker's key begun within ``CLOCK_SLACK`` of the
        time it was written: the one whose id a killed process did not record (the request
        follows the marker at once; an upload begun much later is someone else's). False
        when the listing or an abort failed (logged, never raised)."""
        bucket, key, started = state.get("bucket"), state.get("key"), state.get("started")
        if not bucket or not key or not isinstance(started, (int, float)):
            return True
        what = f"upload s3://{bucket}/{key}"

        def listed() -> list[dict[str, Any]]:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=bucket, Prefix=key)
            return [u for page in pages for u in page.get("Uploads", [])
                    if u.get("Key") == key and u.get("Initiated") is not None
                    and abs(u["Initiated"].timestamp() - started) <= CLOCK_SLACK]
        try:
            found = await self.call(listed, f"list uploads of {what}", "list_uploads")
        except McpfsError as exc:
            log.warning("%s: an upload begun before the crash may stay open (%s)", what, exc)
            return False
        done = True
        for upload in found:
            log.info("%s: aborting upload %s begun before the crash", what,
                     upload.get("UploadId"))
            done = await self._abort(bucket, key, upload.get("UploadId", ""), what) and done
        return done

    async def _resume(self, marker: str, bucket: str, key: str, size: int, part: int,
                      etags: dict[int, str]) -> str | None:
        """The upload id recorded in ``marker`` if it is still open for the same object and
        layout, with the parts to keep put in ``etags``; else None (a stale upload is
        aborted, the marker removed)."""
        state = await trio.to_thread.run_sync(_read_marker, marker)
        if state is None:
            return None
        upload_id = state.get("upload_id", "")
        what = f"upload s3://{bucket}/{key}"
        if not upload_id:  # killed before its id was recorded: maybe an upload nobody knows
            await self._abort_unrecorded(state)
            await trio.to_thread.run_sync(_remove, marker)
            return None
        if (state.get("bucket"), state.get("key"), state.get("size"),
                state.get("part_size")) != (bucket, key, size, part):
            if state.get("bucket") and state.get("key"):
                await self._abort(state["bucket"], state["key"], upload_id, what)
            await trio.to_thread.run_sync(_remove, marker)
            return None

        def listed() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=bucket, Key=key, UploadId=upload_id)
            for page in pages:
                out.extend(page.get("Parts", []))
            return out
        try:
            found = await self.call(listed, f"list parts of {what}", "list_parts")
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            await trio.to_thread.run_sync(_remove, marker)  # completed or aborted meanwhile
            return None
        path = marker[:-len(UPLOAD_SUFFIX)]
        for p in found:
            number, etag = p.get("PartNumber", 0), str(p.get("ETag", ""))
            offset = (number - 1) * part
            length = min(part, size - offset)
            if not 0 <= offset < size or p.get("Size") != length:
                continue
            digest = await trio.to_thread.run_sync(_md5_range, path, offset, length)
            if etag.strip('"') == digest:
                etags[number] = etag
        log.info("%s: resuming upload, %d of %d parts already on the server", what,
                 len(etags), -(-size // part))
        return upload_id


def _write_marker(marker: str, state: dict[str, Any]) -> None:
    tmp = marker + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, marker)


def read_upload_marker(spool: str) -> dict[str, Any] | None:
    """The multipart state kept beside ``spool`` (its ``UPLOAD_SUFFIX`` file), or None."""
    return _read_marker(spool + UPLOAD_SUFFIX)


def _read_marker(marker: str) -> dict[str, Any] | None:
    try:
        with open(marker) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def multipart_etag(etags: dict[int, str]) -> str:
    """The ETag S3 gives the object of a multipart upload with these parts (number ->
    part ETag): the MD5 of the parts' binary MD5s, "-", the number of parts."""
    joined = b"".join(bytes.fromhex(etags[n].strip('"')) for n in sorted(etags))
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(etags)}"


def _md5_range(path: str, offset: int, length: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        fh.seek(offset)
        while length > 0:
            chunk = fh.read(min(length, MiB))
            if not chunk:
                break
            digest.update(chunk)
            length -= len(chunk)
    return digest.hexdigest()
