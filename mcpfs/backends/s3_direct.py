"""GetObjects of small ranges, PutObjects of small bodies and HeadObjects, each as one
signed HTTP request (:class:`DirectRequests`).

Why: botocore's request pipeline (parameter checks, endpoint rules, some twenty events,
urllib3, response parsing) costs about 2 ms of CPU per request on 2 cores, holding the GIL
the FUSE loop needs: a small file written through the mount costs a HEAD (is the name
free?) and a PUT, more than all the rest the daemon does for it; a small file read costs a
ranged GET. These requests are sent as boto3 would send them, with the SigV4 signature
botocore's signer would make (s3_sign.py, checked against it) from the client's current
credentials, at the URL and signing scope botocore itself prepares for the bucket, over
kept-alive connections: ~0.5 ms each.

What is sent: a PUT carries Content-Length, Content-MD5 (S3 refuses a body that does not
match: BadDigest), ``x-amz-checksum-crc32`` (stored with the object, as boto3's default
checksum is; not when the client is set to send checksums only when required),
Content-Type and ``x-amz-meta-*`` when given, ``If-None-Match: *`` for a new file, and the
:class:`~.s3_defaults.RequestDefaults` headers (requester pays, SSE). Over https its payload
is not hashed into the signature (TLS and Content-MD5 protect it, as botocore does for
streamed bodies); over http it is. A HEAD or GET carries the requester-pays header when
set, a GET its Range and If-Match; their answers are read into the fields boto3's
``head_object`` / ``get_object`` give (size, time, ETag, version, storage class, content
type, ``x-amz-meta-*``; Content-Range and the body, read whole, for a GET).

Where it applies (:meth:`DirectRequests.target`, once per bucket): a signed client; a bucket
whose PutObject botocore prepares for a plain http(s) URL with SigV4 (not S3 Express, not an
ARN, not SigV4a); an endpoint that no proxy variable (``HTTPS_PROXY``...) routes; a PUT
body or GET range up to ``DIRECT_MAX`` bytes, a PUT's headers plain (names HTTP tokens,
values printable ASCII without spaces at either end: what both transports send as is). A
bucket that answers it is in another region (a 301, or a 400 naming its region) goes
through boto3 from then on, which follows such redirects. Anything else goes through boto3.

Two transports, one retry policy (:meth:`DirectRequests._exchange`, a generator that says
what to send or how long to wait and gets the transport's answer): blocking ``http.client``
connections in worker threads (:meth:`~DirectRequests.put`, ``head``, ``get``), and
s3_wire's trio streams on the trio thread (:meth:`~DirectRequests.aput`, ``ahead``) for
requests whose body is in memory once the bucket's Target is known, which spares the two
threads' GIL handoffs (s3_wire.py says what they cost).

Retries (botocore's "standard" mode, which this follows): a connection error, a timeout, a
5xx answer, or a throttling or transient error code (and a 429) is tried again,
``max_attempts`` tries in all, after botocore's backoff (``random() * min(scale *
2**(try-1), 20)`` seconds, ``scale`` 1 s when throttled, else 50 ms); a request that met a
kept-alive connection the server had just closed is sent again at once on a new one,
without counting as a try. ``retry_mode = "adaptive"`` (client-side rate limiting) is not
followed here. The answer's ``RetryAttempts`` counts every re-send, so a 412 after one
reaches ``MultipartUploads._unless_ours`` as a retried conditional write.

Errors: an S3 error answer raises the ``botocore.exceptions.ClientError`` boto3 would (code
and message from the XML body, the HTTP status), a failed connection
``EndpointConnectionError``/``ConnectionClosedError``, a timeout
``ConnectTimeoutError``/``ReadTimeoutError``; ``s3_errors.map_error`` maps them as boto3's.
A body shorter than its size (a spool that shrank) is EIO.

Resources and concurrency: the blocking transport's idle connections are kept per
endpoint (at most ``POOL_MAX``) in ``_idle``, under ``_lock``; a request takes one (or opens
one), and gives it back after a whole answer, so no connection is ever used by two threads;
:meth:`DirectRequests.close` (at unmount) closes the idle ones,
:meth:`~DirectRequests.aclose` the trio thread's (``_wire``, touched from the trio thread
only). ``_targets`` (bucket -> Target) is written under ``_lock`` too; ``_probing`` is per
thread (the probe of :meth:`DirectRequests.target`).
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

import botocore.exceptions
import trio
from botocore.awsrequest import AWSResponse
from botocore.httpsession import get_cert_path

from .s3_answers import (META, REDIRECT_CODES, RETRY_STATUS, THROTTLE_CODES,
                         TRANSIENT_CODES, Answer, Failed, body_of, client_error,
                         connection_error, described, headed, stored)
from .s3_defaults import RequestDefaults
from .s3_sign import payload_hash, signed
from .s3_wire import Connections, Resend, has_port, readable_now

log = logging.getLogger("mcpfs.backends.s3")

DIRECT_MAX: Final = 1 << 20  # bodies up to this go direct (read whole into memory)
MAX_BACKOFF: Final = 20.0  # seconds, botocore's standard mode
POOL_MAX: Final = 32  # idle connections kept per endpoint (each transport)
PROBE_KEY: Final = "mcpfs-direct-put-probe"  # the probe PutObject's key (never sent)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name
_PLAIN = re.compile(r"([!-~]([ -~]*[!-~])?)?")  # printable ASCII, no space at either end


@dataclass(frozen=True)
class Target:
    """Where a bucket's requests go, as botocore prepares them."""

    scheme: str  # "http" or "https"
    netloc: str  # host[:port]
    prefix: str  # the URL path before the key ("/bucket/" path-style, "/" virtual-hosted)
    region: str  # the signing region and service, from botocore's signing context
    service: str


class DirectRequests:
    """Signed small GETs and PUTs, and HEADs, without botocore's pipeline (see the module
    docstring).
    ``client``: the backend's boto3 client (its URL resolution); ``credentials``: botocore
    credentials (refreshed when due); ``ca_bundle``: the CA file (None: botocore's)."""

    def __init__(self, client: Any, credentials: Any, defaults: RequestDefaults,
                 max_attempts: int, connect_timeout: float, read_timeout: float,
                 ca_bundle: str | None = None) -> None:
        self.client = client
        self.credentials = credentials
        self.defaults = defaults
        self.max_attempts = max(1, max_attempts)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ca_bundle = ca_bundle
        self._ssl: ssl.SSLContext | None = None  # made at the first https connection
        self._lock = threading.Lock()
        self._targets: dict[str, Target | None] = {}
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._probing = threading.local()  # set while this thread's probe PutObject runs
        self._checksums = getattr(client.meta.config, "request_checksum_calculation",
                                  None) != "when_required"
        self._wire = Connections(connect_timeout, read_timeout, self._ssl_context)
        client.meta.events.register_first("before-call.s3.PutObject", self._probed)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=get_cert_path(self._ca_bundle or True))
        return self._ssl

    # ---------------------------------------------------------------- where
    def known(self, bucket: str) -> Target | None:
        """The bucket's Target if :meth:`target` found it already, else None: no blocking,
        so the trio thread may ask (an unknown one is found in a worker thread)."""
        with self._lock:
            return self._targets.get(bucket)

    def credentials_at_hand(self) -> bool:
        """Whether signing now needs no refresh of the credentials (a refresh may block on
        a network call: STS, IMDS, SSO): the trio thread signs only then, a worker thread
        otherwise (botocore refreshes there)."""
        needed = getattr(self.credentials, "refresh_needed", None)
        return needed is None or not needed()

    def target(self, bucket: str) -> Target | None:
        """The bucket's Target; None when its requests go through boto3 (blocking: the first
        call per bucket runs botocore's request preparation, no request is sent)."""
        with self._lock:
            if bucket in self._targets:
                return self._targets[bucket]
        found = self._resolve(bucket)
        with self._lock:  # (one marked moved meanwhile stays moved)
            return self._targets.setdefault(bucket, found)

    def _resolve(self, bucket: str) -> Target | None:
        """Prepare a PutObject of ``PROBE_KEY`` through the client, stopped before it is
        signed and sent (:meth:`_probed`): its URL and signing scope are what boto3 would
        use (endpoint rules, addressing style, the region botocore knows for the bucket)."""
        if bucket.endswith("--x-s3") or bucket.startswith("arn:"):
            return None  # S3 Express (session auth), access points: boto3's own
        self._probing.active, self._probing.seen = True, None
        try:
            self.client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"")
        except Exception as exc:  # noqa: BLE001 - any reason: boto3 sends them
            log.debug("s3://%s: requests through boto3 (%s)", bucket, type(exc).__name__)
            return None
        finally:
            self._probing.active = False
        seen = self._probing.seen
        if seen is None:
            return None
        url, signing, auth = seen
        parts = urllib.parse.urlsplit(url)
        if auth not in (None, "v4", "s3v4") or not signing.get("region") \
                or parts.scheme not in ("http", "https") \
                or not parts.path.endswith("/" + PROBE_KEY) or _proxied(parts):
            log.debug("s3://%s: requests through boto3", bucket)
            return None
        if parts.scheme == "https":
            self._ssl_context()  # (read the CA file here, not on the trio thread)
        # host names are case-blind; botocore signs the lower-case form, so send that
        return Target(parts.scheme, parts.netloc.lower(), parts.path[:-len(PROBE_KEY)],
                      signing["region"], signing.get("signing_name") or "s3")

    def _probed(self, params: dict[str, Any], context: dict[str, Any],
                **_: Any) -> Any:
        """``before-call`` of every PutObject of the client: this thread's probe is answered
        here, before signing and sending (a made-up empty 200); others go on."""
        if not getattr(self._probing, "active", False):
            return None
        self._probing.seen = (params["url"], dict(context.get("signing") or {}),
                              context.get("auth_type"))
        return AWSResponse(params["url"], 200, {}, None), {}

    def _moved(self, bucket: str, status: int, answer: dict[str, str], code: str) -> bool:
        """Whether this error answer says the bucket is elsewhere (another region): its
        requests go through boto3 from now on, which follows such redirects."""
        if status in (301, 307) or code in REDIRECT_CODES or (
                status == 400 and "x-amz-bucket-region" in answer):
            log.debug("s3://%s: in another region; requests through boto3", bucket)
            with self._lock:
                self._targets[bucket] = None
            return True
        return False

    # ---------------------------------------------------------------- the request
    def put(self, bucket: str, target: Target, key: str, body: Any, size: int, inm: bool,
            content_type: str | None, metadata: dict[str, str] | None) -> dict | None:
        """PUT ``size`` bytes of ``body`` (bytes, or a file read here) at ``key`` of
        ``bucket``; boto3's answer shape (``ETag``, ``VersionId``, ``ResponseMetadata``).
        None when boto3 must send it: a header is not ASCII (nothing read), or the bucket
        turned out to be in another region (nothing written; a file body was read).
        Blocking: a worker thread."""
        headers = self._headers(inm, content_type, metadata)
        if headers is None:
            return None
        data = body if isinstance(body, (bytes, bytearray, memoryview)) else body.read(size)
        body_headers = body_of(f"s3://{bucket}/{key}", data, size, headers, self._checksums)
        return stored(self._request(bucket, target, "PUT", key, *body_headers))

    async def aput(self, bucket: str, target: Target, key: str, data: bytes, inm: bool,
                   content_type: str | None, metadata: dict[str, str] | None
                   ) -> dict | None:
        """:meth:`put` of ``data`` from the trio thread (s3_wire.py), the same answers."""
        headers = self._headers(inm, content_type, metadata)
        if headers is None:
            return None
        body_headers = body_of(f"s3://{bucket}/{key}", data, len(data), headers,
                             self._checksums)
        return stored(await self._arequest(bucket, target, "PUT", key, *body_headers))

    def head(self, bucket: str, target: Target, key: str) -> dict | None:
        """HeadObject of ``key``: boto3's answer shape (the fields ``s3._headed`` reads);
        None when the bucket turned out to be in another region. Blocking."""
        return headed(self._request(bucket, target, "HEAD", key, b"", self._read_headers()))

    async def ahead(self, bucket: str, target: Target, key: str) -> dict | None:
        """:meth:`head` from the trio thread (s3_wire.py)."""
        return headed(await self._arequest(bucket, target, "HEAD", key, b"",
                                            self._read_headers()))

    def get(self, bucket: str, target: Target, key: str, first: int, last: int,
            if_match: str | None = None) -> dict | None:
        """GetObject of bytes ``first..last`` (inclusive) of ``key``, If-Match ``if_match``:
        boto3's answer shape with ``ContentRange``, the ``Body`` as bytes (read whole: for
        ranges up to ``DIRECT_MAX``). None when the bucket is in another region. Blocking."""
        headers = self._read_headers()
        headers["Range"] = f"bytes={first}-{last}"
        if if_match:
            headers["If-Match"] = if_match
        got = self._request(bucket, target, "GET", key, b"", headers)
        if got is None:
            return None
        answer, meta, body = got
        return dict(described(answer, meta), ContentRange=answer.get("content-range"),
                    Body=body)

    def _read_headers(self) -> dict[str, str]:
        return {"User-Agent": "mcpfs", **self.defaults.headers(write=False)}

    def _request(self, bucket: str, target: Target, method: str, key: str, data: bytes,
                 headers: dict[str, str]) -> Answer | None:
        """Sign and send, retried (see the module docstring): the answer's headers (names
        in lower case), boto3's ResponseMetadata and the body; None when the bucket is
        elsewhere. Blocking, over ``http.client``."""
        exchange = _Steps(self._exchange(bucket, target, method, key, data, headers))
        while (step := exchange.next()) is not None:
            if isinstance(step, float):
                time.sleep(step)
                continue
            try:
                exchange.reply = self._send(target, method, step[0], data, step[1],
                                            pooled=step[2])
            except Exception as exc:  # noqa: BLE001 - the exchange decides (retry or raise)
                exchange.reply = Failed(exc)
        return exchange.result

    async def _arequest(self, bucket: str, target: Target, method: str, key: str,
                        data: bytes, headers: dict[str, str]) -> Answer | None:
        """:meth:`_request` on the trio thread, over s3_wire's connections."""
        exchange = _Steps(self._exchange(bucket, target, method, key, data, headers))
        while (step := exchange.next()) is not None:
            if isinstance(step, float):
                await trio.sleep(step)
                continue
            try:
                exchange.reply = await self._wire.send(target.scheme, target.netloc, method,
                                                       step[0], step[1], data,
                                                       pooled=step[2])
            except Exception as exc:  # noqa: BLE001 - the exchange decides (retry or raise)
                exchange.reply = Failed(exc)
        return exchange.result

    def _exchange(self, bucket: str, target: Target, method: str, key: str, data: bytes,
                  headers: dict[str, str]
                  ) -> Generator[tuple[str, dict[str, str], bool] | float, Any,
                                 Answer | None]:
        """The retry policy of one request, apart from how it is sent: yields the signed
        request to send, (path, headers, pooled), and gets the transport's (status,
        headers, body) or :class:`~.s3_answers.Failed`; or yields the seconds to wait
        before the next try. Returns the answer, or None when the bucket is elsewhere;
        raises the error."""
        path = target.prefix + urllib.parse.quote(key, safe="/~")
        url = f"{target.scheme}://{target.netloc}{path}"
        payload = payload_hash(target.scheme, headers, data)  # (once for all tries)
        tries = resends = 0  # tries count against max_attempts; every re-send is a retry
        while True:
            reply = yield path, signed(method, target.scheme, target.netloc, path, headers,
                                       payload, self.credentials.get_frozen_credentials(),
                                       target.region, target.service), not resends
            if isinstance(reply, Failed) and isinstance(reply.error, Resend):
                resends += 1  # a kept-alive connection the server had closed: sent again
                continue  # at once, on a new connection, not counted as a try
            if isinstance(reply, Failed):
                if not isinstance(reply.error, (OSError, http.client.HTTPException,
                                                botocore.exceptions.BotoCoreError)):
                    raise reply.error
                error: Exception = connection_error(reply.error, url)
                throttled = False
            else:
                status, answer, text = reply
                retries = tries + resends
                # (a PUT's 200 can carry an error; a GET's body is the object's bytes)
                if status < 300 and not (method == "PUT" and b"<Error>" in text[:512]):
                    return answer, {"HTTPStatusCode": status, "RetryAttempts": retries}, text
                error = client_error(method, status if status >= 300 else 500, text,
                                      retries)
                code = error.response["Error"]["Code"]
                if self._moved(bucket, status, answer, code):
                    return None
                throttled = status == 429 or code in THROTTLE_CODES
                if not (throttled or status in RETRY_STATUS or status < 300
                        or code in TRANSIENT_CODES):
                    raise error
            tries += 1
            if tries >= self.max_attempts:
                raise error
            scale = 1.0 if throttled else 0.05  # botocore's ExponentialBackoff
            yield random.random() * min(scale * 2 ** (tries - 1), MAX_BACKOFF)

    def _headers(self, inm: bool, content_type: str | None,
                 metadata: dict[str, str] | None) -> dict[str, str] | None:
        headers = {"User-Agent": "mcpfs", **self.defaults.headers(write=True)}
        if inm:
            headers["If-None-Match"] = "*"
        if content_type:
            headers["Content-Type"] = content_type
        for name, value in (metadata or {}).items():
            headers[META + name] = value
        if not all(_TOKEN.fullmatch(name) and _PLAIN.fullmatch(value)
                   for name, value in headers.items()):
            return None  # (boto3 sends what it can of that, or says why not)
        return headers

    def _send(self, target: Target, method: str, path: str, data: bytes,
              headers: dict[str, str], pooled: bool = True
              ) -> tuple[int, dict[str, str], bytes]:
        """One request on an idle connection to the target (a new one when none is left,
        or not ``pooled``); it goes back to the idle ones after a whole answer, unless the
        server closes it. Any failure closes it."""
        where = (target.scheme, target.netloc)
        conn = None
        with self._lock:
            idle = self._idle.get(where) if pooled else None
            while idle and conn is None:
                conn = idle.pop()
                if conn.sock is None or readable_now(conn.sock.fileno()):  # closed while idle
                    conn.close()
                    conn = None
        reused = conn is not None
        if conn is None:
            conn = self._connect(target)
        try:
            conn.request(method, path, body=data or None, headers=headers)
            response = conn.getresponse()
            text = response.read()
        except BaseException as exc:
            conn.close()
            if reused and isinstance(exc, _STALE):
                raise Resend from exc
            raise
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                idle = self._idle.setdefault(where, [])
                if len(idle) < POOL_MAX:
                    idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()
        answer = {name.lower(): value for name, value in response.getheaders()}
        return response.status, answer, text

    def _connect(self, target: Target) -> http.client.HTTPConnection:
        host, port = target.netloc.rsplit(":", 1) if has_port(target.netloc) \
            else (target.netloc, None)
        host = host.strip("[]")
        if target.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, int(port) if port else None, timeout=self.connect_timeout,
                context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(host, int(port) if port else None,
                                              timeout=self.connect_timeout)
        try:
            conn.connect()
        except socket.timeout as exc:
            raise botocore.exceptions.ConnectTimeoutError(
                endpoint_url=f"{target.scheme}://{target.netloc}") from exc
        except OSError as exc:
            raise botocore.exceptions.EndpointConnectionError(
                endpoint_url=f"{target.scheme}://{target.netloc}") from exc
        conn.sock.settimeout(self.read_timeout)
        return conn

    def close(self) -> None:
        """Close the idle connections of the blocking transport (at unmount; a request
        after it opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def aclose(self) -> None:
        """Close the trio thread's idle connections (at unmount)."""
        self._wire.close()


class _Steps:
    """Walks an exchange (DirectRequests._exchange) for a driver: :meth:`next` gives the
    next step (a request to send, or seconds to wait) with ``reply`` handed in, or None
    once the exchange ended (its answer in ``result``; its error raised)."""

    def __init__(self, steps: Generator[Any, Any, Answer | None]) -> None:
        self._steps = steps
        self.reply: Any = None
        self.result: Answer | None = None

    def next(self) -> Any:
        reply, self.reply = self.reply, None
        try:
            return self._steps.send(reply)
        except StopIteration as done:
            self.result = done.value
            return None


def _proxied(parts: urllib.parse.SplitResult) -> bool:
    """Whether a proxy variable routes requests to this URL (boto3 honours them)."""
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")




__all__ = ["DIRECT_MAX", "DirectRequests", "Target"]
