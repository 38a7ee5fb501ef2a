"""IPLD codecs (DAG-CBOR, DAG-JSON, DAG-PB, raw) and kubo's ``dag`` and ``block`` commands.

Values in the IPLD data model are plain Python: None, bool, int, float, str, bytes, list,
dict (str keys) and :class:`CID` for links. DAG-CBOR goes through the ``dag-cbor`` package
(multiformats CIDs are converted to ours at that boundary); DAG-JSON is written here, byte for
byte as kubo (go-ipld-prime) writes it: keys sorted by their UTF-8 bytes, no whitespace,
``{"/": cid}`` links, ``{"/": {"bytes": base64}}`` bytes, floats formatted like Go's
encoding/json (ES6 number formatting, so a whole float 1.0 is written ``1`` as kubo does).
DAG-PB uses kubo's data model ``{"Data": bytes, "Links": [{"Hash", "Name", "Tsize"}]}``.

Errors: every decoder raises only :class:`InvalidInput`, whatever bytes it is fed; a missing
block is :class:`BlockNotFound`, a missing path segment :class:`NotFound`. Nothing here holds
resources or shared state; blocks go to and come from the blockstore passed in.
"""

from __future__ import annotations

import base64
import json
import math
import re
from decimal import Decimal
from typing import Any, Final

import dag_cbor
from dag_cbor.decoding.err import CBORDecodingError
from dag_cbor.encoding.err import CBOREncodingError
from multiformats import CID as MFCID

from ...errors import BlockNotFound, InvalidInput, NotFound
from . import dagpb, hamt, unixfs
from .blockstore import Blockstore
from .cid import CID, CODEC_BY_NAME, DAG_CBOR, DAG_JSON, DAG_PB, HASHES, RAW, SHA2_256

# kubo refuses blocks above the bitswap limit unless --allow-big-block (cmdutils.SoftBlockLimit).
SOFT_BLOCK_LIMIT: Final = 2 * 1024 * 1024
# Integers CBOR can carry (major types 0 and 1); DAG-JSON is held to the same range.
INT_MIN: Final = -(1 << 64)
INT_MAX: Final = (1 << 64) - 1
# Go's encoding/json (and refmt, which kubo's dag-json uses) switches to exponent notation
# outside [1e-6, 1e21), like JavaScript's Number.prototype.toString.
FLOAT_FIXED_MIN: Final = 1e-6
FLOAT_FIXED_MAX: Final = 1e21
HASH_BY_NAME: Final = {name: code for code, name in HASHES.items()}
SUPPORTED_CODECS: Final = ("dag-cbor", "dag-json", "dag-pb", "raw")
# Errors the third-party CBOR/multiformats code raises on malformed input.
_LIB_ERRORS: Final = (CBORDecodingError, CBOREncodingError, ValueError, LookupError, TypeError,
                      OverflowError, RecursionError, AssertionError)

# ---------------------------------------------------------------- DAG-JSON

_JSON_ESCAPE = re.compile('[\x00-\x1f"\\\\\u2028\u2029\ud800-\udfff]')
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _JSON_ESCAPES:
        return _JSON_ESCAPES[ch]
    if "\ud800" <= ch <= "\udfff":  # a lone surrogate: Go writes invalid UTF-8 as U+FFFD
        return "\\ufffd"
    return f"\\u{ord(ch):04x}"


def _json_string(text: str) -> str:
    return '"' + _JSON_ESCAPE.sub(_escape_char, text) + '"'


def format_float(value: float) -> str:
    """A float as Go's encoding/json writes it (shortest round-trip digits)."""
    if not math.isfinite(value):
        raise InvalidInput(f"{value} is not an IPLD float")
    magnitude = abs(value)
    if magnitude and (magnitude < FLOAT_FIXED_MIN or magnitude >= FLOAT_FIXED_MAX):
        mantissa, _, exponent = repr(value).partition("e")  # repr uses e-notation here
        exp = int(exponent)
        return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}".replace("e-0", "e-")
    return format(Decimal(repr(value)).normalize(), "f")


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def _json_parts(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        _check_int(value)
        out.append(str(value))
    elif isinstance(value, float):
        out.append(format_float(value))
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = base64.b64encode(bytes(value)).decode("ascii").rstrip("=")
        out.append('{"/":{"bytes":"' + text + '"}}')
    elif isinstance(value, CID):
        out.append('{"/":"' + str(value) + '"}')
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _json_parts(item, out)
        out.append("]")
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise InvalidInput("IPLD map keys must be strings")
        keys = sorted(value, key=_sort_key)
        if keys and keys[0] == "/":
            _check_reserved(value[keys[0]])
        out.append("{")
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(_json_string(key))
            out.append(":")
            _json_parts(value[key], out)
        out.append("}")
    else:
        raise InvalidInput(f"{type(value).__name__} is not an IPLD kind")


def _check_int(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise InvalidInput(f"integer {value} is outside the 64-bit range")
    return value


def _check_reserved(first: Any) -> None:
    """Reject maps whose first key "/" would read back as a link or bytes (DAG-JSON spec)."""
    if isinstance(first, str) or (
            isinstance(first, dict) and first and next(iter(first)) == "bytes"
            and isinstance(first["bytes"], str)):
        raise InvalidInput('map in the DAG-JSON reserved namespace (first key "/")')


def dagjson_encode(value: Any) -> bytes:
    """Canonical DAG-JSON bytes of ``value``; InvalidInput for what DAG-JSON cannot hold."""
    out: list[str] = []
    try:
        _json_parts(value, out)
        return "".join(out).encode("utf-8")
    except RecursionError:
        raise InvalidInput("value nested too deeply") from None


def _b64decode(text: str) -> bytes:
    try:
        if "=" not in text:
            text += "=" * (-len(text) % 4)
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid DAG-JSON bytes: {exc}") from None


def _json_object(pairs: list[tuple[str, Any]]) -> Any:
    if pairs and pairs[0][0] == "/":
        first = pairs[0][1]
        if isinstance(first, str):
            if len(pairs) > 1:
                raise InvalidInput('DAG-JSON link map with extra keys')
            return CID.decode(first)
        if (isinstance(first, dict) and first and next(iter(first)) == "bytes"
                and isinstance(first["bytes"], str)):
            if len(first) > 1 or len(pairs) > 1:
                raise InvalidInput('DAG-JSON bytes map with extra keys')
            return _b64decode(first["bytes"])
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidInput("DAG-JSON map has a repeated key")
    return result


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"float {text} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not valid DAG-JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_strings(value: Any) -> Any:
    """Lone surrogates from ``\\udxxx`` escapes become U+FFFD, as Go decodes them."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean_strings(item) for item in value]
    if isinstance(value, dict):
        return {_clean_strings(k): _clean_strings(v) for k, v in value.items()}
    return value


def dagjson_decode(data: bytes | memoryview) -> Any:
    """Decode DAG-JSON (key order is not enforced, as the spec asks of decoders)."""
    try:
        text = bytes(data).decode("utf-8")
        value = json.loads(text, object_pairs_hook=_json_object, parse_float=_json_float,
                           parse_int=lambda s: _check_int(int(s)), parse_constant=_json_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidInput(f"invalid DAG-JSON: {exc}") from None
    return _clean_strings(value) if "\\ud" in text or "\\uD" in text else value


# ---------------------------------------------------------------- DAG-CBOR

def _to_mf(value: Any) -> Any:
    if isinstance(value, CID):
        return MFCID.decode(bytes(value))
    if isinstance(value, (list, tuple)):
        return [_to_mf(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_mf(item) for key, item in value.items()}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{value} is not an IPLD float")
    return value


def _from_mf(value: Any) -> Any:
    if isinstance(value, MFCID):
        return CID.from_bytes(bytes(value))
    if isinstance(value, list):
        return [_from_mf(item) for item in value]
    if isinstance(value, dict):
        return {key: _from_mf(item) for key, item in value.items()}
    return value


def dagcbor_encode(value: Any) -> bytes:
    try:
        return dag_cbor.encode(_to_mf(value))
    except _LIB_ERRORS as exc:
        raise InvalidInput(f"cannot encode as DAG-CBOR: {exc}") from None


def dagcbor_decode(data: bytes | memoryview) -> Any:
    try:
        return _from_mf(dag_cbor.decode(bytes(data)))
    except _LIB_ERRORS as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise InvalidInput(f"invalid DAG-CBOR: {first_line}") from None


# ---------------------------------------------------------------- DAG-PB data model

def dagpb_to_value(data: bytes | memoryview) -> dict[str, Any]:
    """A DAG-PB block in kubo's data model; absent optional fields are left out."""
    node = dagpb.decode(data)
    links = []
    for link in node.links:
        item: dict[str, Any] = {"Hash": link.cid}
        if link.name is not None:
            item["Name"] = link.name
        if link.tsize is not None:
            item["Tsize"] = link.tsize
        links.append(item)
    value: dict[str, Any] = {"Links": links}
    if node.data is not None:
        value["Data"] = node.data
    return value


def value_to_dagpb(value: Any) -> bytes:
    """Encode a data-model value of the DAG-PB schema; links keep their order, as in kubo."""
    if not isinstance(value, dict) or not isinstance(value.get("Links"), list):
        raise InvalidInput("Invalid DAG-PB form (Links must be a list)")
    if set(value) - {"Data", "Links"}:
        raise InvalidInput("Invalid DAG-PB form (extraneous properties)")
    data = value.get("Data")
    if "Data" in value and not isinstance(data, bytes):
        raise InvalidInput("Invalid DAG-PB form (Data must be bytes)")
    links = []
    for item in value["Links"]:
        if not isinstance(item, dict) or not isinstance(item.get("Hash"), CID):
            raise InvalidInput("Invalid DAG-PB form (link must have a Hash)")
        if set(item) - {"Hash", "Name", "Tsize"}:
            raise InvalidInput("Invalid DAG-PB form (extraneous properties on link)")
        name, tsize = item.get("Name"), item.get("Tsize")
        if "Name" in item and not isinstance(name, str):
            raise InvalidInput("Invalid DAG-PB form (link Name must be a string)")
        if "Tsize" in item and (not isinstance(tsize, int) or isinstance(tsize, bool)
                                or not 0 <= tsize < 1 << 63):
            raise InvalidInput("Invalid DAG-PB form (link Tsize must be a non-negative int)")
        links.append(dagpb.PBLink(item["Hash"], name, tsize))
    return dagpb.PBNode(links, data).encode(sort_links=False)


# ---------------------------------------------------------------- codec dispatch

def codec_code(codec: str | int) -> int:
    """The multicodec code of one of :data:`SUPPORTED_CODECS` (by name or code)."""
    code = CODEC_BY_NAME.get(codec) if isinstance(codec, str) else codec
    if code not in (DAG_CBOR, DAG_JSON, DAG_PB, RAW):
        raise InvalidInput(f"unsupported codec {codec!r} "
                           f"(supported: {', '.join(SUPPORTED_CODECS)})")
    return code


def decode(data: bytes | memoryview, codec: str | int) -> Any:
    code = codec_code(codec)
    if code == DAG_CBOR:
        return dagcbor_decode(data)
    if code == DAG_JSON:
        return dagjson_decode(data)
    if code == DAG_PB:
        return dagpb_to_value(data)
    return bytes(data)


def encode(value: Any, codec: str | int) -> bytes:
    code = codec_code(codec)
    if code == DAG_CBOR:
        return dagcbor_encode(value)
    if code == DAG_JSON:
        return dagjson_encode(value)
    if code == DAG_PB:
        return value_to_dagpb(value)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidInput("the raw codec can only store bytes")
    return bytes(value)


# ---------------------------------------------------------------- block commands

def _check_size(data: bytes, allow_big_block: bool) -> None:
    if len(data) > SOFT_BLOCK_LIMIT and not allow_big_block:
        raise InvalidInput("produced block is over 2MiB: big blocks can't be exchanged with other "
                           "peers; pass allow_big_block to override")


def block_put(store: Blockstore, data: bytes, codec: str = "raw", mhtype: str = "sha2-256",
              version: int = 1, allow_big_block: bool = False) -> CID:
    """``ipfs block put``: CIDv1 raw sha2-256 by default; the bytes are not validated."""
    code = CODEC_BY_NAME.get(codec)
    if code is None:
        raise InvalidInput(f"unsupported cid codec {codec!r}")
    hash_code = HASH_BY_NAME.get(mhtype)
    if hash_code is None:
        raise InvalidInput(f"unrecognized multihash function: {mhtype}")
    if version == 0 and (code != DAG_PB or hash_code != SHA2_256):
        raise InvalidInput("only dag-pb with sha2-256 is allowed with CIDv0")
    data = bytes(data)
    _check_size(data, allow_big_block)
    cid = CID.of(data, code, version, hash_code)
    store.put(cid, data)
    return cid


def block_get(store: Blockstore, cid: CID | str) -> bytes:
    return store.get(CID.decode(cid))


def block_stat(store: Blockstore, cid: CID | str) -> dict[str, Any]:
    """``ipfs block stat``: ``{"Key": cid, "Size": bytes}``."""
    cid = CID.decode(cid)
    return {"Key": str(cid), "Size": len(store.get(cid))}


def block_rm(store: Blockstore, cids: list[CID | str], force: bool = False,
             is_pinned=None) -> list[dict[str, str]]:
    """``ipfs block rm``: one ``{"Hash", "Error"?}`` per CID; ``force`` ignores missing blocks.

    ``is_pinned(cid) -> str | None`` (the pin type) keeps pinned blocks, as kubo does.
    """
    results = []
    for raw in cids:
        cid = CID.decode(raw)
        entry = {"Hash": str(cid)}
        pin = is_pinned(cid) if is_pinned is not None else None
        if pin:
            entry["Error"] = f"pinned: {pin}"
        else:
            try:
                store.delete(cid)
            except BlockNotFound:
                if not force:
                    entry["Error"] = f"ipld: could not find {cid}"
        results.append(entry)
    return results


# ---------------------------------------------------------------- dag commands

def dag_put(store: Blockstore, data: bytes, input_codec: str = "dag-json",
            store_codec: str = "dag-cbor", hash: str = "sha2-256",
            allow_big_block: bool = False) -> CID:
    """``ipfs dag put``: decode ``data`` as ``input_codec``, store it as CIDv1 ``store_codec``."""
    hash_code = HASH_BY_NAME.get(hash)
    if hash_code is None:
        raise InvalidInput(f"unrecognized multihash function: {hash}")
    block = encode(decode(data, input_codec), store_codec)
    _check_size(block, allow_big_block)
    cid = CID.of(block, codec_code(store_codec), 1, hash_code)
    store.put(cid, block)
    return cid


def _load(store: Blockstore, cid: CID) -> Any:
    data = store.get(cid)
    try:
        return decode(data, cid.codec)
    except InvalidInput as exc:
        raise InvalidInput(f"{cid}: {exc}") from None


def _parse_path(path: str) -> tuple[CID, list[str], bool]:
    """Split ``[/ipfs/|/ipld/]<cid>[/seg...]``; the flag says whether dag-pb is UnixFS-pathed."""
    parts = [part for part in path.split("/") if part]
    unixfs_paths = True
    if parts and parts[0] in ("ipfs", "ipld") and path.startswith("/"):
        unixfs_paths = parts.pop(0) == "ipfs"
    elif path.startswith("/"):
        raise InvalidInput(f"unsupported path {path!r}")
    if not parts:
        raise InvalidInput(f"invalid path {path!r}")
    return CID.decode(parts[0]), parts[1:], unixfs_paths


def _pb_child(store: Blockstore, cid: CID, value: dict[str, Any], name: str) -> CID:
    """The named link of a dag-pb node, looking inside HAMT shards as kubo's UnixFS ADL does."""
    for link in value["Links"]:
        if link.get("Name") == name:
            return link["Hash"]
    try:
        fsdata = unixfs.decode(value.get("Data"))
    except InvalidInput:
        fsdata = None
    if fsdata is not None and fsdata.type == unixfs.HAMT_SHARD:
        def get_node(child: CID) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
            node = dagpb.decode(store.get(child))
            return node, unixfs.decode(node.data)
        node = dagpb.decode(store.get(cid))
        found = hamt.find(node, fsdata, name, get_node)
        if found is not None:
            return found.cid
    raise NotFound(f"no link named {name!r} under {cid}")


def _step(value: Any, segment: str, cid: CID) -> Any:
    if isinstance(value, dict):
        if segment in value:
            return value[segment]
    elif isinstance(value, list):
        if segment.isascii() and segment.isdigit() and int(segment) < len(value):
            return value[int(segment)]
    raise NotFound(f"no link named {segment!r} under {cid}")


def resolve(store: Blockstore, path: str) -> tuple[CID, list[str], Any]:
    """Walk ``path`` across blocks like boxo's ResolveToLastNode.

    Returns the CID of the last block reached, the path remaining inside it, and the value at
    the end. A link at the end is followed, so the remainder is then empty.
    """
    cid, segments, unixfs_paths = _parse_path(path)
    value = _load(store, cid)
    remainder: list[str] = []
    for segment in segments:
        if cid.codec == DAG_PB and unixfs_paths and not remainder:
            value = _pb_child(store, cid, value, segment)
        else:
            value = _step(value, segment, cid)
            remainder.append(segment)
        if isinstance(value, CID):
            cid, value, remainder = value, _load(store, value), []
    return cid, remainder, value


def dag_resolve(store: Blockstore, path: str) -> dict[str, Any]:
    """``ipfs dag resolve``: ``{"Cid": cid, "RemPath": "a/b"}``."""
    cid, remainder, _ = resolve(store, path)
    return {"Cid": cid, "RemPath": "/".join(remainder)}


def dag_get(store: Blockstore, path: str, output_codec: str = "dag-json") -> bytes:
    """``ipfs dag get``: the value at ``path`` encoded in ``output_codec``."""
    codec_code(output_codec)
    _, _, value = resolve(store, path)
    return encode(value, output_codec)


__all__ = ["dagjson_encode", "dagjson_decode", "dagcbor_encode", "dagcbor_decode",
           "dagpb_to_value", "value_to_dagpb", "encode", "decode", "codec_code", "format_float",
           "block_put", "block_get", "block_stat", "block_rm", "dag_put", "dag_get",
           "dag_resolve", "resolve", "SOFT_BLOCK_LIMIT"]
