"""What a direct S3 request sends and what its answers become (s3_direct.py): the body
headers of a PUT, boto3's answer shapes for PutObject, HeadObject and GetObject, and the
botocore exceptions boto3 would raise for an error answer or a failed connection, with the
codes botocore's retry policy treats as transient or throttling. Pure functions, no I/O."""

from __future__ import annotations

import base64
import email.utils
import errno
import hashlib
import socket
import xml.etree.ElementTree as ET
import zlib
from typing import Any, Final

import botocore.exceptions

from ..errors import McpfsError

RETRY_STATUS: Final = frozenset({500, 502, 503, 504})  # transient (and 429: throttling)
THROTTLE_CODES: Final = frozenset({  # botocore's standard mode: backoff from 1 s
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException"})
TRANSIENT_CODES: Final = frozenset({  # and these, with 5xx and connection errors: from 50 ms
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError"})
REDIRECT_CODES: Final = frozenset({"PermanentRedirect", "TemporaryRedirect",
                                   "AuthorizationHeaderMalformed"})  # the wrong region
META: Final = "x-amz-meta-"


class Failed:
    """What a transport raised, handed to the retry policy (DirectRequests._exchange)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


Answer = tuple[dict[str, str], dict[str, int], bytes]  # headers, ResponseMetadata, body


def body_of(where: str, data: Any, size: int, headers: dict[str, str], checksums: bool
          ) -> tuple[bytes, dict[str, str]]:
    """(data, headers) of a PUT of ``size`` bytes to ``where``: Content-Length, Content-MD5
    and, with ``checksums``, ``x-amz-checksum-crc32``; EIO when ``data`` is not ``size``
    long (a spool that shrank)."""
    if len(data) != size:
        raise McpfsError(f"put {where}: the body has {len(data)} of {size} bytes",
                         errno=errno.EIO)
    headers["Content-Length"] = str(size)
    headers["Content-MD5"] = base64.b64encode(
        hashlib.md5(data, usedforsecurity=False).digest()).decode()
    if checksums:  # (stored, as boto3's are; not when the client sends none)
        headers["x-amz-checksum-crc32"] = base64.b64encode(
            zlib.crc32(data).to_bytes(4, "big")).decode()
    return data, headers


def stored(got: Answer | None) -> dict | None:
    """boto3's PutObject answer shape."""
    if got is None:
        return None
    answer, meta, _ = got
    return {"ETag": answer.get("etag"), "VersionId": answer.get("x-amz-version-id"),
            "ResponseMetadata": meta}


def headed(got: Answer | None) -> dict | None:
    """boto3's HeadObject answer shape."""
    return None if got is None else described(got[0], got[1])


def described(answer: dict[str, str], meta: dict[str, int]) -> dict[str, Any]:
    """What boto3's head_object (and get_object, but its body) gives, from the headers."""
    modified = answer.get("last-modified")
    return {"ContentLength": int(answer.get("content-length") or 0),
            "LastModified": email.utils.parsedate_to_datetime(modified) if modified else None,
            "ETag": answer.get("etag"), "VersionId": answer.get("x-amz-version-id"),
            "StorageClass": answer.get("x-amz-storage-class"),
            "ContentType": answer.get("content-type"),
            "Metadata": {name[len(META):]: value for name, value in answer.items()
                         if name.startswith(META)},
            "ResponseMetadata": meta}


def connection_error(exc: BaseException, url: str) -> Exception:
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return exc
    if isinstance(exc, socket.timeout):
        return botocore.exceptions.ReadTimeoutError(endpoint_url=url)
    return botocore.exceptions.ConnectionClosedError(endpoint_url=url)


def client_error(method: str, status: int, text: bytes, attempts: int
                  ) -> botocore.exceptions.ClientError:
    """The ClientError botocore raises for this error answer (XML ``<Error>`` body)."""
    code = message = ""
    try:
        root = ET.fromstring(text) if text.strip() else None
    except ET.ParseError:
        root = None
    if root is not None:
        code = root.findtext("Code") or ""
        message = root.findtext("Message") or ""
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code or str(status), "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": attempts}},
        {"PUT": "PutObject", "HEAD": "HeadObject"}.get(method, "GetObject"))


__all__ = ["Answer", "Failed", "body_of", "stored", "headed", "described", "client_error",
           "connection_error", "RETRY_STATUS", "THROTTLE_CODES", "TRANSIENT_CODES",
           "REDIRECT_CODES", "META"]
