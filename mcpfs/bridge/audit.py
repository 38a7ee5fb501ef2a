"""``mcpfs where`` and ``mcpfs verify``: what the provenance DB knows, checked against the
backends.

- :func:`identity_of_path`: the identity of a file in the mount: the recorded one while the
  file still has the recorded version (CID, ETag), else computed by reading the file
  through its Mount (and recorded).
- :func:`where`: every recorded location of a CID or of a path's content, plus the DAG of
  that CID when this node holds it.
- :func:`verify`: re-read each location of a path's content and compare identities:
  ``ok``, ``changed`` (other bytes now: the new identity is recorded, the old row
  dropped), ``missing`` (gone: the row is dropped) or ``error`` (unreadable: kept).

Errors: a path outside every subtree or a directory is McpfsError (ENOENT, EISDIR); a
location that fails to read is reported, not raised.

Concurrency: trio thread; reads go through the Mounts (their own limiters), hashing in a
thread per piece.
"""

from __future__ import annotations

import errno
from typing import Any, Final

import trio

from ..backends.ipfs.cid import CID
from ..backends.ipfs.stream_import import StreamImport
from ..errors import InvalidInput, McpfsError
from .core import Bridge, ipfs_location, plain_version
from .db import Location
from .transfers import norm

PIECE: Final = 1 << 20


async def _read_identity(bridge: Bridge, mount: Any, sub: str) -> tuple[str, str | None, int]:
    """(identity, version, size) of the file ``sub`` of ``mount``, by reading it all."""
    attr = await mount.lookup(sub)
    if attr.is_dir:
        raise McpfsError(f"/{mount.name}/{sub}: is a directory", errno=errno.EISDIR)
    reader = await mount.open_read(sub)
    hasher = StreamImport.hashing(bridge.params)
    try:
        offset = 0
        while data := await reader.read(offset, PIECE):
            offset += len(data)
            await trio.to_thread.run_sync(hasher.feed, data)
        imported = await trio.to_thread.run_sync(hasher.finish)
    except BaseException:
        hasher.abandon()
        raise
    finally:
        await reader.close()
    if imported is None:
        raise McpfsError(f"/{mount.name}/{sub}: could not hash", errno=errno.EIO)
    version = plain_version(getattr(reader, "identity", None))
    if mount.name == "ipfs":
        version = str(getattr(reader, "cid", version))
    return str(imported.cid), version, offset


def _location(mount: Any, sub: str, reader_cid: str | None) -> str:
    return ipfs_location(reader_cid) if mount.name == "ipfs" and reader_cid else \
        f"/{mount.name}/{sub}"


async def identity_of_path(bridge: Bridge, vfs: Any, path: str) -> Location:
    """The recorded row of the file at ``path`` (computing the identity when unknown)."""
    mount, sub = vfs.route(norm(path).strip("/"))
    attr = await mount.lookup(sub)
    if attr.is_dir:
        raise McpfsError(f"{norm(path)}: is a directory", errno=errno.EISDIR)
    version = attr.cid_text if mount.name in ("ipfs", "mfs") else None
    location = _location(mount, sub, attr.cid_text)
    row = await trio.to_thread.run_sync(bridge.db.lookup_sync, location)
    if row is not None and (version is None or row.version == version) \
            and mount.name in ("ipfs", "mfs"):
        return row
    if row is not None and mount.name not in ("ipfs", "mfs"):
        current = await _current_version(mount, sub)
        if current is not None and current == row.version:
            return row
    identity, version, size = await _read_identity(bridge, mount, sub)
    source = row.source if row is not None else None
    loc = Location(location, identity, version, size, source)
    bridge.db.record(loc)
    return loc


async def _current_version(mount: Any, sub: str) -> str | None:
    """The version (ETag, blob id) a reader of ``sub`` would read now."""
    reader = await mount.open_read(sub)
    try:
        return plain_version(getattr(reader, "identity", None))
    finally:
        await reader.close()


def _as_cid(text: str) -> str | None:
    try:
        return str(CID.decode(text))
    except (InvalidInput, ValueError):
        return None


async def where(bridge: Bridge, vfs: Any, arg: str) -> dict[str, Any]:
    """``{"Identity", "Locations": [{"Location", "Version", "Size", "Source"}]}``."""
    cid = _as_cid(arg.strip("/")) if "/" not in arg.strip("/") else None
    if cid is not None:
        row = await trio.to_thread.run_sync(bridge.db.lookup_sync, ipfs_location(cid))
        identity = row.identity if row is not None else cid
    else:
        identity = (await identity_of_path(bridge, vfs, arg)).identity
    rows = await trio.to_thread.run_sync(bridge.db.locations_sync, identity)
    out = [{"Location": r.location, "Version": r.version, "Size": r.size,
            "Source": r.source} for r in rows]
    if bridge.repo is not None and not any(r.location == ipfs_location(identity) for r in rows):
        ident_cid = CID.decode(identity)
        if await trio.to_thread.run_sync(bridge.repo.store.has, ident_cid):
            out.append({"Location": ipfs_location(identity), "Version": identity,
                        "Size": None, "Source": None})
    return {"Identity": identity, "Locations": out}


async def verify(bridge: Bridge, vfs: Any, path: str) -> dict[str, Any]:
    """Re-read every location of the content of ``path`` (see the module docstring)."""
    mount, sub = vfs.route(norm(path).strip("/"))
    attr = await mount.lookup(sub)
    location = _location(mount, sub, attr.cid_text)
    row = await trio.to_thread.run_sync(bridge.db.lookup_sync, location)
    if row is None:
        row = await identity_of_path(bridge, vfs, path)
    expected = row.identity
    rows = await trio.to_thread.run_sync(bridge.db.locations_sync, expected)
    if not any(r.location == location for r in rows):
        rows.append(row)
    results = []
    for r in rows:
        results.append(await _check(bridge, vfs, r, expected))
    return {"Identity": expected, "Results": results,
            "Ok": all(x["State"] == "ok" for x in results)}


async def _check(bridge: Bridge, vfs: Any, row: Location, expected: str) -> dict[str, Any]:
    out: dict[str, Any] = {"Location": row.location, "Expected": expected}
    try:
        mount, sub = vfs.route(row.location.strip("/"))
        mount.refresh(sub)  # what the backend holds now, not what a cache remembers
        identity, version, size = await _read_identity(bridge, mount, sub)
    except McpfsError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            bridge.db.forget(row.location)
            return {**out, "State": "missing", "Error": str(exc)}
        return {**out, "State": "error", "Error": str(exc)}
    out["Found"] = identity
    if identity == expected:
        bridge.db.record(Location(row.location, identity, version, size, row.source))
        return {**out, "State": "ok"}
    bridge.db.record(Location(row.location, identity, version, size, None))
    return {**out, "State": "changed"}


__all__ = ["identity_of_path", "where", "verify"]
