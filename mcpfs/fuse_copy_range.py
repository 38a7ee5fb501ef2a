"""FUSE ``copy_file_range`` for pyfuse3, which has no handler for it.

Why: coreutils ``cp`` (9.x) copies a file within one file system with
``copy_file_range(2)``. Without a handler the kernel falls back to splicing the file
through our read and write handlers 64 KiB at a time (16,384 round trips per GiB); with
one, the kernel sends the whole range in one request, and vfs can answer a copy of a DAG
into /mfs with a link, or of an S3 object into /s3 with a server-side copy, without
reading a byte (``VFS.copy_range``).

How: fuse_slots.py finds the ``copy_file_range`` slot of the live session's operation
table (pyfuse3 never sets it, and libfuse reads it only when such a request arrives), and
:func:`install` (after ``pyfuse3.init``, before the first request is served) writes a
ctypes callback into it. If this pyfuse3 or libfuse does not look as expected nothing is
written, one line is logged, and ``cp`` takes the kernel's splice path as before: slower,
never wrong.

The callback runs on the trio thread, inside pyfuse3's request loop (libfuse's
``fuse_session_process_buf``). It starts a task in the nursery :func:`serving` opened,
which calls the handler and answers the request with ``fuse_reply_write`` or
``fuse_reply_err``. Every request is answered exactly once: an error (an ``errno``
attribute, else EIO) is an error reply; the callback itself never raises into C.

Resources: the callback object is kept alive in this module for the process' lifetime
(libfuse holds a raw pointer to it).
"""

from __future__ import annotations

import ctypes
import errno
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from . import fuse_slots

log = logging.getLogger("mcpfs.fuse")

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64,
                             ctypes.POINTER(fuse_slots.FileInfo), ctypes.c_uint64,
                             ctypes.c_int64, ctypes.POINTER(fuse_slots.FileInfo),
                             ctypes.c_size_t, ctypes.c_int)

# handler(fh_in, off_in, fh_out, off_out, length, flags) -> bytes copied
Handler = Callable[[int, int, int, int, int, int], Awaitable[int]]

_state: dict[str, Any] = {}  # "callback", "libfuse", "handler", "nursery" (trio thread only)


def install(handler: Handler) -> bool:
    """Answer ``copy_file_range`` with ``handler`` in the session ``pyfuse3.init`` just
    made (fast: ``fuse_slots.prepare`` did the slow part); False (logged) when this pyfuse3
    or libfuse does not look as expected."""
    try:
        slot = fuse_slots.slot(fuse_slots.SLOT_COPY_FILE_RANGE)
        _state["libfuse"] = fuse_slots.libfuse()
    except LookupError as exc:
        log.info("copy_file_range not offered (%s): cp within the mount is spliced", exc)
        return False
    callback = _state.get("callback") or _CALLBACK(_on_request)
    _state.update(callback=callback, handler=handler)
    slot.value = ctypes.cast(callback, ctypes.c_void_p).value
    return True


@asynccontextmanager
async def serving():
    """The nursery copy requests run in, for as long as pyfuse3 serves."""
    async with trio.open_nursery() as nursery:
        _state["nursery"] = nursery
        try:
            yield
        finally:
            _state.pop("nursery", None)
            nursery.cancel_scope.cancel()


def _on_request(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, length, flags) -> None:
    """libfuse's call (trio thread): hand the request to a task; never raise."""
    libfuse = _state["libfuse"]
    try:
        nursery = _state.get("nursery")
        if nursery is None:
            libfuse.fuse_reply_err(req, errno.ENOSYS)
            return
        nursery.start_soon(_answer, req, fi_in.contents.fh, off_in, fi_out.contents.fh,
                           off_out, length, flags)
    except BaseException:  # noqa: BLE001 - C is the caller: answer and log
        log.exception("copy_file_range: cannot start the request")
        libfuse.fuse_reply_err(req, errno.EIO)


async def _answer(req: int, fh_in: int, off_in: int, fh_out: int, off_out: int,
                  length: int, flags: int) -> None:
    libfuse = _state["libfuse"]
    try:
        copied = await _state["handler"](fh_in, off_in, fh_out, off_out, length, flags)
    except BaseException as exc:  # noqa: BLE001 - the request must be answered
        code = getattr(exc, "errno", None) or errno.EIO
        libfuse.fuse_reply_err(req, code)
        if not isinstance(exc, Exception):
            raise
        return
    libfuse.fuse_reply_write(req, copied)


__all__ = ["install", "serving"]
