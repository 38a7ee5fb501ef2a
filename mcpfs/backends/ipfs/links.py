"""The CIDs a block links to, by codec: what pins, GC and DAG export walk.

``links_of(cid, block)`` decodes ``block`` according to ``cid.codec`` and returns the CIDs it
references, in block order (duplicates kept, as kubo's ``refs`` without ``--unique``):

- dag-pb: the Hash of every link;
- raw, identity (codec 0x00), libp2p-key and any codec we do not know: no links;
- dag-cbor: every tag-42 CID anywhere in the decoded value (decoded with ``dag_cbor``);
- dag-json: every ``{"/": "<cid>"}`` object anywhere in the JSON value.

``iter_dag(store, roots)`` walks whole DAGs with it (pins, CAR export).

The function is pure (no store access, no shared state) and raises only
:class:`InvalidInput` for a block that does not decode as its codec says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

import dag_cbor
from multiformats import CID as MFCID

from ...errors import BlockNotFound, InvalidInput
from . import dagpb
from .blockstore import Blockstore
from .cid import CID, DAG_CBOR, DAG_JSON, DAG_PB, IDENTITY

JSON_LINK_KEY: Final = "/"  # a dag-json link is a map whose only key is "/" and value a string
MAX_WALK_DEPTH: Final = 1024  # nesting deeper than this in a cbor/json value is rejected


def links_of(cid: CID, block: bytes | memoryview) -> list[CID]:
    """The CIDs ``block`` (the bytes of ``cid``) links to; InvalidInput when undecodable."""
    codec = cid.codec
    if codec == DAG_PB:
        try:
            return [link.cid for link in dagpb.decode(bytes(block)).links]
        except InvalidInput as exc:
            raise InvalidInput(f"{cid}: invalid dag-pb block: {exc}") from None
    if codec == DAG_CBOR:
        try:
            value = dag_cbor.decode(bytes(block))
        except Exception as exc:  # noqa: BLE001 - dag_cbor raises its own error classes
            raise InvalidInput(f"{cid}: invalid dag-cbor block: {exc}") from None
        return list(_walk(cid, value, _cbor_link))
    if codec == DAG_JSON:
        try:
            value = json.loads(bytes(block).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"{cid}: invalid dag-json block: {exc}") from None
        return list(_walk(cid, value, _json_link))
    return []


def _cbor_link(value: Any) -> CID | None:
    if isinstance(value, MFCID):
        return CID.from_bytes(bytes(value))
    return None


def _json_link(value: Any) -> CID | None:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(JSON_LINK_KEY), str):
        return CID.decode(value[JSON_LINK_KEY])
    return None


def _walk(cid: CID, root: Any, as_link) -> Iterator[CID]:
    """Depth-first, document order, without recursion (deep values cannot blow the stack)."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_WALK_DEPTH:
            raise InvalidInput(f"{cid}: value nested deeper than {MAX_WALK_DEPTH}")
        try:
            link = as_link(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{cid}: invalid link: {exc}") from None
        if link is not None:
            yield link
        elif isinstance(value, dict):
            stack.extend((value[k], depth + 1) for k in reversed(list(value)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in reversed(value))


def iter_dag(store: Blockstore, roots: Iterable[CID], skip_missing: bool = False,
             ) -> Iterator[tuple[CID, bytes]]:
    """Blocks of the DAGs under ``roots``: depth-first, links in block order, each CID once.

    This is go-car's TraverseV1 with an explore-all selector (kubo's ``dag export``). Identity
    CIDs are traversed but not yielded (their bytes are in the CID). Iterative, so deep DAGs
    cannot exhaust the stack.
    """
    seen: set[CID] = set()
    stack: list[Iterator[CID]] = [iter(list(roots))]
    while stack:
        cid = next(stack[-1], None)
        if cid is None:
            stack.pop()
            continue
        if cid in seen:
            continue
        seen.add(cid)
        try:
            block = store.get(cid)
        except BlockNotFound:
            if skip_missing:
                continue
            raise
        if cid.hash_code != IDENTITY:
            yield cid, block
        stack.append(iter(links_of(cid, block)))


__all__ = ["links_of", "iter_dag"]
