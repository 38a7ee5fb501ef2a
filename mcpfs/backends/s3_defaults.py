"""The arguments every S3 request of a backend gets (:class:`RequestDefaults`: requester
pays, server-side encryption) and boto3's PutObject arguments (:func:`put_kwargs`;
s3_direct.py sends the same as headers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestDefaults:
    """Arguments every request of a client gets where S3 takes them (a botocore
    ``before-parameter-build`` hook; :meth:`headers` for the direct requests):

    - ``requester_pays``: ``x-amz-request-payer: requester`` on every operation that has a
      RequestPayer parameter (requester-pays buckets, the AWS CLI's ``--request-payer``);
    - ``sse`` / ``sse_kms_key_id``: server-side encryption of every object we write
      (PutObject, CreateMultipartUpload, CopyObject; mountpoint-s3's ``--sse`` and
      ``--sse-kms-key-id``), for buckets whose policy demands it.
    """

    requester_pays: bool = False
    sse: str | None = None  # "AES256", "aws:kms" or "aws:kms:dsse"
    sse_kms_key_id: str | None = None

    def install(self, client: Any) -> None:
        if not (self.requester_pays or self.sse):
            return

        def add(params: dict[str, Any], model: Any, **_: Any) -> None:
            shape = model.input_shape
            members = shape.members if shape is not None else {}
            if self.requester_pays and "RequestPayer" in members:
                params.setdefault("RequestPayer", "requester")
            if self.sse and model.name in _WRITES:
                params.setdefault("ServerSideEncryption", self.sse)
                if self.sse_kms_key_id:
                    params.setdefault("SSEKMSKeyId", self.sse_kms_key_id)
        client.meta.events.register("before-parameter-build.s3", add)

    def headers(self, write: bool) -> dict[str, str]:
        """The same as headers, for a request that reads (``write`` False: HeadObject,
        GetObject) or writes a new object (PutObject)."""
        headers = {"x-amz-request-payer": "requester"} if self.requester_pays else {}
        if write and self.sse:
            headers["x-amz-server-side-encryption"] = self.sse
            if self.sse_kms_key_id:
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.sse_kms_key_id
        return headers


_WRITES = frozenset({"PutObject", "CreateMultipartUpload", "CopyObject"})  # new objects


def put_kwargs(bucket: str, key: str, body: Any, size: int, inm: bool,
               content_type: str | None, metadata: dict[str, str] | None) -> dict[str, Any]:
    """boto3's PutObject arguments."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body,
                              "ContentLength": size}
    if inm:
        kwargs["IfNoneMatch"] = "*"
    if content_type:
        kwargs["ContentType"] = content_type
    if metadata:
        kwargs["Metadata"] = metadata
    return kwargs


__all__ = ["RequestDefaults", "put_kwargs"]
