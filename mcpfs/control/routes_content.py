"""kubo's ``id``, ``version``, ``add``, ``cat`` and ``get`` routes.

``add`` reads the multipart body in a worker thread as it arrives (see upload.py) and
answers once the body has ended, with kubo's NDJSON lines; ``cat`` and ``get`` stream from
worker threads piece by piece (``X-Content-Length`` on cat, a PAX tar on get). Errors are
kubo's error objects (common.py); nothing here holds state between requests.
"""

from __future__ import annotations

import base64
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version as pkg_version
from pathlib import Path

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, Query, Request

from ..backends.ipfs.importer import parse_chunker, params_for
from ..backends.ipfs.pins import atomic_write
from ..errors import InvalidInput
from .common import (Ctx, bytes_response, ctx_of, json_response, ndjson_response, one_arg,
                     primed)
from .multipart import MultipartStream, body_chunks, boundary_of
from .upload import add_parts

router = APIRouter()

REPO_VERSION = "16"  # kubo's fs-repo version our layout imitates
IDENTITY_FILE = "identity.key"  # PKCS8 PEM ed25519 key of this node, 0600


def mcpfs_version() -> str:
    try:
        return pkg_version("mcpfs")
    except PackageNotFoundError:
        return "0.0.0"


def _identity(root: Path) -> tuple[str, str]:
    """(peer ID, base64 libp2p PublicKey) of the repo's ed25519 key, created on first use.

    The networking layer may later own this key; the file format is plain PKCS8 PEM.
    """
    path = root / IDENTITY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    else:
        key = Ed25519PrivateKey.generate()
        atomic_write(path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        os.chmod(path, 0o600)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    proto = b"\x08\x01\x12\x20" + raw  # libp2p crypto.pb PublicKey{Type: Ed25519, Data}
    peer_id = base58.b58encode(b"\x00" + bytes([len(proto)]) + proto).decode()
    return peer_id, base64.b64encode(proto).decode()


@router.post("/id")
async def id_(ctx: Ctx = Depends(ctx_of)):
    peer_id, public_key = await ctx.run(_identity, ctx.repo.root)
    return json_response({"ID": peer_id, "PublicKey": public_key, "Addresses": [],
                          "AgentVersion": f"mcpfs/{mcpfs_version()}",
                          "Protocols": []})


@router.post("/version")
async def version_():
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                          platform.machine())
    return json_response({"Version": mcpfs_version(), "Commit": "", "Repo": REPO_VERSION,
                          "System": f"{machine}/{sys.platform}",
                          "Golang": f"python{platform.python_version()}"})


@router.post("/add")
async def add(request: Request, ctx: Ctx = Depends(ctx_of),
              cid_version: int | None = Query(None, alias="cid-version"),
              raw_leaves: bool | None = Query(None, alias="raw-leaves"),
              chunker: str | None = Query(None),
              trickle: bool = Query(False),
              only_hash: bool = Query(False, alias="only-hash"),
              pin: bool = Query(True),
              wrap: bool = Query(False, alias="wrap-with-directory"),
              quiet: bool = Query(False), quieter: bool = Query(False),
              profile: str | None = Query(None)):
    """Import the uploaded files; quiet/quieter are client-side filters in kubo and are
    accepted for compatibility (every line is sent)."""
    params = params_for(profile, cid_version=cid_version, raw_leaves=raw_leaves,
                        chunk_size=parse_chunker(chunker) if chunker else None,
                        layout="trickle" if trickle else None)
    boundary = boundary_of(request.headers.get("content-type"))

    def work():
        stream = MultipartStream(body_chunks(request.stream()), boundary)
        return add_parts(ctx.ops, stream, params, only_hash=only_hash, wrap=wrap, pin=pin)

    lines = await ctx.run(work)
    return ndjson_response(ctx, lambda: iter(lines))


@router.post("/cat")
async def cat(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
              offset: int = Query(0, ge=0), length: int | None = Query(None, ge=0)):
    size, chunks = await ctx.run(ctx.ops.cat, one_arg(arg, "ipfs-path"), offset, length)
    chunks = await ctx.run(primed, chunks)
    return bytes_response(ctx, chunks, length=size)


@router.post("/get")
async def get(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
              archive: bool = Query(False), compress: bool = Query(False)):
    """A tar of the path (kubo always sends tar; ``archive`` only matters to its CLI)."""
    path = one_arg(arg, "ipfs-path")
    if compress:
        raise InvalidInput("compression is not supported")
    chunks = await ctx.run(lambda: primed(ctx.ops.get_tar(path)))
    return bytes_response(ctx, chunks, media_type="application/x-tar")
