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

A process killed during such a copy (hours for a large object on a slow server) could not
abort it: the upload would stay open, its parts billed until a lifecycle rule removed them.
So while one runs, a small JSON file in ``copy_markers`` (the daemon's
``<state>/s3-copies``) names it: written before CreateMultipartUpload (bucket, key, time)
and again with the upload id, removed once the copy is completed or aborted (kept when
CreateMultipartUpload failed in a way that may have left an upload: a timeout, a 5xx). At
the next start :meth:`ServerSideCopies.abort_interrupted_copies` (the mount's warm-up, in
the background: a server out of reach must not keep the mount from starting) aborts what
the files left by the previous process name: the upload by its id, or without one the
key's uploads begun within 5 minutes of the file's time, as s3_upload.py does. Until that
pass has ended, a multipart copy of this process waits for it, so none of its uploads can
be taken for a left one (a bridge transfer resumed right after a restart). A file whose
abort failed (offline, denied) stays for the start after. The copy itself is not redone: a
rename copies before it deletes, so its source is still whole and the destination absent,
and a bridge transfer is retried by whoever asked for it.

Errors: ENOENT (the source is gone), EEXIST (``if_match`` no longer holds), others as
``map_error`` gives them.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Final

import trio

from ..errors import REFUSALS, McpfsError
from .s3_upload import MiB, ObjectInfo, _read_marker, _remove, _write_marker

log = logging.getLogger("mcpfs.backends.s3")

MAX_COPY_SIZE: Final = 5 * 1024 * MiB  # CopyObject's single-request limit (and a part's)
COPY_PART_MIN: Final = 512 * MiB  # bytes per UploadPartCopy (grown to fit 10,000 parts)
COPIES_DIR: Final = "s3-copies"  # in the state folder: multipart copies in flight (JSON)


def left_markers(folder: Path | None) -> list[Path]:
    """The copy markers in ``folder``, and the temporary files of marker writes a crash cut
    short (blocking; none when it is None, absent or cannot be read: the daemon starts
    anyway, and a copy's marker write will say what is wrong)."""
    if folder is None:
        return []
    try:
        return sorted(p for p in folder.iterdir()
                      if p.name.endswith((".json", ".json.tmp")) and p.is_file())
    except OSError:
        return []


class ServerSideCopies:
    # set by S3Backend; concurrency: trio thread only, left_lock serialises the pass
    copy_markers: Path | None  # folder of the markers (None: not kept)
    left_copies: list[Path]  # a previous process's markers (found at construction) not
    # handled yet: each leaves once handled, so the list is empty only after the pass
    left_lock: trio.Lock
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
        if self.left_copies:  # a previous process's copies are not handled yet: first
            await self.abort_interrupted_copies()
        meta = await self._copy_metadata(src_bucket, src_key, if_match, metadata, content_type)
        create: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key, **meta,
                                  **_class_of(storage_class)}
        marker = await self._mark(None, {"bucket": dst_bucket, "key": dst_key,
                                         "started": time.time()})
        try:
            upload_id = (await self.call(
                lambda: self.client.create_multipart_upload(**create), what,
                "create_upload"))["UploadId"]
        except BaseException as exc:
            # a cancel came before the request (a running one is waited for), and a clear
            # refusal made nothing; other errors may hide an upload: the next start's
            if isinstance(exc, trio.Cancelled) or getattr(exc, "errno", None) in REFUSALS:
                with trio.CancelScope(shield=True):
                    await self._unmark(marker)
            raise
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
            await self._mark(marker, {"bucket": dst_bucket, "key": dst_key,
                                      "upload_id": upload_id})
            await self._all_parts([functools.partial(one, i + 1, offset)
                                   for i, offset in enumerate(range(0, size, part))])
            resp = await self.call(lambda: self.client.complete_multipart_upload(
                Bucket=dst_bucket, Key=dst_key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]}
                                           for n in sorted(etags)]}), what, "complete")
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort(dst_bucket, dst_key, upload_id, what)
                await self._unmark(marker)
            raise
        await self._unmark(marker)
        return ObjectInfo(dst_key, size, 0, resp.get("ETag"), resp.get("VersionId"))

    async def _mark(self, marker: Path | None, state: dict[str, Any]) -> Path | None:
        """Write ``state`` to ``marker`` (a new one in ``copy_markers`` when None; nothing
        without that folder). A marker that cannot be written is logged, not raised: the
        copy goes on, only without its protection against a crash."""
        if self.copy_markers is None:
            return None
        path = marker or self.copy_markers / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_marker(str(path), state)
        try:
            await trio.to_thread.run_sync(write)
        except OSError as exc:
            log.warning("copy to s3://%s/%s: cannot record it in %s (%s); a crash during it "
                        "would leave its upload open", state.get("bucket"), state.get("key"),
                        path, exc.strerror)
        return path

    async def _unmark(self, marker: Path | None) -> None:
        """Remove ``marker`` (a failure is logged: it is then handled at the next start)."""
        if marker is None:
            return
        try:
            await trio.to_thread.run_sync(_remove, str(marker))
        except OSError as exc:
            log.warning("cannot remove %s (%s)", marker, exc.strerror)

    async def abort_interrupted_copies(self) -> int:
        """Abort the multipart copies a previous process left open (``left_copies``, the
        markers found when this backend was made) and remove their markers; returns how
        many markers this call handled (0 once a pass has run: a second caller waits for
        the first). A marker whose abort failed is kept for the next start; nothing is
        raised but a cancellation (the markers not reached are then left to a next call)."""
        handled = 0
        async with self.left_lock:
            while self.left_copies:
                await self._abort_left(self.left_copies[0])
                del self.left_copies[0]
                handled += 1
        return handled

    async def _abort_left(self, path: Path) -> None:
        try:
            state = await trio.to_thread.run_sync(_read_marker, str(path))
        except OSError:
            state = None
        if state is None or not state.get("bucket") or not state.get("key"):
            await self._unmark(path)  # a torn or foreign file: the copy never began
            return
        what = f"copy to s3://{state['bucket']}/{state['key']}"
        if state.get("upload_id"):
            log.info("%s: aborting upload %s, left by a process that stopped during it",
                     what, state["upload_id"])
            done = await self._abort(state["bucket"], state["key"], state["upload_id"], what)
        else:
            done = await self._abort_unrecorded(state)
        if done:
            await self._unmark(path)


def _class_of(storage_class: str | None) -> dict[str, str]:
    """The ``StorageClass`` argument for a copy of that class (none for STANDARD, the
    default, which every S3-compatible server takes)."""
    return {"StorageClass": storage_class} if storage_class not in (None, "STANDARD") else {}


__all__ = ["ServerSideCopies", "MAX_COPY_SIZE", "COPIES_DIR", "left_markers"]
