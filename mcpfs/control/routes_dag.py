"""kubo's ``pin/*``, ``block/*``, ``dag/*`` and ``repo/gc`` routes.

Each route parses kubo's query options, runs the matching :class:`RepoOps` method in a
worker thread (uploads are read from the request body inside that thread, see
multipart.py) and encodes kubo's JSON. Errors are kubo's error objects (common.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from .common import (ApiError, Ctx, bytes_response, ctx_of, json_response, ndjson_response,
                     one_arg, primed)
from .multipart import MultipartStream, body_chunks, boundary_of

router = APIRouter()


def _upload(request: Request) -> MultipartStream:
    """The request's multipart body; read it only inside a worker thread."""
    return MultipartStream(body_chunks(request.stream()),
                           boundary_of(request.headers.get("content-type")))


# ---------------------------------------------------------------- pin
@router.post("/pin/add")
async def pin_add(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                  recursive: bool = Query(True), name: str | None = Query(None)):
    one_arg(arg, "ipfs-path")
    pins = await ctx.run(lambda: [ctx.ops.pin_add(a, recursive, name) for a in arg])
    return json_response({"Pins": pins})


@router.post("/pin/rm")
async def pin_rm(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                 recursive: bool = Query(True)):
    one_arg(arg, "ipfs-path")
    pins = await ctx.run(lambda: [ctx.ops.pin_rm(a, recursive) for a in arg])
    return json_response({"Pins": pins})


@router.post("/pin/ls")
async def pin_ls(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                 type: str = Query("all"), quiet: bool = Query(False),  # noqa: A002
                 stream: bool = Query(False), names: bool = Query(False)):
    """``{"Keys": {cid: {"Type"}}}``, or with ``stream`` one ``{"Cid", "Type"}`` per line
    in the CLI's order (recursive, direct, then indirect). ``Name`` only with ``names``."""
    def entry(pin_type: str, name: str | None) -> dict[str, str]:
        out = {"Type": pin_type}
        if names and name:
            out["Name"] = name
        return out

    if stream:
        return ndjson_response(ctx, lambda: ({"Cid": cid, **entry(t, n)}
                                             for cid, t, n in ctx.ops.pin_ls(arg, type)))
    keys = await ctx.run(lambda: {cid: entry(t, n) for cid, t, n in ctx.ops.pin_ls(arg, type)})
    return json_response({"Keys": keys})


@router.post("/repo/gc")
async def repo_gc(ctx: Ctx = Depends(ctx_of), quiet: bool = Query(False),
                  stream_errors: bool = Query(False, alias="stream-errors")):
    removed = await ctx.run(ctx.ops.gc)
    return ndjson_response(ctx, lambda: iter(removed))


# ---------------------------------------------------------------- block
@router.post("/block/put")
async def block_put(request: Request, ctx: Ctx = Depends(ctx_of),
                    cid_codec: str = Query("raw", alias="cid-codec"),
                    mhtype: str = Query("sha2-256"), pin: bool = Query(False),
                    allow_big_block: bool = Query(False, alias="allow-big-block")):
    stream = _upload(request)
    result = await ctx.run(lambda: ctx.ops.block_put(stream.first_file(), cid_codec, mhtype,
                                                     pin, allow_big_block))
    return json_response(result)


@router.post("/block/get")
async def block_get(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    data = await ctx.run(ctx.ops.block_get, one_arg(arg, "cid"))
    return bytes_response(ctx, iter([data]), length=len(data))


@router.post("/block/stat")
async def block_stat(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    return json_response(await ctx.run(ctx.ops.block_stat, one_arg(arg, "cid")))


@router.post("/block/rm")
async def block_rm(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                   force: bool = Query(False), quiet: bool = Query(False)):
    """One ``{"Hash", "Error"?}`` line per CID; a failed CID does not fail the request."""
    one_arg(arg, "cid")
    results = await ctx.run(ctx.ops.block_rm, arg, force)
    return ndjson_response(ctx, lambda: iter(results))


# ---------------------------------------------------------------- dag
@router.post("/dag/put")
async def dag_put(request: Request, ctx: Ctx = Depends(ctx_of),
                  store_codec: str = Query("dag-cbor", alias="store-codec"),
                  input_codec: str = Query("dag-json", alias="input-codec"),
                  hash: str = Query("sha2-256"), pin: bool = Query(False),  # noqa: A002
                  allow_big_block: bool = Query(False, alias="allow-big-block")):
    stream = _upload(request)
    cid = await ctx.run(lambda: ctx.ops.dag_put(stream.first_file(), store_codec, input_codec,
                                                hash, pin, allow_big_block))
    return json_response({"Cid": {"/": cid}})


@router.post("/dag/get")
async def dag_get(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                  output_codec: str = Query("dag-json", alias="output-codec")):
    data = await ctx.run(ctx.ops.dag_get, one_arg(arg, "ref"), output_codec)
    return bytes_response(ctx, iter([data]), length=len(data))


@router.post("/dag/resolve")
async def dag_resolve(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    result = await ctx.run(ctx.ops.dag_resolve, one_arg(arg, "ref"))
    return json_response({"Cid": {"/": result["Cid"]}, "RemPath": result["RemPath"]})


@router.post("/dag/export")
async def dag_export(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    path = one_arg(arg, "root")
    chunks = await ctx.run(lambda: primed(ctx.ops.dag_export(path)))
    return bytes_response(ctx, chunks, media_type="application/vnd.ipld.car")


@router.post("/dag/import")
async def dag_import(request: Request, ctx: Ctx = Depends(ctx_of),
                     pin_roots: bool = Query(True, alias="pin-roots"),
                     stats: bool = Query(False), silent: bool = Query(False)):
    """Every CAR part is imported; then one ``{"Root": {"Cid", "PinErrorMsg"}}`` line per
    root and, with ``stats``, ``{"Stats": {"BlockCount", "BlockBytesCount"}}``."""
    stream = _upload(request)

    def work():
        roots, blocks, nbytes = [], 0, 0
        for part in stream.parts():
            part_roots, count, size = ctx.ops.dag_import(part, pin_roots)
            roots += [r for r in part_roots if r not in roots]
            blocks += count
            nbytes += size
        if not blocks and not roots:
            raise ApiError("no CAR file was given")
        return roots, blocks, nbytes

    roots, blocks, nbytes = await ctx.run(work)
    lines = [] if silent else [{"Root": {"Cid": {"/": r}, "PinErrorMsg": ""}} for r in roots]
    if stats and not silent:
        lines.append({"Stats": {"BlockCount": blocks, "BlockBytesCount": nbytes}})
    return ndjson_response(ctx, lambda: iter(lines))
