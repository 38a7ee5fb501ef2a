"""The one translation of botocore errors into McpfsError, for the S3 backend.

NoSuchKey, NoSuchBucket, NotFound, InvalidBucketName and 404 -> ENOENT; InvalidObjectState
(an archived object: restore it first) -> EACCES with its own warning; AccessDenied,
signature errors, missing credentials and 403 -> EACCES with one warning per backend
(:class:`_Denied`, naming no key or secret); PreconditionFailed/412 and
ConditionalRequestConflict -> :class:`Conflict` (EEXIST, telling whether botocore had
retried the request); BucketNotEmpty -> ENOTEMPTY; InvalidRange/416 -> EINVAL; everything
else (5xx after botocore's retries, connection errors) -> EIO, logged. Messages carry the
operation, bucket/key and the S3 error code only, never the server's text.
"""

from __future__ import annotations

import errno
import logging

import botocore.exceptions

from ..errors import McpfsError

log = logging.getLogger("mcpfs.backends.s3")

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchUpload",
              "InvalidBucketName"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled", "AccountProblem"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class Conflict(McpfsError):
    """A conditional request lost (412): EEXIST. ``retried``: botocore had sent the request
    before (its first attempt may have done the write; see s3_upload)."""

    errno = errno.EEXIST

    def __init__(self, message: str, retried: bool) -> None:
        super().__init__(message)
        self.retried = retried


class _Denied:
    """Logs the first denial of a backend as one warning; later ones at debug level (a
    mount with wrong credentials must not flood the log)."""

    def __init__(self, unsigned: bool = False) -> None:
        self.logged = False
        self.unsigned = unsigned  # no_sign_request: there are no credentials to check

    def note(self, code: str, what: str) -> None:
        level = logging.DEBUG if self.logged else logging.WARNING
        self.logged = True
        if self.unsigned:
            log.log(level, "S3 denied %s (%s) to an unsigned request (no_sign_request): "
                    "only what a bucket opens to anyone can be read", what, code)
            return
        log.log(level, "S3 denied %s (%s): check the credentials boto3 finds (env, ~/.aws, "
                "profile) and the bucket policy", what, code)


def map_error(exc: BaseException, what: str, denied: _Denied | None = None) -> McpfsError:
    """The McpfsError for a botocore exception (see the module docstring)."""
    if isinstance(exc, McpfsError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        msg = f"{what}: {code or status}"
        if code in _NOT_FOUND or status == 404:
            return McpfsError(msg, errno=errno.ENOENT)
        if code == "InvalidObjectState":  # 403 too, but nothing to do with credentials
            log.warning("%s: the object is archived (a Glacier storage class): restore it "
                        "(aws s3api restore-object) before reading it", what)
            return McpfsError(f"{what}: archived, restore it first", errno=errno.EACCES)
        if code in _DENIED or status == 403:
            (denied or _Denied()).note(code or str(status), what)
            return McpfsError(msg, errno=errno.EACCES)
        if code in _CONFLICT or status == 412:
            retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0
            return Conflict(msg, retried=retries > 0)
        if code == "BucketNotEmpty":
            return McpfsError(msg, errno=errno.ENOTEMPTY)
        if code == "BucketAlreadyOwnedByYou" or code == "BucketAlreadyExists":
            return McpfsError(msg, errno=errno.EEXIST)
        if code == "InvalidRange" or status == 416:
            return McpfsError(msg, errno=errno.EINVAL)
        log.error("%s failed: S3 %s (HTTP %s)", what, code, status)
        return McpfsError(msg, errno=errno.EIO)
    if isinstance(exc, (botocore.exceptions.NoCredentialsError,
                        botocore.exceptions.PartialCredentialsError)):
        (denied or _Denied()).note("NoCredentials", what)
        return McpfsError(f"{what}: no S3 credentials", errno=errno.EACCES)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        log.error("%s failed: %s", what, type(exc).__name__)
        return McpfsError(f"{what}: {type(exc).__name__}", errno=errno.EIO)
    log.error("%s failed: %s", what, type(exc).__name__)
    return McpfsError(f"{what}: {type(exc).__name__}", errno=errno.EIO)


__all__ = ["Conflict", "map_error"]
