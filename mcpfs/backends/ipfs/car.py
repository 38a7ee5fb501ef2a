"""CAR (content-addressed archive) files: write v1, read v1 and v2, as kubo's
``dag export/import``.

A CARv1 is a varint-prefixed DAG-CBOR header ``{"roots": [...], "version": 1}`` followed by
sections ``varint(len) | CID bytes | block``. A CARv2 is an 11-byte pragma, a 40-byte header
(characteristics, data offset, data size, index offset, little-endian u64s) and an inner CARv1
at the data offset; its index is ignored.

Resources: readers and writers work on a binary file object the caller owns and never close
it; only one section is in memory at a time (sections above :data:`MAX_SECTION_SIZE` and
headers above :data:`MAX_HEADER_SIZE` are refused, as go-car does). A v2 data offset is
reached with ``seek`` when the file can seek, else by reading and discarding.

Errors: malformed input of any kind raises :class:`InvalidInput` (never struct.error,
IndexError...); a block whose bytes do not hash to its CID raises InvalidInput naming the CID.
Export raises :class:`BlockNotFound` for a block missing from the store, unless asked to skip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Final

from ...errors import InvalidInput
from . import dag
from .blockstore import Blockstore
from .cid import CID, MAX_VARINT_BYTES, decode_varint, encode_varint
from .links import iter_dag

# go-car's DefaultMaxAllowedHeaderSize / DefaultMaxAllowedSectionSize.
MAX_HEADER_SIZE: Final = 32 << 20
MAX_SECTION_SIZE: Final = 8 << 20
# The CARv2 pragma: varint(10) then DAG-CBOR {"version": 2}.
CARV2_PRAGMA: Final = bytes.fromhex("0aa16776657273696f6e02")
# characteristics (16 bytes), then data offset, data size, index offset (u64 each)
CARV2_HEADER_SIZE: Final = 40
MAX_OFFSET: Final = (1 << 63) - 1  # go-car reads v2 offsets as int64; larger ones are invalid
SKIP_CHUNK: Final = 1 << 20  # read-and-discard step when a v2 stream cannot seek


class _Source:
    """Reads exactly what is asked from ``fh``, at most ``limit`` bytes in all (None: no limit)."""

    def __init__(self, fh: BinaryIO, limit: int | None = None) -> None:
        self.fh = fh
        self.limit = limit
        self.pos = 0

    def read(self, size: int, what: str) -> bytes:
        if self.limit is not None and self.pos + size > self.limit:
            raise InvalidInput(f"truncated CAR: {what} runs past the end of the data")
        chunks = []
        left = size
        while left:
            chunk = self.fh.read(left)
            if not chunk:
                raise InvalidInput(f"truncated CAR: {what} ends early")
            chunks.append(chunk)
            left -= len(chunk)
        self.pos += size
        return b"".join(chunks)

    def at_end(self) -> bool:
        return self.limit is not None and self.pos >= self.limit

    def read_varint(self, what: str) -> int | None:
        """A varint, or None at a clean end of input (before its first byte)."""
        if self.at_end():
            return None
        buf = bytearray()
        while True:
            byte = self.fh.read(1)
            if not byte:
                if not buf:
                    return None
                raise InvalidInput(f"truncated CAR: {what} ends early")
            buf += byte
            self.pos += 1
            if self.limit is not None and self.pos > self.limit:
                raise InvalidInput(f"truncated CAR: {what} runs past the end of the data")
            if not byte[0] & 0x80:
                return decode_varint(bytes(buf))[0]
            if len(buf) >= MAX_VARINT_BYTES:
                raise InvalidInput(f"invalid CAR: {what} varint too long")

    def skip(self, size: int) -> None:
        try:
            if self.fh.seekable():
                self.fh.seek(size, 1)
                self.pos += size
                return
        except (OSError, AttributeError, ValueError, OverflowError):
            pass
        while size:
            step = min(size, SKIP_CHUNK)
            self.read(step, "padding before the CARv2 data")
            size -= step


def _read_header(src: _Source) -> Any:
    length = src.read_varint("header length")
    if not length:
        raise InvalidInput("invalid CAR: empty header")
    if length > MAX_HEADER_SIZE:
        raise InvalidInput(f"invalid CAR: header of {length} bytes exceeds {MAX_HEADER_SIZE}")
    return dag.dagcbor_decode(src.read(length, "header"))


def _version(header: Any) -> int | None:
    version = header.get("version") if isinstance(header, dict) else None
    return version if type(version) is int else None


def _v1_roots(header: Any) -> list[CID]:
    if _version(header) != 1:
        raise InvalidInput("invalid CAR: header is not a CARv1 header")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(root, CID) for root in roots):
        raise InvalidInput("invalid CAR: header roots must be a list of CIDs")
    return roots


class CarReader:
    """Iterate the (CID, bytes) blocks of a CARv1 or CARv2 file object; hashes are verified.

    ``roots`` and ``version`` are read on construction; iterating reads the sections lazily.
    """

    def __init__(self, fh: BinaryIO) -> None:
        outer = _Source(fh)
        header = _read_header(outer)
        if _version(header) == 2 and len(header) == 1:
            self.version = 2
            fields = outer.read(CARV2_HEADER_SIZE, "CARv2 header")
            data_offset = int.from_bytes(fields[16:24], "little")
            data_size = int.from_bytes(fields[24:32], "little")
            if not outer.pos <= data_offset <= MAX_OFFSET or data_size > MAX_OFFSET:
                raise InvalidInput(f"invalid CARv2 header: data offset {data_offset}, "
                                   f"size {data_size}")
            outer.skip(data_offset - outer.pos)
            self._src = _Source(fh, data_size)
            self.roots = _v1_roots(_read_header(self._src))
        else:
            self.version = 1
            self._src = outer
            self.roots = _v1_roots(header)

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        src = self._src
        while True:
            length = src.read_varint("section length")
            if length is None:
                return
            if length == 0:
                raise InvalidInput("invalid CAR: zero-length section")
            if length > MAX_SECTION_SIZE:
                raise InvalidInput(f"invalid CAR: section of {length} bytes exceeds "
                                   f"{MAX_SECTION_SIZE}")
            section = src.read(length, "section")
            cid, start = CID.read_prefix(section, 0)
            block = section[start:]
            try:
                valid = cid.verify(block)
            except InvalidInput as exc:
                raise InvalidInput(f"CAR block {cid}: {exc}") from None
            if not valid:
                raise InvalidInput(f"CAR block {cid} does not match its CID")
            yield cid, block


def import_car(store: Blockstore, fh: BinaryIO) -> tuple[list[CID], int]:
    """Put every block of the CAR into ``store``; return (roots, blocks read), then sync.

    Blocks before a malformed section stay in the store (they are valid, content-addressed).
    """
    reader = CarReader(fh)
    count = 0
    for cid, block in reader:
        store.put(cid, block)
        count += 1
    store.sync()
    return reader.roots, count


class CarWriter:
    """Writes a CARv1 header on construction, then one section per :meth:`put`."""

    def __init__(self, fh: BinaryIO, roots: Iterable[CID]) -> None:
        self.fh = fh
        header = dag.dagcbor_encode({"roots": list(roots), "version": 1})
        fh.write(encode_varint(len(header)) + header)

    def put(self, cid: CID, block: bytes) -> None:
        raw = bytes(cid)
        self.fh.write(encode_varint(len(raw) + len(block)))
        self.fh.write(raw)
        self.fh.write(block)


def export_car(store: Blockstore, roots: Iterable[CID], fh: BinaryIO,
               skip_missing: bool = False) -> int:
    """Write the DAGs under ``roots`` to ``fh`` as a CARv1; return the number of blocks."""
    roots = [CID.decode(root) for root in roots]
    writer = CarWriter(fh, roots)
    count = 0
    for cid, block in iter_dag(store, roots, skip_missing):
        writer.put(cid, block)
        count += 1
    return count


__all__ = ["CarReader", "CarWriter", "import_car", "export_car", "iter_dag",
           "MAX_HEADER_SIZE", "MAX_SECTION_SIZE"]
