"""HTTP plumbing of tests/hub_server.py: the threaded server, request parsing, ranged
bodies, error responses, and the CDN origin (signed LFS downloads and uploads).

Resources: one ThreadingHTTPServer per origin (daemon threads, HTTP/1.1 keep-alive); bodies
on disk are sent with ``socket.sendfile``. ``server.app`` is the HubServer (state, request
log, signing secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.hub_store import HubError

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, app: Any) -> None:
        self.app = app
        super().__init__(addr, handler)


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    origin = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # ---------------------------------------------------------------- plumbing
    def _unread_body(self) -> bool:
        """Whether the request has a body the route did not read (an early error answer):
        the connection must then close, or its bytes would be read as the next request."""
        if getattr(self, "_body_read", False):
            return False
        return (self.headers.get("Transfer-Encoding", "").lower() == "chunked"
                or int(self.headers.get("Content-Length") or 0) > 0)

    def _body(self) -> bytes:
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              ctype: str = "application/json") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self._unread_body():
            self.send_header("Connection", "close")  # sets close_connection
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, err: HubError, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": err.message, **(extra or {})}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message, **err.body}, err.status, headers)

    def _range(self, size: int) -> tuple[int, int, int] | None:
        """(status, start, end exclusive) for the Range header; None: unsatisfiable."""
        spec = self.headers.get("Range")
        if not spec or not spec.startswith("bytes=") or "," in spec:
            return 200, 0, size
        first, _, last = spec[6:].partition("-")
        if not first:
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
        if start >= size:
            return None
        return 206, start, end

    def _serve_bytes(self, data: bytes | Path, size: int, headers: dict[str, str]) -> None:
        """Content with Range support: ``data`` in memory or a file on disk."""
        rng = self._range(size)
        if rng is None:
            self._send(416, b"", {"Content-Range": f"bytes */{size}", **headers})
            return
        status, start, end = rng
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD" or end <= start:
            return
        if isinstance(data, bytes):
            self.wfile.write(data[start:end])
            return
        with open(data, "rb") as fh:
            self.connection.sendfile(fh, start, end - start)

    def _record(self, method: str) -> None:
        self.server.app.requests.append(
            (self.origin, method, self.path, self.headers.get("Range"),
             bool(self.headers.get("Authorization"))))

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        self._body_read = False
        self._record(method)
        try:
            self.route(method)
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, method: str) -> None:
        raise NotImplementedError


class _CdnHandler(_Base):
    """The storage origin: signed LFS downloads and uploads."""

    origin = "cdn"

    def route(self, method: str) -> None:
        app = self.server.app
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        segs = url.path.strip("/").split("/")
        if len(segs) != 2 or not hmac.compare_digest(query.get("sig", [""])[0],
                                                      app.sign(segs[1])):
            raise HubError(403, None, "Request signature does not match")
        kind, oid = segs
        if kind == "lfs" and method in ("GET", "HEAD"):
            path = app.hub.lfs_path(oid)
            if path is None:
                raise HubError(404, None, "NoSuchKey")
            self._serve_bytes(path, path.stat().st_size, {"ETag": f'"{oid}"'})
        elif kind == "upload" and method == "PUT":
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, None, "sha256 of the upload does not match its oid")
            app.hub.add_lfs_object(data)
            self._send(200, b"", {"ETag": f'"{oid}"'})
        else:
            raise HubError(405, None, "method not allowed")


