"""kubo's ``files/*`` routes over the repo's MFS.

MFS methods are already async and run their block work in their own worker threads under
MFS's lock (see backends/ipfs/mfs.py), so these routes await them directly. ``files/write``
parses the upload's part headers in a server thread, then hands the part to
``MFS.write``, whose worker thread pulls the body as it imports it (no full buffering).
Mutations flush by default, like kubo's ``--flush=true``. Errors: kubo's error objects.
"""

from __future__ import annotations

import posixpath
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from ..errors import McpfsError
from .common import ApiError, Ctx, ctx_of, json_response, one_arg
from .multipart import MultipartStream, body_chunks, boundary_of

router = APIRouter(prefix="/files")


def _two(args: list[str]) -> tuple[str, str]:
    if len(args) < 2:
        raise ApiError('argument "dest" is required' if args else 'argument "source" is required')
    return args[0], args[1]


def _empty() -> Response:
    return Response(b"", media_type="text/plain")


def _mfs_mount(ctx: Ctx):
    """The daemon's /mfs mount (kept modes and mtimes: mounts/kept_attrs.py), if any."""
    mounts = getattr(ctx.vfs, "mounts", None) or {}
    mount = mounts.get("mfs")
    return mount if hasattr(mount, "moved_outside") else None


@router.post("/ls")
async def files_ls(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                   long: bool = Query(False), U: bool = Query(False)):  # noqa: N803
    entries = await ctx.repo.mfs.ls(arg[0] if arg else "/", long=long)
    return json_response({"Entries": entries})


@router.post("/mkdir")
async def files_mkdir(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                      parents: bool = Query(False), flush: bool = Query(True)):
    await ctx.repo.mfs.mkdir(one_arg(arg, "path"), parents=parents, flush=flush)
    return _empty()


@router.post("/write")
async def files_write(request: Request, ctx: Ctx = Depends(ctx_of),
                      arg: list[str] = Query([]), offset: int = Query(0, ge=0),
                      create: bool = Query(False), parents: bool = Query(False),
                      truncate: bool = Query(False), count: int | None = Query(None, ge=0),
                      flush: bool = Query(True)):
    path = one_arg(arg, "path")
    stream = MultipartStream(body_chunks(request.stream()),
                             boundary_of(request.headers.get("content-type")))
    part = await ctx.run(stream.first_file)
    mount = _mfs_mount(ctx)
    before = await _file_cid(ctx, path) if mount is not None else None
    await ctx.repo.mfs.write(path, part, offset=offset, create=create, truncate=truncate,
                             parents=parents, count=count, flush=flush)
    await _written(ctx, mount, path, before)
    return _empty()


async def _file_cid(ctx: Ctx, path: str) -> str | None:
    """The CID of the file at the MFS ``path``; None for none, or not a file."""
    try:
        st = await ctx.repo.mfs.stat(path)
    except McpfsError:  # none there (ENOENT, ENOTDIR): the write says why, if it fails
        return None
    return st.get("Hash") if st.get("Type") == "file" else None


async def _written(ctx: Ctx, mount, path: str, before: str | None) -> None:
    """The /mfs mount learns of a file written outside it (its mtime: now; its mode
    kept), so ``ls -l`` there does not show the daemon's start time."""
    await _supersede(ctx, path)
    if mount is not None and (after := await _file_cid(ctx, path)) is not None:
        mount.written_outside(path, before, after)


async def _supersede(ctx: Ctx, path: str, below: bool = False) -> None:
    """What a failed commit through the mount kept for the next start at the MFS ``path``
    (``below``: or under it) is superseded by this change (vfs/write_back.py: kept())."""
    write_back = getattr(ctx.vfs, "write_back", None)
    if write_back is not None:
        await write_back.superseded("mfs", posixpath.normpath("/" + path).strip("/"),
                                    below=below)


@router.post("/read")
async def files_read(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                     offset: int = Query(0, ge=0), count: int | None = Query(None, ge=0)):
    chunks = ctx.repo.mfs.iter_read(one_arg(arg, "path"), offset, count)
    first = await anext(chunks, None)  # errors (ENOENT, EISDIR) before the headers go out

    async def body():
        if first is not None:
            yield first
            async for chunk in chunks:
                yield chunk
    return StreamingResponse(body(), media_type="text/plain", headers={"X-Stream-Output": "1"})


@router.post("/rm")
async def files_rm(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                   recursive: bool = Query(False), force: bool = Query(False),
                   flush: bool = Query(True)):
    one_arg(arg, "path")
    mount = _mfs_mount(ctx)
    for path in arg:
        await ctx.repo.mfs.rm(path, recursive=recursive, force=force, flush=flush)
        await _supersede(ctx, path, below=True)
        if mount is not None:
            mount.removed_outside(path)
    return _empty()


@router.post("/mv")
async def files_mv(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                   flush: bool = Query(True)):
    src, dst = _two(arg)
    target = await ctx.repo.mfs.mv(src, dst, flush=flush)  # (into dst if a directory)
    if posixpath.normpath(target) != posixpath.normpath(src):  # (not a move onto itself)
        await _supersede(ctx, target, below=True)  # what was there is replaced
    mount = _mfs_mount(ctx)
    if mount is not None:  # its files' kept modes and mtimes go along
        is_dir = (await ctx.repo.mfs.stat(target)).get("Type") == "directory"
        mount.moved_outside(src, target, is_dir)
    return _empty()


@router.post("/cp")
async def files_cp(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                   parents: bool = Query(False), flush: bool = Query(True)):
    src, dst = _two(arg)
    await ctx.repo.mfs.cp(src, dst, parents=parents, flush=flush)
    await _written(ctx, _mfs_mount(ctx), dst, None)
    return _empty()


@router.post("/stat")
async def files_stat(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([]),
                     hash: bool = Query(False), size: bool = Query(False)):  # noqa: A002
    """kubo's statOutput (Hash, Size, CumulativeSize, Blocks, Type) whatever the flags
    (``hash``/``size`` only change what kubo's CLI prints)."""
    return json_response(await ctx.repo.mfs.stat(one_arg(arg, "path")))


@router.post("/flush")
async def files_flush(ctx: Ctx = Depends(ctx_of), arg: list[str] = Query([])):
    cid = await ctx.repo.mfs.flush(arg[0] if arg else "/")
    return json_response({"Cid": str(cid)})
