"""DAG-PB nodes: encode canonically (links, then data) and decode strictly.

Encoding sorts links stably by name bytes, as boxo's ``ProtoNode`` does before it hashes, so
the same node always yields the same CID. Decoding follows the DAG-PB spec's strictness
(field order, no unknown fields) and raises :class:`InvalidInput` on anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import InvalidInput
from . import protowire as pw
from .cid import CID, decode_varint


def name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class PBLink:
    cid: CID
    name: str | None = ""
    tsize: int | None = None

    def encode(self) -> bytes:
        out = pw.bytes_field(1, bytes(self.cid))
        if self.name is not None:
            out += pw.bytes_field(2, name_bytes(self.name))
        if self.tsize is not None:
            out += pw.varint_field(3, self.tsize)
        return out


@dataclass(slots=True)
class PBNode:
    links: list[PBLink] = field(default_factory=list)
    data: bytes | None = None

    def encode(self, sort_links: bool = True) -> bytes:
        links = self.links
        if sort_links and len(links) > 1:
            links = sorted(links, key=lambda link: name_bytes(link.name or ""))
        parts = [pw.bytes_field(2, link.encode()) for link in links]
        if self.data is not None:
            parts.append(pw.bytes_field(1, self.data))
        return b"".join(parts)


def _decode_link(buf: bytes) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    for num, wire, value in pw.iter_fields(buf):
        if num <= last:
            raise InvalidInput("dag-pb link fields out of order or repeated")
        last = num
        if num == 1 and wire == pw.LEN:
            cid = CID.from_bytes(value)
        elif num == 2 and wire == pw.LEN:
            try:
                name = value.decode("utf-8", "surrogateescape")
            except UnicodeDecodeError:  # pragma: no cover - surrogateescape accepts all
                raise InvalidInput("dag-pb link name is not decodable") from None
        elif num == 3 and wire == pw.VARINT:
            tsize = value
        else:
            raise InvalidInput(f"unexpected dag-pb link field {num}")
    if cid is None:
        raise InvalidInput("dag-pb link without Hash")
    return PBLink(cid, name, tsize)


def link_cid_bytes(buf: bytes) -> list[bytes]:
    """The raw CID bytes of every link of a canonical dag-pb block, without decoding the
    links (for walks that only follow CIDs); falls back to :func:`decode` (and its
    InvalidInput) on anything unusual."""
    out: list[bytes] = []
    pos, end = 0, len(buf)
    try:
        while pos < end and buf[pos] == 0x12:  # Links (field 2, LEN); Data comes last
            length, pos = decode_varint(buf, pos + 1)
            stop = pos + length
            if stop > end or buf[pos] != 0x0A:  # Hash (field 1, LEN) first in a link
                raise InvalidInput("non-canonical link")
            size, start = decode_varint(buf, pos + 1)
            if start + size > stop:
                raise InvalidInput("truncated link hash")
            out.append(buf[start:start + size])
            pos = stop
    except (InvalidInput, IndexError):
        return [bytes(link.cid) for link in decode(buf).links]
    return out


def decode(buf: bytes | memoryview) -> PBNode:
    """Decode a DAG-PB block; raise InvalidInput when it is not one."""
    node = PBNode()
    seen_data = False
    for num, wire, value in pw.iter_fields(buf):
        if num == 2 and wire == pw.LEN:
            if seen_data:
                raise InvalidInput("dag-pb link after data")
            node.links.append(_decode_link(value))
        elif num == 1 and wire == pw.LEN:
            if seen_data:
                raise InvalidInput("dag-pb data field repeated")
            seen_data = True
            node.data = value
        else:
            raise InvalidInput(f"unexpected dag-pb field {num}")
    return node
