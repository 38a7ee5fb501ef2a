"""UnixFS v1 ``Data`` messages (the payload of a DAG-PB node), encoded as boxo does.

Field order is the schema's (Type, Data, filesize, blocksizes, hashType, fanout, mode,
mtime); optional fields are written only when set, so ``filesize=0`` differs from no
filesize, exactly like gogo-protobuf's optional fields in kubo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import InvalidInput
from . import protowire as pw
from .cid import decode_varint

RAW = 0
DIRECTORY = 1
FILE = 2
METADATA = 3
SYMLINK = 4
HAMT_SHARD = 5
TYPE_NAMES = {RAW: "raw", DIRECTORY: "directory", FILE: "file", METADATA: "metadata",
              SYMLINK: "symlink", HAMT_SHARD: "hamt-sharded-directory"}

MURMUR3_X64_64 = 0x22  # multicodec of the HAMT hash function
_U64 = 1 << 64


@dataclass(slots=True)
class UnixFSData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None  # (seconds, nanoseconds or None)

    def encode(self) -> bytes:
        out = [pw.varint_field(1, self.type)]
        if self.data is not None:
            out.append(pw.bytes_field(2, self.data))
        if self.filesize is not None:
            out.append(pw.varint_field(3, self.filesize))
        out.extend(pw.varint_field(4, size) for size in self.blocksizes)
        if self.hash_type is not None:
            out.append(pw.varint_field(5, self.hash_type))
        if self.fanout is not None:
            out.append(pw.varint_field(6, self.fanout))
        if self.mode is not None:
            out.append(pw.varint_field(7, self.mode))
        if self.mtime is not None:
            seconds, nanos = self.mtime
            body = pw.varint_field(1, seconds % _U64)
            if nanos:
                body += pw.fixed32_field(2, nanos)
            out.append(pw.bytes_field(8, body))
        return b"".join(out)

    @property
    def is_dir(self) -> bool:
        return self.type in (DIRECTORY, HAMT_SHARD)

    def file_size(self) -> int:
        """Bytes of file content under this node (its own data plus children)."""
        if self.filesize is not None:
            return self.filesize
        return len(self.data or b"") + sum(self.blocksizes)


def _decode_mtime(buf: bytes) -> tuple[int, int | None]:
    seconds, nanos = 0, None
    for num, wire, value in pw.iter_fields(buf):
        if num == 1 and wire == pw.VARINT:
            seconds = value - _U64 if value >= 1 << 63 else value
        elif num == 2 and wire == pw.FIXED32:
            if not 0 < value < 1_000_000_000:
                raise InvalidInput("unixfs mtime nanoseconds out of range")
            nanos = value
        else:
            raise InvalidInput(f"unexpected unixfs mtime field {num}")
    return seconds, nanos


def decode(buf: bytes | None) -> UnixFSData:
    """Decode the Data of a DAG-PB node as UnixFS; InvalidInput when it isn't."""
    if buf is None:
        raise InvalidInput("dag-pb node has no UnixFS data")
    kind: int | None = None
    msg = UnixFSData(type=-1)
    for num, wire, value in pw.iter_fields(buf):
        if num == 1 and wire == pw.VARINT:
            kind = value
        elif num == 2 and wire == pw.LEN:
            msg.data = value
        elif num == 3 and wire == pw.VARINT:
            msg.filesize = value
        elif num == 4 and wire == pw.VARINT:
            msg.blocksizes.append(value)
        elif num == 4 and wire == pw.LEN:  # packed encoding, accepted on read
            pos = 0
            while pos < len(value):
                size, pos = decode_varint(value, pos)
                msg.blocksizes.append(size)
        elif num == 5 and wire == pw.VARINT:
            msg.hash_type = value
        elif num == 6 and wire == pw.VARINT:
            msg.fanout = value
        elif num == 7 and wire == pw.VARINT:
            msg.mode = value
        elif num == 8 and wire == pw.LEN:
            msg.mtime = _decode_mtime(value)
        else:
            raise InvalidInput(f"unexpected unixfs field {num}")
    if kind is None or kind not in TYPE_NAMES:
        raise InvalidInput(f"invalid unixfs type {kind}")
    msg.type = kind
    return msg
