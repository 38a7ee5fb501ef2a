"""What every route module shares: the per-app context, kubo's error shape, thread hops,
and streamed responses.

Errors (kubo's ``cmds.Error``): a failed command answers ``{"Message", "Code", "Type":
"error"}``; HTTP 500 with Code 0 for a failed operation (every :class:`McpfsError`), 400
with Code 1 for a bad request (missing argument, malformed option). Once a stream has
started, its status is already sent: an NDJSON stream then ends with one error object as
its last line; a byte stream (cat, get, dag export) is cut off, which the client detects
(``X-Content-Length`` for cat, a truncated tar/CAR otherwise).

Concurrency: blocking repo work runs through :meth:`Ctx.run`, i.e.
``trio.to_thread.run_sync`` under one CapacityLimiter per server (``THREADS``); a request
cancelled while its thread runs waits for that thread (trio does not abandon it), so repo
operations are never torn. Stream iterators are advanced one piece per thread hop.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import trio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..backends.ipfs.node import Repo
from ..errors import McpfsError
from ..stats import Stats
from .ops import RepoOps

log = logging.getLogger("mcpfs.control")

THREADS: Final = 8  # worker threads the control server may occupy at once
BATCH: Final = 512  # NDJSON objects produced per thread hop
CODE_NORMAL: Final = 0  # kubo cmds.ErrNormal
CODE_CLIENT: Final = 1  # kubo cmds.ErrClient


class ApiError(Exception):
    """A request kubo would refuse as the client's fault (HTTP 400, Code 1)."""

    def __init__(self, message: str, status: int = 400, code: int = CODE_CLIENT) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Ctx:
    repo: Repo
    stats: Stats
    bridge: Any = None  # the daemon's bridge.Bridge (None: a control server without a mount)
    vfs: Any = None  # the daemon's VFS (the mount's subtrees, for mcpfs cp/where/verify)
    ops: RepoOps = field(init=False)
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(THREADS))

    def __post_init__(self) -> None:
        self.ops = RepoOps(self.repo)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a worker thread under the server's limiter."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)


def ctx_of(request: Request) -> Ctx:
    return request.app.state.ctx


def error_body(message: str, code: int = CODE_NORMAL) -> dict[str, Any]:
    return {"Message": message, "Code": code, "Type": "error"}


def error_response(message: str, status: int = 500, code: int = CODE_NORMAL) -> JSONResponse:
    return JSONResponse(error_body(message, code), status_code=status)


def one_arg(args: list[str], what: str = "arg") -> str:
    """kubo's "argument is required" for a command taking exactly one argument."""
    if not args:
        raise ApiError(f'argument "{what}" is required')
    return args[0]


def json_response(value: Any) -> Response:
    """A single JSON value, newline-terminated like kubo's encoder."""
    return Response(json.dumps(value, separators=(",", ":")) + "\n",
                    media_type="application/json")


def _line(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":")) + "\n").encode()


async def _batches(ctx: Ctx, it: Iterator[Any]) -> AsyncIterator[list[Any]]:
    def take() -> list[Any]:
        out = []
        for item in it:
            out.append(item)
            if len(out) >= BATCH:
                break
        return out
    while True:
        batch = await ctx.run(take)
        if not batch:
            return
        yield batch


async def _ndjson_body(ctx: Ctx, produce: Callable[[], Iterator[Any]]) -> AsyncIterator[bytes]:
    try:
        it = await ctx.run(produce)
        async for batch in _batches(ctx, it):
            yield b"".join(_line(v) for v in batch)
    except McpfsError as exc:
        yield _line(error_body(str(exc)))


def ndjson_response(ctx: Ctx, produce: Callable[[], Iterator[Any]]) -> StreamingResponse:
    """Stream the objects of ``produce()`` (called in a thread) as NDJSON lines."""
    return StreamingResponse(_ndjson_body(ctx, produce), media_type="application/json",
                             headers={"X-Chunked-Output": "1"})


async def _byte_body(ctx: Ctx, it: Iterator[bytes]) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await ctx.run(next, it, None)
        except McpfsError as exc:
            # Headers are gone: cut the stream so the client sees a truncated body.
            log.warning("stream aborted: %s", exc)
            raise
        if chunk is None:
            return
        yield chunk


def primed(it: Iterator[bytes]) -> Iterator[bytes]:
    """Produce the first piece now (call in a thread), so that errors such as a missing
    block become an error response instead of a cut stream."""
    first = next(it, None)
    return it if first is None else itertools.chain([first], it)


def bytes_response(ctx: Ctx, it: Iterator[bytes], *, length: int | None = None,
                   media_type: str = "text/plain") -> StreamingResponse:
    """Stream byte pieces from ``it`` (advanced in threads); kubo's stream headers."""
    headers = {"X-Stream-Output": "1"}
    if length is not None:
        headers["X-Content-Length"] = str(length)
    return StreamingResponse(_byte_body(ctx, it), media_type=media_type, headers=headers)


__all__ = ["ApiError", "Ctx", "ctx_of", "error_body", "error_response", "one_arg",
           "json_response", "ndjson_response", "bytes_response", "primed", "THREADS"]
