"""HTTP/1.1 exchanges on the trio thread, for the direct requests (s3_direct.py).

Why: a small PUT or HEAD sent from a worker thread costs more in handing the GIL back and
forth with the busy FUSE loop than the request itself (~20 context switches per request).
Sent from the trio thread, it waits on the socket like any other trio I/O: 1,000 small
write-back creates went from ~260 to ~400 files/s on 2 cores (rclone's ~330 in the same
runs), with a third of the context switches.

:class:`Connections` keeps idle connections per endpoint (at most ``POOL_MAX``), speaks
HTTP/1.1 through h11 (keep-alive, Content-Length or chunked answers, HEAD without a body)
over ``trio.SocketStream`` (``trio.SSLStream`` for https, checked against the given
``ssl.SSLContext``). One exchange is :meth:`Connections.send`: the request, then the whole
answer read into memory (direct requests are small).

Errors, shaped as the blocking transport's (s3_direct.DirectRequests._send) so one retry
policy serves both: a connection that cannot be made is botocore's
``EndpointConnectionError`` (``ConnectTimeoutError`` after ``connect_timeout``); a send or
a read of the answer that makes no progress for ``read_timeout`` (botocore's meaning: per
socket operation) is ``TimeoutError``; a dropped connection or a malformed answer is
``ConnectionResetError``; and when a kept-alive connection turns out closed by the server
before any answer, :class:`Resend` (the caller sends again at once on a new one).

Resources and concurrency: trio thread only (no locks). A connection is in ``_idle`` or
used by exactly one exchange; it goes back to ``_idle`` only after a whole answer that
keeps it open. Any failure or cancellation closes it. :meth:`close` closes the idle ones.
"""

from __future__ import annotations

import math
import select
import ssl
from collections.abc import Callable
from typing import Final

import botocore.exceptions
import h11
import trio

POOL_MAX: Final = 32  # idle connections kept per endpoint
RECEIVE: Final = 65536  # bytes asked of the socket at a time


class Resend(Exception):
    """A kept-alive connection was closed by the server before the request: send again."""


def readable_now(fileno: int) -> bool:
    """Whether an idle connection's socket is readable: closed by the server (at EOF), or
    sending what nobody asked for. urllib3 checks the same before reusing one."""
    try:
        poll = select.poll()
        poll.register(fileno, select.POLLIN)
        return bool(poll.poll(0))
    except (OSError, ValueError):
        return True


def host_header(scheme: str, netloc: str) -> str:
    """The Host header botocore signs for ``netloc``: the default port left out."""
    default = {"http": "80", "https": "443"}.get(scheme)
    host, _, port = netloc.rpartition(":") if has_port(netloc) else (netloc, "", "")
    return host if port == default else netloc


def has_port(netloc: str) -> bool:
    return netloc.rsplit("]", 1)[-1].count(":") == 1


class _Conn:
    __slots__ = ("stream", "h11", "fileno", "answered")

    def __init__(self, stream: trio.abc.Stream, fileno: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.fileno = fileno
        self.answered = False  # bytes of an answer arrived on it


class Connections:
    """Kept-alive HTTP/1.1 connections on the trio thread (see the module docstring).
    ``ssl_context()`` gives the context for https (made at the first https connection)."""

    def __init__(self, connect_timeout: float, read_timeout: float,
                 ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str], list[_Conn]] = {}
        self._closes = 0  # close() calls: a connection in use across one is not kept

    @property
    def _timeout(self) -> float:
        return self.read_timeout if self.read_timeout else math.inf

    async def send(self, scheme: str, netloc: str, method: str, path: str,
                   headers: dict[str, str], data: bytes, pooled: bool = True
                   ) -> tuple[int, dict[str, str], bytes]:
        """One exchange: (status, headers with lower-case names, body). ``pooled``: an
        idle connection may be used (else a new one is opened)."""
        where = (scheme, netloc)
        request = h11.Request(method=method, target=path,  # (h11 checks it: before any
                              headers=[("Host", host_header(scheme, netloc)),  # connection)
                                       *headers.items()])
        conn = None
        idle = self._idle.get(where) if pooled else None
        while idle and conn is None:
            conn = idle.pop()
            if readable_now(conn.fileno):
                await trio.aclose_forcefully(conn.stream)
                conn = None
        reused = conn is not None
        if conn is None:
            conn = await self._connect(scheme, netloc)
        conn.answered = False
        closes = self._closes
        try:
            out = conn.h11.send(request)
            if data:
                out += conn.h11.send(h11.Data(data=data))
            out += conn.h11.send(h11.EndOfMessage())
            with trio.fail_after(self._timeout):
                await conn.stream.send_all(out)
            status, answer, body = await self._answer(conn)
        except BaseException as exc:
            await trio.aclose_forcefully(conn.stream)
            if isinstance(exc, trio.TooSlowError):
                raise TimeoutError(f"no answer from {netloc} in {self.read_timeout} s") \
                    from None
            if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError,
                                h11.ProtocolError, OSError)):
                if reused and not conn.answered:
                    raise Resend from exc
                raise ConnectionResetError(f"{netloc}: {exc}") from exc
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE \
                and closes == self._closes:
            conn.h11.start_next_cycle()
            idle = self._idle.setdefault(where, [])
            if len(idle) < POOL_MAX:
                idle.append(conn)
                return status, answer, body
        await trio.aclose_forcefully(conn.stream)
        return status, answer, body

    async def _answer(self, conn: _Conn) -> tuple[int, dict[str, str], bytes]:
        status = 0
        answer: dict[str, str] = {}
        body = bytearray()
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                with trio.fail_after(self._timeout):  # (per read, as botocore's)
                    chunk = await conn.stream.receive_some(RECEIVE)
                conn.answered = conn.answered or bool(chunk)
                conn.h11.receive_data(chunk)  # b"": the end, an error unless expected
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                answer = {name.decode("latin-1").lower(): value.decode("latin-1")
                          for name, value in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, answer, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("closed before the whole answer")

    async def _connect(self, scheme: str, netloc: str) -> _Conn:
        host, _, port = netloc.rpartition(":") if has_port(netloc) else (netloc, "", "")
        host = host.strip("[]")
        url = f"{scheme}://{netloc}"
        sock = None
        try:
            with trio.fail_after(self.connect_timeout if self.connect_timeout else math.inf):
                sock = await trio.open_tcp_stream(host, int(port) if port else
                                                  (443 if scheme == "https" else 80))
                stream: trio.abc.Stream = sock
                if scheme == "https":
                    stream = trio.SSLStream(sock, self._ssl_context(), server_hostname=host,
                                            https_compatible=True)
                    await stream.do_handshake()
        except BaseException as exc:
            if sock is not None:
                sock.socket.close()
            if isinstance(exc, trio.TooSlowError):
                raise botocore.exceptions.ConnectTimeoutError(endpoint_url=url) from None
            if isinstance(exc, (OSError, trio.BrokenResourceError)):
                raise botocore.exceptions.EndpointConnectionError(endpoint_url=url) from exc
            raise
        return _Conn(stream, sock.socket.fileno())

    def close(self) -> None:
        """Close the idle connections (trio thread; at unmount); one in use now is closed
        once its exchange ends. A later request opens a new one."""
        self._closes += 1
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                _close_now(conn.stream)


def _close_now(stream: trio.abc.Stream) -> None:
    """Close a stream's socket without awaiting (nothing to flush on an idle one)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()


__all__ = ["Connections", "Resend", "POOL_MAX", "readable_now", "host_header", "has_port"]
