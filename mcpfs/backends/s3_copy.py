"""Server-side copies: one CopyObject, or a multipart copy above CopyObject's 5 GiB limit.

Mixed into :class:`~mcpfs.backends.s3.S3Backend` (it uses the backend's ``client``,
``config``, ``call``, ``head`` and the multipart helpers of s3_upload.py: ``part_size_for``,
``_all_parts``, ``_abort``). Nothing goes
through mcpfs: the stats count the requests ("copy", "create_upload", "upload_part_copy",
"complete", "abort") with 0 bytes out.

An object above ``MAX_COPY_SIZE`` is copied the way the AWS CLI does it: CreateMultipartUpload
with the metadata the copy should have (the source's, plus ``metadata``, taken by one
HEAD), ranged UploadPartCopy requests, ``part_concurrency`` at a time, each guarded by
``CopySourceIfMatch`` when given, then CompleteMultipartUpload. Any failure or cancellation
aborts the upload (shielded), so no partial object ever appears.

Errors: ENOENT (the source is gone), EEXIST (``if_match`` no longer holds), others as
``map_error`` gives them.
"""

from __future__ import annotations

import errno
import functools
from typing import Any, Final

import trio

from ..errors import McpfsError
from .s3_upload import MiB, ObjectInfo

MAX_COPY_SIZE: Final = 5 * 1024 * MiB  # CopyObject's single-request limit (and a part's)
COPY_PART_MIN: Final = 512 * MiB  # bytes per UploadPartCopy (grown to fit 10,000 parts)


class ServerSideCopies:
    async def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
                   size: int, *, if_match: str | None = None,
                   metadata: dict[str, str] | None = None, content_type: str | None = None,
                   storage_class: str | None = None) -> ObjectInfo:
        """Copy ``src`` to ``dst`` on the server. The source's metadata is copied, or with
        ``metadata`` replaced by the source's plus these keys (one HEAD more). ``if_match``:
        only while the source has that ETag (EEXIST when it changed, ENOENT when gone).
        ``storage_class``: the copy's (a rename passes the source's: S3 stores a copy that
        names none as STANDARD, whatever the source's was)."""
        if size > MAX_COPY_SIZE:
            return await self._multipart_copy(src_bucket, src_key, dst_bucket, dst_key, size,
                                              if_match, metadata, content_type, storage_class)
        kwargs: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key,
                                  "CopySource": {"Bucket": src_bucket, "Key": src_key},
                                  "MetadataDirective": "COPY", **_class_of(storage_class)}
        if if_match:
            kwargs["CopySourceIfMatch"] = if_match
        if metadata:
            kwargs.update(MetadataDirective="REPLACE", **await self._copy_metadata(
                src_bucket, src_key, if_match, metadata, content_type))
        resp = await self.call(lambda: self.client.copy_object(**kwargs),
                               f"copy s3://{src_bucket}/{src_key}", "copy")
        result = resp.get("CopyObjectResult", {})
        return ObjectInfo(dst_key, size, 0, result.get("ETag"), resp.get("VersionId"))

    async def _copy_metadata(self, bucket: str, key: str, if_match: str | None,
                             metadata: dict[str, str] | None,
                             content_type: str | None) -> dict[str, Any]:
        """``Metadata`` and ``ContentType`` of a copy of ``key``: the source's (one HEAD)
        plus ``metadata``; EEXIST when the source no longer has the ETag ``if_match``."""
        src = await self.head(bucket, key)
        if if_match and src.bare_etag != if_match.strip('"'):
            raise McpfsError(f"s3://{bucket}/{key} changed", errno=errno.EEXIST)
        return {"Metadata": {**src.metadata, **(metadata or {})},
                "ContentType": content_type or src.content_type or "application/octet-stream"}

    async def _multipart_copy(self, src_bucket: str, src_key: str, dst_bucket: str,
                              dst_key: str, size: int, if_match: str | None,
                              metadata: dict[str, str] | None, content_type: str | None,
                              storage_class: str | None) -> ObjectInfo:
        what = f"copy s3://{src_bucket}/{src_key} to s3://{dst_bucket}/{dst_key}"
        meta = await self._copy_metadata(src_bucket, src_key, if_match, metadata, content_type)
        create: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key, **meta,
                                  **_class_of(storage_class)}
        upload_id = (await self.call(lambda: self.client.create_multipart_upload(**create),
                                     what, "create_upload"))["UploadId"]
        part = self.part_size_for(size, COPY_PART_MIN)
        etags: dict[int, str] = {}
        parts = trio.CapacityLimiter(self.config.part_concurrency)

        async def one(number: int, offset: int) -> None:
            kwargs: dict[str, Any] = {
                "Bucket": dst_bucket, "Key": dst_key, "UploadId": upload_id,
                "PartNumber": number, "CopySource": {"Bucket": src_bucket, "Key": src_key},
                "CopySourceRange": f"bytes={offset}-{min(size, offset + part) - 1}"}
            if if_match:
                kwargs["CopySourceIfMatch"] = if_match
            async with parts:
                resp = await self.call(lambda: self.client.upload_part_copy(**kwargs),
                                       f"{what} part {number}", "upload_part_copy")
            etags[number] = resp["CopyPartResult"]["ETag"]
        try:
            await self._all_parts([functools.partial(one, i + 1, offset)
                                   for i, offset in enumerate(range(0, size, part))])
            resp = await self.call(lambda: self.client.complete_multipart_upload(
                Bucket=dst_bucket, Key=dst_key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]}
                                           for n in sorted(etags)]}), what, "complete")
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort(dst_bucket, dst_key, upload_id, what)
            raise
        return ObjectInfo(dst_key, size, 0, resp.get("ETag"), resp.get("VersionId"))


def _class_of(storage_class: str | None) -> dict[str, str]:
    """The ``StorageClass`` argument for a copy of that class (none for STANDARD, the
    default, which every S3-compatible server takes)."""
    return {"StorageClass": storage_class} if storage_class not in (None, "STANDARD") else {}


__all__ = ["ServerSideCopies", "MAX_COPY_SIZE"]
