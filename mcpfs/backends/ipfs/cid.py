"""CIDs, multihashes, multibase and unsigned varints, as kubo writes them.

A :class:`CID` is an immutable value holding its binary form; parsing and printing are the
only costly steps, and both raise :class:`InvalidInput` (errno EINVAL) on anything malformed:
the decoders never raise anything else, whatever bytes they are fed.

Supported: CIDv0 (base58btc, dag-pb, sha2-256) and CIDv1 in base58btc (``z``), base32 lower
(``b``) and base36 lower (``k``); multihash sha2-256 and identity; the codecs in ``CODECS``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

import base58

from ...errors import InvalidInput

# Multicodec codes (https://github.com/multiformats/multicodec/blob/master/table.csv).
RAW: Final = 0x55
DAG_PB: Final = 0x70
DAG_CBOR: Final = 0x71
DAG_JSON: Final = 0x0129
LIBP2P_KEY: Final = 0x72
CODECS: Final = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor", DAG_JSON: "dag-json",
                 LIBP2P_KEY: "libp2p-key"}
CODEC_BY_NAME: Final = {name: code for code, name in CODECS.items()}

SHA2_256: Final = 0x12
IDENTITY: Final = 0x00
HASHES: Final = {SHA2_256: "sha2-256", IDENTITY: "identity"}
# Largest identity multihash kubo accepts in a CID (boxo verifcid: 128 bytes).
MAX_IDENTITY_DIGEST: Final = 128
MAX_VARINT_BYTES: Final = 9  # varints above 2**63 are not valid multiformats


# ---------------------------------------------------------------- varints

def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as used by multiformats and protobuf."""
    if value < 0:
        raise InvalidInput(f"varint cannot be negative: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0,
                  max_bytes: int = MAX_VARINT_BYTES) -> tuple[int, int]:
    """Read a minimal unsigned varint at ``pos``; return (value, next position).

    ``max_bytes`` is 9 for multiformats; protobuf allows 10 (negative int64s).
    """
    value = 0
    shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise InvalidInput("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                raise InvalidInput("varint is not minimally encoded")
            return value, pos
        shift += 7
        if pos - start >= max_bytes:
            raise InvalidInput("varint too long")


# ---------------------------------------------------------------- multihash

def sha256_multihash(data: bytes | memoryview) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


def identity_multihash(data: bytes) -> bytes:
    return b"\x00" + encode_varint(len(data)) + bytes(data)


def decode_multihash(mh: bytes) -> tuple[int, bytes]:
    """Split a multihash into (code, digest), checking that its length is exact."""
    code, pos = decode_varint(mh)
    length, pos = decode_varint(mh, pos)
    digest = mh[pos:]
    if len(digest) != length:
        raise InvalidInput("multihash length does not match its digest")
    if code == SHA2_256 and length != 32:
        raise InvalidInput("sha2-256 multihash must have a 32-byte digest")
    return code, bytes(digest)


def multihash_of(code: int, data: bytes | memoryview) -> bytes:
    if code == SHA2_256:
        return sha256_multihash(data)
    if code == IDENTITY:
        return identity_multihash(bytes(data))
    raise InvalidInput(f"unsupported multihash code 0x{code:x}")


# ---------------------------------------------------------------- multibase

_B36_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b32_encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32_decode(text: str) -> bytes:
    text = text.upper()
    if len(text) % 8 in (1, 3, 6):
        raise InvalidInput("invalid base32 length")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError as exc:
        raise InvalidInput(f"invalid base32: {exc}") from None


def _b36_encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    digits = []
    while num:
        num, rem = divmod(num, 36)
        digits.append(_B36_ALPHABET[rem])
    return "0" * zeros + "".join(reversed(digits))


def _b36_decode(text: str) -> bytes:
    text = text.lower()
    zeros = len(text) - len(text.lstrip("0"))
    num = 0
    for ch in text[zeros:]:
        idx = _B36_ALPHABET.find(ch)
        if idx < 0:
            raise InvalidInput(f"invalid base36 character {ch!r}")
        num = num * 36 + idx
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def _b58_decode(text: str) -> bytes:
    try:
        return base58.b58decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidInput(f"invalid base58btc: {exc}") from None


MULTIBASES: Final = {"base58btc": "z", "base32": "b", "base36": "k"}


def multibase_encode(data: bytes, base: str) -> str:
    if base == "base58btc":
        return "z" + base58.b58encode(data).decode("ascii")
    if base == "base32":
        return "b" + _b32_encode(data)
    if base == "base36":
        return "k" + _b36_encode(data)
    raise InvalidInput(f"unsupported multibase {base!r}")


def multibase_decode(text: str) -> bytes:
    if not text:
        raise InvalidInput("empty multibase string")
    prefix, body = text[0], text[1:]
    if prefix == "z":
        return _b58_decode(body)
    if prefix in "bB":
        return _b32_decode(body)
    if prefix in "kK":
        return _b36_decode(body)
    raise InvalidInput(f"unsupported multibase prefix {prefix!r}")


# ---------------------------------------------------------------- CID

class CID:
    """An immutable content identifier; equal CIDs have equal binary forms.

    ``version``: 0 or 1; ``codec``: multicodec code; ``multihash``: the full multihash bytes.
    """

    __slots__ = ("_bytes", "version", "codec", "multihash", "_str")

    def __init__(self, version: int, codec: int, multihash: bytes) -> None:
        if version == 0:
            if codec != DAG_PB or multihash[:2] != b"\x12\x20" or len(multihash) != 34:
                raise InvalidInput("CIDv0 must be dag-pb with a sha2-256 multihash")
            raw = bytes(multihash)
        elif version == 1:
            raw = b"\x01" + encode_varint(codec) + bytes(multihash)
        else:
            raise InvalidInput(f"unsupported CID version {version}")
        self._bytes = raw
        self.version = version
        self.codec = codec
        self.multihash = bytes(multihash)
        self._str: str | None = None

    # -- construction
    @classmethod
    def of(cls, data: bytes | memoryview, codec: int = RAW, version: int = 1,
           hash_code: int = SHA2_256) -> CID:
        """The CID of a block's bytes."""
        return cls(version, codec, multihash_of(hash_code, data))

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> CID:
        raw = bytes(raw)
        cid, end = cls.read_prefix(raw, 0)
        if end != len(raw):
            raise InvalidInput("trailing bytes after CID")
        return cid

    @classmethod
    def read_prefix(cls, raw: bytes, pos: int) -> tuple[CID, int]:
        """Read one binary CID starting at ``pos`` (as in a CAR section); return it and its end."""
        if raw[pos:pos + 2] == b"\x12\x20":
            end = pos + 34
            if end > len(raw):
                raise InvalidInput("truncated CIDv0")
            return cls(0, DAG_PB, raw[pos:end]), end
        version, p = decode_varint(raw, pos)
        if version != 1:
            raise InvalidInput(f"unsupported CID version {version}")
        codec, p = decode_varint(raw, p)
        mh_start = p
        _, p = decode_varint(raw, p)
        length, p = decode_varint(raw, p)
        end = p + length
        if end > len(raw):
            raise InvalidInput("truncated CID multihash")
        mh = raw[mh_start:end]
        decode_multihash(mh)
        return cls(1, codec, mh), end

    @classmethod
    def decode(cls, value: str | bytes | CID) -> CID:
        """Parse a CID from its text form (or binary form, or a CID)."""
        if isinstance(value, CID):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(value)
        if not isinstance(value, str):
            raise InvalidInput(f"not a CID: {value!r}")
        text = value.strip()
        if len(text) == 46 and text.startswith("Qm"):
            raw = _b58_decode(text)
            if len(raw) != 34 or raw[:2] != b"\x12\x20":
                raise InvalidInput(f"invalid CIDv0: {text}")
            cid = cls(0, DAG_PB, raw)
        else:
            try:
                raw = multibase_decode(text)
            except InvalidInput as exc:
                raise InvalidInput(f"invalid CID {text!r}: {exc}") from None
            if raw[:1] == b"\x12":
                raise InvalidInput(f"invalid CID {text!r}: CIDv0 must be base58btc")
            try:
                cid = cls.from_bytes(raw)
            except InvalidInput as exc:
                raise InvalidInput(f"invalid CID {text!r}: {exc}") from None
        return cid

    # -- views
    def __bytes__(self) -> bytes:
        return self._bytes

    @property
    def digest(self) -> bytes:
        return decode_multihash(self.multihash)[1]

    @property
    def hash_code(self) -> int:
        return decode_varint(self.multihash)[0]

    @property
    def codec_name(self) -> str:
        return CODECS.get(self.codec, f"0x{self.codec:x}")

    def to_v1(self) -> CID:
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def to_v0(self) -> CID:
        return CID(0, self.codec, self.multihash)

    def encode(self, base: str | None = None) -> str:
        if self.version == 0:
            if base not in (None, "base58btc"):
                raise InvalidInput("CIDv0 can only be written in base58btc")
            return base58.b58encode(self._bytes).decode("ascii")
        return multibase_encode(self._bytes, base or "base32")

    def __str__(self) -> str:
        if self._str is None:
            self._str = self.encode()
        return self._str

    def __repr__(self) -> str:
        return f"CID({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __lt__(self, other: CID) -> bool:
        return self._bytes < other._bytes

    def verify(self, data: bytes | memoryview) -> bool:
        """True when ``data`` hashes to this CID's multihash."""
        code = self.hash_code
        if code == IDENTITY:
            return self.digest == bytes(data)
        return multihash_of(code, data) == self.multihash
