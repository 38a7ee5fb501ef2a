"""Read-only opens are answered with FOPEN_NOFLUSH: their close(2) sends no FLUSH.

Why: the kernel sends FLUSH on every close(2) of a FUSE file and waits for the answer.
For a file opened read-only our flush has nothing to do (``VFS.flush`` commits only
writable handles), so that wait was a whole round trip through the daemon on each close:
one of the two synchronous requests of an ``open + read + close`` of a cached file, the
pattern of a data loader reading many small files. pyfuse3 (3.5) has no field for the
reply's ``noflush`` bit, but its open handler copies the request's ``fuse_file_info``,
sets only ``fh``, ``direct_io``, ``keep_cache`` and ``nonseekable`` on the copy, and
replies with it; libfuse's ``fuse_reply_open`` turns a set ``noflush`` into FOPEN_NOFLUSH.
A kernel older than 5.19 ignores the flag and flushes as before.

How: :func:`install` (after ``pyfuse3.init``, before the first request is served) puts
a ctypes callback into the session's ``open`` slot (fuse_slots.py) that sets the bit on
the request's struct when the open is read-only (``O_RDONLY`` without ``O_TRUNC``, which
truncates), then calls pyfuse3's own open function, kept from the slot. Every other
open, and everything pyfuse3 does with it, is unchanged. If the session does not look as
expected nothing is written and one line is logged: closes are flushed, as before. The
same goes for libfuse 3.14.1 to 3.16.x, whose ``fuse_file_info`` had a bit inserted before
``noflush`` (libfuse issue #1029; 3.17 restored the layout): there the bit's place is not
the one this module writes.

Concurrency: the callback runs on the trio thread inside pyfuse3's request loop, which
holds the GIL, so pyfuse3's function is called as a ``PYFUNCTYPE`` (the GIL stays held).
Resources: the callback is kept alive in this module for the process' lifetime (libfuse
holds a raw pointer to it).
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any, Final

from . import fuse_slots

log = logging.getLogger("mcpfs.fuse")

NOFLUSH_BIT: Final = 1 << 7  # struct fuse_file_info: after writepage .. cache_readdir
SHIFTED: Final = ((3, 14, 1), (3, 17, 0))  # libfuse releases with another bit before it
_SIGNATURE: Final = (None, ctypes.c_void_p, ctypes.c_uint64,
                     ctypes.POINTER(fuse_slots.FileInfo))
_CALLBACK = ctypes.CFUNCTYPE(*_SIGNATURE)
_PYFUSE3_OPEN = ctypes.PYFUNCTYPE(*_SIGNATURE)

_state: dict[str, Any] = {}  # "callback", "pyfuse3_open" (trio thread only)


def install() -> bool:
    """Answer read-only opens with FOPEN_NOFLUSH in the session ``pyfuse3.init`` just
    made; False (logged) when this pyfuse3 or libfuse does not look as expected."""
    try:
        _check_layout(fuse_slots.libfuse())
        slot = fuse_slots.slot(fuse_slots.SLOT_OPEN)
    except LookupError as exc:
        log.info("read-only closes are flushed (%s)", exc)
        return False
    callback = _state.get("callback") or _CALLBACK(_on_open)
    if slot.value != ctypes.cast(callback, ctypes.c_void_p).value:  # not ours yet
        _state["pyfuse3_open"] = _PYFUSE3_OPEN(slot.value)
    _state["callback"] = callback
    slot.value = ctypes.cast(callback, ctypes.c_void_p).value
    return True


def _check_layout(libfuse: ctypes.CDLL) -> None:
    """LookupError unless this libfuse keeps ``noflush`` at :data:`NOFLUSH_BIT`."""
    get = libfuse.fuse_pkgversion
    get.restype = ctypes.c_char_p
    text = (get() or b"").decode("ascii", "replace")
    try:
        version = tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        raise LookupError(f"libfuse version {text!r} not understood") from None
    if SHIFTED[0] <= version < SHIFTED[1]:
        raise LookupError(f"libfuse {text} has another fuse_file_info layout")


def wants_noflush(flags: int) -> bool:
    """Whether an open with these flags has nothing to flush at close."""
    return flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC


def _on_open(req, ino, fi) -> None:
    """libfuse's call (trio thread): mark a read-only open, then pyfuse3 answers it."""
    try:
        info = fi.contents
        if wants_noflush(info.flags):
            info.bits |= NOFLUSH_BIT
    finally:  # pyfuse3 answers every open, whatever happened above
        _state["pyfuse3_open"](req, ino, fi)


__all__ = ["install", "wants_noflush"]
