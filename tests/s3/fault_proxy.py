"""A reverse proxy in front of SeaweedFS for tests that need S3 to misbehave, or to speak TLS.

:class:`FaultProxy` forwards every request to the upstream endpoint unchanged (the Host
header included, so signatures still check) and records what it received in ``seen``
(method, path, headers). ``faults`` holds what happens to the next PUTs, one entry each:

- ``"503"``: answered 503 SlowDown, not forwarded;
- ``"lose"``: forwarded (the object is written), then the connection is closed with no
  answer (a response lost on the way back);
- ``"close"``: forwarded and answered, then the connection is closed without a
  ``Connection: close`` header (a kept-alive connection the server drops);
- ``"redirect"``: answered 301 PermanentRedirect naming another region, not forwarded;
- ``"hang"``: not forwarded, no answer for ``HANG`` seconds, then the connection is
  closed (a server that stopped answering: the client's read timeout must fire first);
- ``"slow"``: forwarded and answered after ``SLOW`` seconds (a request still in flight).

With ``ignore_range``, a GET is forwarded without its Range and unsigned (the signature
covers the Range; the bucket must be readable anonymously): the whole object comes back, as
from a server that ignores ranges. With ``tls`` (an SSLContext holding a certificate) it
serves https. Resources: a server thread, stopped and joined when the ``with`` block ends.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HANG = 5.0  # seconds a "hang" fault keeps the client waiting
SLOW = 0.3  # seconds a "slow" fault delays the request
_ERROR = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
          '<Message>injected</Message></Error>')
def _SIGNED(name: str) -> bool:  # what a GET without its Range must lose too
    return name.lower() in ("range", "authorization") or name.lower().startswith("x-amz-")


_HOP = {"connection", "transfer-encoding", "content-length", "server", "date", "keep-alive"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy.seen.append((self.command, self.path, dict(self.headers.items())))
        fault = proxy.faults.pop(0) if self.command == "PUT" and proxy.faults else None
        if fault == "503":
            return self._answer(503, _ERROR.format(code="SlowDown").encode(), {})
        if fault == "slow":
            time.sleep(SLOW)
        if fault == "hang":
            time.sleep(HANG)
            self.close_connection = True
            return
        if fault == "redirect":
            return self._answer(301, _ERROR.format(code="PermanentRedirect").encode(),
                                {"x-amz-bucket-region": "eu-west-3"})
        up = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port,
                                        timeout=30)
        sent = {k: v for k, v in self.headers.items()
                if not (proxy.ignore_range and self.command == "GET" and _SIGNED(k))}
        try:
            up.request(self.command, self.path, body=body or None, headers=sent)
            resp = up.getresponse()
            data = resp.read()
        finally:
            up.close()
        if fault == "lose":
            self.close_connection = True
            return
        headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
        if self.command == "HEAD":
            self.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in _HOP - {"content-length"}:
                    self.send_header(name, value)
            self.end_headers()
        else:
            self._answer(resp.status, data, headers)
        if fault == "close":
            self.close_connection = True

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


class FaultProxy:
    def __init__(self, upstream: str, tls: ssl.SSLContext | None = None) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.faults: list[str] = []
        self.ignore_range = False
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def puts(self) -> list[dict[str, str]]:
        """The headers of every PUT received, in order (names in lower case)."""
        return [{k.lower(): v for k, v in headers.items()}
                for method, _, headers in self.seen if method == "PUT"]

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def self_signed(folder: Path, name: str = "cert") -> tuple[ssl.SSLContext, Path]:
    """A server SSLContext for 127.0.0.1 and the PEM file of its certificate (the CA
    bundle a client trusts)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem, key_pem = folder / f"{name}.pem", folder / f"{name}.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem, key_pem)
    return context, pem
