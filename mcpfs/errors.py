"""One error hierarchy for every layer.

Backends raise subclasses of :class:`McpfsError`; each carries the errno the mount reports
for it. ``fuse_ops.py`` is the only place that turns these into ``FUSEError``; the CLI turns
them into a one-line message and exit code. Messages never contain credentials.
"""

from __future__ import annotations

import errno as _errno


# errnos of a definite answer from a backend (denied, already there, gone, invalid): a
# retry cannot change it, and the request made nothing (write_back.py gives such a commit up
# at once; s3_copy.py knows no upload was created)
REFUSALS = frozenset({_errno.EACCES, _errno.EPERM, _errno.EEXIST, _errno.ENOENT,
                      _errno.EINVAL})


class McpfsError(Exception):
    """Base of every error mcpfs raises on purpose; ``errno`` is what the mount reports."""

    errno: int = _errno.EIO

    def __init__(self, message: str = "", *, errno: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class InvalidInput(McpfsError):
    """Malformed user input: a bad CID, a bad chunker spec, an undecodable block."""

    errno = _errno.EINVAL


class NotFound(McpfsError):
    """A path, link, pin or block that does not exist."""

    errno = _errno.ENOENT


class AlreadyExists(McpfsError):
    errno = _errno.EEXIST


class NotADirectory(McpfsError):
    errno = _errno.ENOTDIR


class IsADirectory(McpfsError):
    errno = _errno.EISDIR


class DirectoryNotEmpty(McpfsError):
    errno = _errno.ENOTEMPTY


class ReadOnly(McpfsError):
    errno = _errno.EROFS


class PermissionDenied(McpfsError):
    errno = _errno.EACCES


class CorruptBlock(McpfsError):
    """A block whose bytes do not hash to its CID; the message names the CID."""

    errno = _errno.EIO


class BlockNotFound(NotFound):
    """A block the local store does not have. On a mount this is EIO (content missing)."""

    errno = _errno.EIO


class NoSpace(McpfsError):
    errno = _errno.ENOSPC
