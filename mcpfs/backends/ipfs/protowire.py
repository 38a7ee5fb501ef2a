"""The protobuf wire format, just as much as DAG-PB and UnixFS need.

Decoding raises :class:`InvalidInput` on any malformed byte string (never IndexError or
similar), so a block from disk or the network can be fed here safely.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...errors import InvalidInput
from .cid import decode_varint, encode_varint

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5
PROTO_VARINT_BYTES = 10  # protobuf int64 can take 10 bytes


def key(field: int, wire_type: int) -> bytes:
    return encode_varint(field << 3 | wire_type)


def varint_field(field: int, value: int) -> bytes:
    return key(field, VARINT) + encode_varint(value)


def bytes_field(field: int, value: bytes) -> bytes:
    return key(field, LEN) + encode_varint(len(value)) + value


def fixed32_field(field: int, value: int) -> bytes:
    return key(field, FIXED32) + value.to_bytes(4, "little")


def iter_fields(buf: bytes | memoryview, copy: bool = True
                ) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) in order; LEN values are bytes (with
    ``copy`` False and a memoryview ``buf``: views into it, no copy)."""
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = decode_varint(buf, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise InvalidInput("protobuf field number 0")
        if wire_type == VARINT:
            value, pos = decode_varint(buf, pos, PROTO_VARINT_BYTES)
            if value >= 1 << 64:
                raise InvalidInput("protobuf varint overflows 64 bits")
            yield field, wire_type, value
        elif wire_type == LEN:
            length, pos = decode_varint(buf, pos)
            if pos + length > end:
                raise InvalidInput("truncated protobuf bytes field")
            value = buf[pos:pos + length]
            yield field, wire_type, bytes(value) if copy else value
            pos += length
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise InvalidInput("truncated protobuf fixed32")
            yield field, wire_type, int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise InvalidInput("truncated protobuf fixed64")
            yield field, wire_type, int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        else:
            raise InvalidInput(f"unsupported protobuf wire type {wire_type}")
