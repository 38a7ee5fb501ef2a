"""FUSE ``copy_file_range`` for pyfuse3, which has no handler for it.

Why: coreutils ``cp`` (9.x) copies a file within one file system with
``copy_file_range(2)``. Without a handler the kernel falls back to splicing the file
through our read and write handlers 64 KiB at a time (16,384 round trips per GiB); with
one, the kernel sends the whole range in one request, and vfs can answer a copy of a DAG
into /mfs with a link, or of an S3 object into /s3 with a server-side copy, without
reading a byte (``VFS.copy_range``).

How: libfuse dispatches requests through the ``struct fuse_lowlevel_ops`` held in its
session, copied at ``fuse_session_new`` from the one pyfuse3 fills (module-static
``fuse_ops``, zeroed and filled in ``pyfuse3.init``). pyfuse3 never sets the
``copy_file_range`` slot, and libfuse reads the slot only when such a request arrives.
So :func:`prepare` (before ``pyfuse3.init``: reading the symbol table takes ~0.1 s, and
the mount is visible from init on) finds pyfuse3's ``fuse_ops`` and ``session`` in the
extension's symbol table (pyelftools; pyfuse3 is built from source, so its symbols are
there), and :func:`install` (after init, before the first request is served) checks that
``fuse_ops`` is libfuse's ``sizeof(struct fuse_lowlevel_ops)``, finds the session's copy by
its content (the same 352 bytes, near the start of ``struct fuse_session``: no private
libfuse layout is assumed), and writes a ctypes callback into slot 42 of that copy
(libfuse 3's ABI keeps the slot order fixed; slot 42 is ``copy_file_range`` since 3.4).
If anything does not match (a stripped or differently built pyfuse3, another libfuse)
nothing is written, one line is logged, and ``cp`` takes the kernel's splice path as
before: slower, never wrong.

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
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

log = logging.getLogger("mcpfs.fuse")

OPS_SYMBOL: Final = "__pyx_v_7pyfuse3_fuse_ops"
SESSION_SYMBOL: Final = "__pyx_v_7pyfuse3_session"  # struct fuse_session *
SESSION_SEARCH: Final = 256  # bytes into struct fuse_session where its ops may start
OPS_SIZE: Final = 352  # sizeof(struct fuse_lowlevel_ops), libfuse 3.4 .. 3.17
COPY_FILE_RANGE_SLOT: Final = 42
ANCHOR_SYMBOL: Final = "PyInit_pyfuse3"  # exported: its address gives the load base


class _FileInfo(ctypes.Structure):
    """The head of ``struct fuse_file_info`` (only ``fh`` is read)."""
    _fields_ = [("flags", ctypes.c_int), ("bits", ctypes.c_uint), ("padding2", ctypes.c_uint),
                ("fh", ctypes.c_uint64)]


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64,
                             ctypes.POINTER(_FileInfo), ctypes.c_uint64, ctypes.c_int64,
                             ctypes.POINTER(_FileInfo), ctypes.c_size_t, ctypes.c_int)

# handler(fh_in, off_in, fh_out, off_out, length, flags) -> bytes copied
Handler = Callable[[int, int, int, int, int, int], Awaitable[int]]

_state: dict[str, Any] = {}  # "callback", "libfuse", "handler", "nursery" (trio thread only)


def _symbols(path: str) -> dict[str, tuple[int, int]]:
    from elftools.elf.elffile import ELFFile  # imported only when mounting
    wanted = {OPS_SYMBOL, SESSION_SYMBOL, ANCHOR_SYMBOL}
    found: dict[str, tuple[int, int]] = {}
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for name in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(name)
            if table is None:
                continue
            for sym in table.iter_symbols():
                if sym.name in wanted and sym.name not in found and sym["st_value"]:
                    found[sym.name] = (sym["st_value"], sym["st_size"])
    return found


def prepare() -> None:
    """Find pyfuse3's symbols and libfuse's reply functions (reading the extension's
    symbol table takes ~0.1 s): called before ``pyfuse3.init``, so :func:`install` after
    it only touches memory. A failure is kept and reported by :func:`install`."""
    if "layout" in _state or "unusable" in _state:
        return
    try:
        _state["layout"] = _layout()
        libfuse = ctypes.CDLL("libfuse3.so.3")
        libfuse.fuse_reply_write.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libfuse.fuse_reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _state["libfuse"] = libfuse
    except (OSError, LookupError, ImportError, AttributeError, ValueError) as exc:
        _state.pop("layout", None)
        _state["unusable"] = str(exc)


def install(handler: Handler) -> bool:
    """Answer ``copy_file_range`` with ``handler`` in the session ``pyfuse3.init`` just
    made (fast: :func:`prepare` did the slow part); False (logged) when this pyfuse3 or
    libfuse does not look as expected."""
    prepare()
    try:
        if "unusable" in _state:
            raise LookupError(_state["unusable"])
        slot = _session_slot(*_state["layout"])
    except LookupError as exc:
        log.info("copy_file_range not offered (%s): cp within the mount is spliced", exc)
        return False
    callback = _state.get("callback") or _CALLBACK(_on_request)
    _state.update(callback=callback, handler=handler)
    slot.value = ctypes.cast(callback, ctypes.c_void_p).value
    return True


def _layout() -> tuple[int, int, int]:
    """(address of pyfuse3's ``fuse_ops``, address of its ``session`` pointer, size)."""
    spec = importlib.util.find_spec("pyfuse3")
    path = spec.origin if spec is not None else None
    if not path or not path.endswith(".so"):
        raise LookupError("pyfuse3 is not a compiled extension")
    symbols = _symbols(path)
    if len(symbols) < 3:
        raise LookupError("pyfuse3 has no symbol table (stripped build)")
    ops_offset, ops_size = symbols[OPS_SYMBOL]
    if ops_size != OPS_SIZE:
        raise LookupError(f"fuse_lowlevel_ops is {ops_size} bytes, not {OPS_SIZE}")
    anchor = ctypes.cast(getattr(ctypes.CDLL(path), ANCHOR_SYMBOL), ctypes.c_void_p).value
    if anchor is None:
        raise LookupError("pyfuse3's init function has no address")
    base = anchor - symbols[ANCHOR_SYMBOL][0]
    return base + ops_offset, base + symbols[SESSION_SYMBOL][0], ops_size


def _session_slot(ops_address: int, session_address: int, ops_size: int) -> ctypes.c_void_p:
    """The ``copy_file_range`` slot of the live session's ops (LookupError if not sure)."""
    ops = ctypes.string_at(ops_address, ops_size)
    if not any(ops) or ops[COPY_FILE_RANGE_SLOT * 8:(COPY_FILE_RANGE_SLOT + 1) * 8] != bytes(8):
        raise LookupError("pyfuse3's operations are not as expected")
    session = ctypes.c_void_p.from_address(session_address).value
    if not session:
        raise LookupError("no FUSE session")
    found = ctypes.string_at(session, SESSION_SEARCH + ops_size).find(ops)
    if found < 0 or found > SESSION_SEARCH or found % 8:
        raise LookupError("the session's operations were not found")
    return ctypes.c_void_p.from_address(session + found + COPY_FILE_RANGE_SLOT * 8)


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
