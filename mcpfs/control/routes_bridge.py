"""The bridge's routes: ``/api/v0/mcpfs/{cp,replicate,transfers,where,verify}``.

Paths are paths inside the mount (``/s3/bucket/key``); the CLI turns paths under the mount
point into these. ``cp`` and ``replicate`` start jobs in the daemon's transfer service and
stream NDJSON progress (``{"Bytes", "Total", "Files", "FilesTotal", "Done"}`` about every
``PROGRESS_EVERY`` s) until the jobs end, then one ``{"Results": [...]}`` line; a client
that disconnects leaves the jobs running. Without a mount (a control server on its own)
these routes answer kubo's client error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import trio
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from ..bridge import audit
from .common import ApiError, Ctx, ctx_of, json_response, one_arg

router = APIRouter(prefix="/mcpfs")

PROGRESS_EVERY: Final = 0.25  # seconds between progress lines


def _bridge(ctx: Ctx) -> Any:
    if ctx.bridge is None or ctx.vfs is None:
        raise ApiError("this command needs a running mount (mcpfs mount)")
    return ctx.bridge


def _line(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":")) + "\n").encode()


async def _follow(transfers: Any, ids: list[int]) -> AsyncIterator[bytes]:
    while True:
        progress = transfers.progress(ids)
        yield _line(progress)
        if progress["Done"]:
            break
        with trio.move_on_after(PROGRESS_EVERY):
            await transfers.wait(ids)
    yield _line({"Results": [transfers.jobs[i].as_json() for i in ids]})


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="application/json",
                             headers={"X-Chunked-Output": "1"})


@router.post("/cp")
async def mcpfs_cp(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                   recursive: bool = Query(False)):
    """Copy ``arg[0]`` to ``arg[1]`` inside the daemon (native routes when known)."""
    bridge = _bridge(ctx)
    if len(arg) < 2:
        raise ApiError('argument "dest" is required' if arg else 'argument "source" is required')
    ids = await bridge.transfers.submit(arg[0], arg[1], recursive)
    return _stream(_follow(bridge.transfers, ids))


@router.post("/replicate")
async def mcpfs_replicate(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                          to: list[str] = Query([]), recursive: bool = Query(False)):
    """Copy ``arg`` to every ``to``; one job (or tree) per destination."""
    bridge = _bridge(ctx)
    src = one_arg(arg, "path")
    targets = [t for item in to for t in item.split(",") if t]
    if not targets:
        raise ApiError('option "to" is required')
    ids: list[int] = []
    for dst in targets:
        ids += await bridge.transfers.submit(src, dst, recursive)
    return _stream(_follow(bridge.transfers, ids))


@router.post("/transfers")
async def mcpfs_transfers(ctx: Ctx = Depends(ctx_of)):
    """Every transfer the DB holds (running, done, failed), newest last."""
    bridge = _bridge(ctx)
    rows = await ctx.run(bridge.db.transfers_sync)
    out = []
    for row in rows:
        job = bridge.transfers.jobs.get(row.id)
        out.append(job.as_json() if job is not None else row.as_json())
    return json_response({"Transfers": out})


@router.post("/where")
async def mcpfs_where(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    bridge = _bridge(ctx)
    return json_response(await audit.where(bridge, ctx.vfs, one_arg(arg, "cid-or-path")))


@router.post("/verify")
async def mcpfs_verify(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    bridge = _bridge(ctx)
    return json_response(await audit.verify(bridge, ctx.vfs, one_arg(arg, "path")))
