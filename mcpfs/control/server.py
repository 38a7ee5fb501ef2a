"""The control server: a FastAPI app on a unix socket, served by hypercorn on trio.

``serve(repo)`` runs until cancelled, inside the daemon's nursery::

    await nursery.start(control.serve, repo)   # returns once the socket accepts

Socket and permissions: ``paths().runtime_dir`` is created (or re-chmodded) 0700; the
socket is bound under umask 0177 and chmodded 0600, so only our uid can even connect. A
live socket of another daemon there makes ``serve`` fail (McpfsError) instead of stealing
it; a stale one (nothing answers) is replaced. The socket file is removed on exit.

Peer check: on top of the file permissions, every accepted unix connection's
``SO_PEERCRED`` uid must equal ours, otherwise it is closed before a byte is read (and
logged). Hypercorn does not expose the connection's socket to the ASGI app (the scope's
``client`` is None on unix sockets and there is no extension carrying the transport), and
trio refuses socket subclasses, so an ASGI middleware cannot do this check. Instead the
accept loop is ours: :class:`PeerCheckedListener` wraps trio's ``SocketListener``, and each
accepted stream is handed to hypercorn's own trio connection handler (``TCPServer``), so
HTTP parsing, keep-alive and streaming stay hypercorn's. What this skips of
``hypercorn.trio.serve``: the ASGI lifespan protocol (the app has no lifespan handlers) and
graceful draining (cancelling ``serve`` cancels open requests; their worker threads finish
first, see common.py).

Optional TCP listener: ``tcp_port`` (config ``[control] tcp_port``; off by default) binds
127.0.0.1 only. It has no peer check (any local user could connect), so requests carrying
an ``Origin`` header, or a Host other than localhost/127.0.0.1, are refused (403), as kubo
does against browsers and DNS rebinding.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from starlette.exceptions import HTTPException

from ..backends.ipfs.node import Repo
from ..config import paths
from ..errors import McpfsError
from ..stats import Stats
from . import routes_bridge, routes_content, routes_dag, routes_files, routes_mcpfs
from .common import CODE_CLIENT, ApiError, Ctx, error_response

log = logging.getLogger("mcpfs.control")

API_PREFIX: Final = "/api/v0"
BACKLOG: Final = 128
LOCAL_HOSTS: Final = {"localhost", "127.0.0.1", "[::1]", "::1"}
STATS_MOUNT: Final = "control"  # the Stats "mount" under which API requests are counted


# ---------------------------------------------------------------- app
def create_app(repo: Repo, stats: Stats | None = None, bridge: Any = None,
               vfs: Any = None) -> FastAPI:
    """The ASGI app over ``repo``; ``stats`` defaults to a fresh :class:`Stats`."""
    app = FastAPI(title="mcpfs control API", docs_url=None, redoc_url=None)
    app.state.ctx = Ctx(repo, stats or Stats(), bridge, vfs)
    for module in (routes_content, routes_dag, routes_files, routes_mcpfs, routes_bridge):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(routes_mcpfs.metrics_router)

    @app.exception_handler(McpfsError)
    async def _mcpfs_error(request, exc: McpfsError):
        return error_response(str(exc) or type(exc).__name__)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(str(exc), exc.status, exc.code)

    @app.exception_handler(OSError)
    async def _os_error(request, exc: OSError):
        return error_response(exc.strerror or str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = first.get("loc", ("", "?"))[-1]
        return error_response(f'invalid value for option "{where}": {first.get("msg", "")}',
                              400, CODE_CLIENT)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        text = {404: "404 page not found", 405: "405 - Method Not Allowed"}.get(
            exc.status_code, f"{exc.status_code} - {exc.detail}")
        return PlainTextResponse(text, status_code=exc.status_code)

    return app


class GuardAndCount:
    """ASGI middleware: refuses browser-style requests on TCP and counts every request in
    ``stats`` (mount "control", op = the command path)."""

    def __init__(self, app: Any, stats: Stats, tcp: bool) -> None:
        self.app, self.stats, self.tcp = app, stats, tcp

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.tcp and not _local_request(scope):
            return await PlainTextResponse("403 - Forbidden", 403)(scope, receive, send)
        started, sent, status = time.perf_counter(), 0, 500

        async def counting_send(message: dict) -> None:
            nonlocal sent, status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)
        try:
            await self.app(scope, receive, counting_send)
        finally:
            op = scope["path"].removeprefix(API_PREFIX + "/")
            self.stats.record(STATS_MOUNT, op, sent, time.perf_counter() - started,
                              status >= 400)


def _local_request(scope: dict) -> bool:
    """No Origin header (browsers send one) and a Host naming the loopback."""
    headers = {k.lower(): v for k, v in scope.get("headers", [])}
    if b"origin" in headers:
        return False
    host = headers.get(b"host", b"").decode("latin-1")
    if host.startswith("["):  # [::1]:5001
        host = host[:host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host in LOCAL_HOSTS


# ---------------------------------------------------------------- sockets
def _peer_uid(sock: Any) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class PeerCheckedListener(trio.abc.Listener[trio.SocketStream]):
    """A unix-socket listener that closes connections from another uid (see module doc)."""

    def __init__(self, inner: trio.SocketListener, uid: int) -> None:
        self.inner, self.uid = inner, uid

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self.inner.accept()
            try:
                uid = _peer_uid(stream.socket)
            except OSError:
                uid = -1
            if uid == self.uid:
                return stream
            log.warning("control socket: refused a connection from uid %s", uid)
            await stream.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_unix(path: Path) -> socket.socket:
    """A listening unix socket at ``path`` (dir 0700, socket 0600); see the module doc."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        if _socket_answers(path):
            raise McpfsError(f"{path}: another mcpfs daemon is already serving",
                             errno=errno.EADDRINUSE)
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _bind_tcp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _tcp_port_from_config() -> int | None:
    from ..config import load_config
    port = load_config().section("control").get("tcp_port")
    return int(port) if port else None


# ---------------------------------------------------------------- serve
async def _serve_one(app: Any, config: HypercornConfig, listener: trio.abc.Listener,
                     nursery: trio.Nursery) -> None:
    context = WorkerContext(None)

    async def handle(stream: trio.SocketStream) -> None:
        await TCPServer(app, config, context, ConnectionState({}), stream)

    await trio.serve_listeners(handle, [listener], handler_nursery=nursery)


async def serve(repo: Repo, *, task_status=trio.TASK_STATUS_IGNORED,
                stats: Stats | None = None, socket_path: str | os.PathLike[str] | None = None,
                tcp_port: int | None = None, bridge: Any = None, vfs: Any = None) -> None:
    """Serve the control API until cancelled; ``task_status.started(socket_path)`` once
    the socket accepts. ``tcp_port`` (0 = any free port; None = ``[control] tcp_port``
    of the config, normally absent) adds the 127.0.0.1 listener; the bound port is then
    in ``serve.last_tcp_port`` for tests. The socket file is removed on exit."""
    path = Path(socket_path) if socket_path else paths().socket_path
    if tcp_port is None:
        tcp_port = await trio.to_thread.run_sync(_tcp_port_from_config)
    await trio.to_thread.run_sync(lambda: repo.mfs)  # load the MFS root off the trio thread
    stats = stats or Stats()
    fastapi_app = create_app(repo, stats, bridge, vfs)
    config = HypercornConfig()
    config.accesslog = None
    config.keep_alive_timeout = 30
    unix_sock = bind_unix(path)
    listeners: list[tuple[Any, trio.abc.Listener]] = [(
        wrap_app(GuardAndCount(fastapi_app, stats, tcp=False), 0, "asgi"),
        PeerCheckedListener(trio.SocketListener(trio.socket.from_stdlib_socket(unix_sock)),
                            os.getuid()))]
    try:
        if tcp_port is not None:
            tcp_sock = _bind_tcp(tcp_port)
            serve.last_tcp_port = tcp_sock.getsockname()[1]  # type: ignore[attr-defined]
            listeners.append((wrap_app(GuardAndCount(fastapi_app, stats, tcp=True), 0, "asgi"),
                              trio.SocketListener(trio.socket.from_stdlib_socket(tcp_sock))))
        async with trio.open_nursery() as nursery:
            for app, listener in listeners:
                nursery.start_soon(_serve_one, app, config, listener, nursery)
            log.info("control API on %s", path)
            task_status.started(str(path))
    finally:
        with trio.CancelScope(shield=True):
            for _, listener in listeners:
                await listener.aclose()
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def run_forever(repo: Repo, **kwargs: Any) -> None:
    """``trio.run(serve, repo)``: a control server without FUSE (tests, scripts)."""
    trio.run(partial(serve, repo, **kwargs))


__all__ = ["serve", "create_app", "bind_unix", "PeerCheckedListener", "run_forever"]
