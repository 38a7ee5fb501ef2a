"""Slots of the live libfuse session's operation table, for what pyfuse3 cannot express.

pyfuse3 fills a module-static ``struct fuse_lowlevel_ops`` (``fuse_ops``) in
``pyfuse3.init``; libfuse copies it into the session at ``fuse_session_new`` and from then
on dispatches every request through that copy. Two things we need are missing from
pyfuse3: a ``copy_file_range`` handler (fuse_copy_range.py) and the ``noflush`` bit of an
open's reply (fuse_noflush.py). Both are had by writing one slot of the session's copy.

:func:`prepare` (before ``pyfuse3.init``: reading the extension's symbol table takes
~0.1 s, and the mount is visible from init on) finds pyfuse3's ``fuse_ops`` and
``session`` in the extension's symbol table (pyelftools; pyfuse3 is built from source, so
its symbols are there) and loads libfuse's reply functions. :func:`slot` (after init,
before the first request is served) checks that ``fuse_ops`` is libfuse's
``sizeof(struct fuse_lowlevel_ops)``, finds the session's copy by its content (the same
352 bytes near the start of ``struct fuse_session``: no private libfuse layout is
assumed) and returns one slot of it; libfuse 3's ABI keeps the slot order fixed. The
session's copy is found once per session and remembered, since writing a slot makes it
differ from pyfuse3's table. Anything unexpected (a stripped or differently built
pyfuse3, another libfuse) is a LookupError, and the callers then write nothing.

Concurrency: all of this runs on the trio thread, before requests are served.
"""

from __future__ import annotations

import ctypes
import importlib.util
from typing import Any, Final

OPS_SYMBOL: Final = "__pyx_v_7pyfuse3_fuse_ops"
SESSION_SYMBOL: Final = "__pyx_v_7pyfuse3_session"  # struct fuse_session *
SESSION_SEARCH: Final = 256  # bytes into struct fuse_session where its ops may start
OPS_SIZE: Final = 352  # sizeof(struct fuse_lowlevel_ops), libfuse 3.4 .. 3.17
ANCHOR_SYMBOL: Final = "PyInit_pyfuse3"  # exported: its address gives the load base
SLOT_OPEN: Final = 14
SLOT_COPY_FILE_RANGE: Final = 42  # since libfuse 3.4

_state: dict[str, Any] = {}  # "layout", "unusable", "libfuse", "session", "ops_at"


class FileInfo(ctypes.Structure):
    """The head of ``struct fuse_file_info`` (flags, the bit field, fh)."""
    _fields_ = [("flags", ctypes.c_int), ("bits", ctypes.c_uint), ("padding2", ctypes.c_uint),
                ("fh", ctypes.c_uint64)]


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
    """Find pyfuse3's symbols and libfuse's reply functions, once per process. A failure
    is kept and raised by :func:`slot` and :func:`libfuse`."""
    if "layout" in _state or "unusable" in _state:
        return
    try:
        _state["layout"] = _layout()
        lib = ctypes.CDLL("libfuse3.so.3")
        lib.fuse_reply_write.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.fuse_reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _state["libfuse"] = lib
    except (OSError, LookupError, ImportError, AttributeError, ValueError) as exc:
        _state.pop("layout", None)
        _state["unusable"] = str(exc)


def libfuse() -> ctypes.CDLL:
    """libfuse3 with ``fuse_reply_write`` and ``fuse_reply_err`` typed (LookupError if
    :func:`prepare` failed)."""
    prepare()
    if "unusable" in _state:
        raise LookupError(_state["unusable"])
    return _state["libfuse"]


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


def slot(index: int) -> ctypes.c_void_p:
    """Slot ``index`` of the live session's operation table, as a writable pointer
    (LookupError if this pyfuse3, libfuse or session is not as expected)."""
    libfuse()
    ops_address, session_address, ops_size = _state["layout"]
    session = ctypes.c_void_p.from_address(session_address).value
    if not session or _state.get("session") != session:
        ops = ctypes.string_at(ops_address, ops_size)
        unset = ops[SLOT_COPY_FILE_RANGE * 8:(SLOT_COPY_FILE_RANGE + 1) * 8] == bytes(8)
        if not any(ops[SLOT_OPEN * 8:(SLOT_OPEN + 1) * 8]) or not unset:
            raise LookupError("pyfuse3's operations are not as expected")
        if not session:
            raise LookupError("no FUSE session")
        found = ctypes.string_at(session, SESSION_SEARCH + ops_size).find(ops)
        if found < 0 or found > SESSION_SEARCH or found % 8:
            raise LookupError("the session's operations were not found")
        _state.update(session=session, ops_at=session + found)
    return ctypes.c_void_p.from_address(_state["ops_at"] + index * 8)


__all__ = ["FileInfo", "prepare", "libfuse", "slot", "SLOT_OPEN", "SLOT_COPY_FILE_RANGE"]
