"""Single PutObjects of small bodies as one signed HTTP request each (:class:`DirectPut`),
and the request defaults every S3 request of a backend gets (:class:`RequestDefaults`).

Why: botocore's request pipeline (parameter checks, endpoint rules, some twenty events,
urllib3, response parsing) costs about 2 ms of CPU per PutObject on 2 cores, and that CPU
holds the GIL the FUSE loop needs: for 1,000 small files written through the mount it was
more than everything else the daemon did. :class:`DirectPut` sends the same request, signed
by botocore's own SigV4 signer with the client's current credentials at the URL botocore
itself resolves for the bucket, over a plain ``http.client`` connection kept per worker
thread: about 0.5 ms.

What it sends: PUT of the body with Content-Length, Content-MD5 (S3 refuses a body that does
not match it: BadDigest), Content-Type and ``x-amz-meta-*`` when given, ``If-None-Match: *``
for a new file, and the :class:`RequestDefaults` headers (requester pays, SSE). Over https
the payload is not hashed into the signature (TLS and Content-MD5 protect it, as botocore
does for streamed bodies); over http it is.

Where it applies (:meth:`DirectPut.target`, resolved once per bucket): a signed client
(credentials known); a bucket botocore presigns with SigV4 (``AWS4-HMAC-SHA256``: not an S3
Express directory bucket, not a SigV4a multi-region access point); an endpoint that no
proxy variable (``HTTPS_PROXY``...) routes; a body up to ``DIRECT_MAX`` bytes and headers
in ASCII. Anything else goes through boto3, as every other request does.

Retries (botocore's "standard" mode, which this follows): a connection error, a timeout, a
429 or 5xx answer, or a throttling error code is tried again, ``max_attempts`` tries in all,
after botocore's backoff (``random() * 2**attempt`` seconds, at most 20); a request that met
a kept-alive connection the server had closed is sent again at once. The answer's
``RetryAttempts`` counts the re-sends, so a 412 after one reaches
``MultipartUploads._unless_ours`` as a retried conditional write.

Errors: an S3 error answer raises the ``botocore.exceptions.ClientError`` boto3 would (code
and message from the XML body, the HTTP status), a failed connection
``EndpointConnectionError``/``ConnectionClosedError``, a timeout
``ConnectTimeoutError``/``ReadTimeoutError``; ``s3_errors.map_error`` maps them as boto3's.
A body shorter than its size (a spool that shrank) is EIO.

Resources and concurrency: connections live in a per-thread dict (trio's worker threads are
reused: at most one connection per worker thread and endpoint) and are also listed under
``_lock``, so :meth:`DirectPut.close` (at unmount) closes them all; ``_targets`` (bucket ->
target) is written under ``_lock`` too.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import logging
import random
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Final

import botocore.exceptions
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path

from ..errors import McpfsError

log = logging.getLogger("mcpfs.backends.s3")

DIRECT_MAX: Final = 1 << 20  # bodies up to this go direct (read whole into memory)
MAX_BACKOFF: Final = 20.0  # seconds, botocore's standard mode
RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
RETRY_CODES: Final = frozenset({  # botocore's standard mode: throttling and transient codes
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "RequestTimeout", "RequestTimeoutException", "InternalError"})
REDIRECT_CODES: Final = frozenset({"PermanentRedirect", "TemporaryRedirect",
                                   "AuthorizationHeaderMalformed"})  # the wrong region
PROBE_KEY: Final = "mcpfs-direct-put-probe"  # the key presigned to learn a bucket's URL
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class RequestDefaults:
    """Arguments every request of a client gets where S3 takes them (a botocore
    ``before-parameter-build`` hook, so the daemon's client and the helpers' agree):

    - ``requester_pays``: ``x-amz-request-payer: requester`` on every operation that has a
      RequestPayer parameter (requester-pays buckets, the AWS CLI's ``--request-payer``);
    - ``sse`` / ``sse_kms_key_id``: server-side encryption of every object we write
      (PutObject, CreateMultipartUpload, CopyObject; mountpoint-s3's ``--sse`` and
      ``--sse-kms-key-id``), for buckets whose policy demands it.
    """

    requester_pays: bool = False
    sse: str | None = None  # "AES256", "aws:kms" or "aws:kms:dsse"
    sse_kms_key_id: str | None = None

    def install(self, client: Any) -> None:
        if not (self.requester_pays or self.sse):
            return

        def add(params: dict[str, Any], model: Any, **_: Any) -> None:
            shape = model.input_shape
            members = shape.members if shape is not None else {}
            if self.requester_pays and "RequestPayer" in members:
                params.setdefault("RequestPayer", "requester")
            if self.sse and model.name in _WRITES:
                params.setdefault("ServerSideEncryption", self.sse)
                if self.sse_kms_key_id:
                    params.setdefault("SSEKMSKeyId", self.sse_kms_key_id)
        client.meta.events.register("before-parameter-build.s3", add)


_WRITES = frozenset({"PutObject", "CreateMultipartUpload", "CopyObject"})  # new objects


def put_kwargs(bucket: str, key: str, body: Any, size: int, inm: bool,
               content_type: str | None, metadata: dict[str, str] | None) -> dict[str, Any]:
    """PutObject's arguments, the same in the daemon and in a helper."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body,
                              "ContentLength": size}
    if inm:
        kwargs["IfNoneMatch"] = "*"
    if content_type:
        kwargs["ContentType"] = content_type
    if metadata:
        kwargs["Metadata"] = metadata
    return kwargs


@dataclass(frozen=True)
class Target:
    """Where a bucket's PutObjects go, as botocore resolved it."""

    scheme: str  # "http" or "https"
    netloc: str  # host[:port]
    prefix: str  # the URL path before the key ("/bucket/" path-style, "/" virtual-hosted)
    region: str  # the signing region and service, from the presigned credential scope
    service: str


class DirectPut:
    """Signed single PutObjects without botocore's pipeline; see the module docstring.
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
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []

    # ---------------------------------------------------------------- where
    def target(self, bucket: str) -> Target | None:
        """The bucket's Target; None when its PUTs go through boto3 (blocking: the first
        call per bucket runs botocore's endpoint resolution, no request)."""
        with self._lock:
            if bucket in self._targets:
                return self._targets[bucket]
        found = self._resolve(bucket)
        with self._lock:
            self._targets[bucket] = found
        return found

    def _resolve(self, bucket: str) -> Target | None:
        if bucket.endswith("--x-s3") or bucket.startswith("arn:"):
            return None  # S3 Express (session auth), access points: boto3's own
        try:
            url = self.client.generate_presigned_url(
                "put_object", Params={"Bucket": bucket, "Key": PROBE_KEY}, ExpiresIn=60)
        except Exception as exc:  # noqa: BLE001 - any reason: boto3 does these PUTs
            log.debug("s3://%s: PUTs through boto3 (%s)", bucket, type(exc).__name__)
            return None
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        scope = query.get("X-Amz-Credential", [""])[0].rsplit("/", 4)
        if len(scope) != 5:  # presigned with SigV2: requests are still SigV4, the client's
            scope = ["", "", self.client.meta.region_name or "us-east-1",
                     self.client.meta.service_model.signing_name, ""]
        if query.get("X-Amz-Algorithm", ["AWS4-HMAC-SHA256"]) != ["AWS4-HMAC-SHA256"] \
                or parts.scheme not in ("http", "https") \
                or not parts.path.endswith("/" + PROBE_KEY) or _proxied(parts):
            log.debug("s3://%s: PUTs through boto3", bucket)
            return None
        return Target(parts.scheme, parts.netloc, parts.path[:-len(PROBE_KEY)], scope[2],
                      scope[3])

    def _moved(self, bucket: str, status: int, answer: dict[str, str], code: str) -> bool:
        """Whether this error answer says the bucket is elsewhere (another region): its
        PUTs go through boto3 from now on, which follows such redirects."""
        if status in (301, 307) or code in REDIRECT_CODES or (
                status == 400 and "x-amz-bucket-region" in answer):
            log.debug("s3://%s: in another region; PUTs through boto3", bucket)
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
        path = target.prefix + urllib.parse.quote(key, safe="/~")
        url = f"{target.scheme}://{target.netloc}{path}"
        data = body if isinstance(body, (bytes, bytearray, memoryview)) else body.read(size)
        if len(data) != size:
            raise McpfsError(f"put {url}: the body has {len(data)} of {size} bytes",
                             errno=errno.EIO)
        headers["Content-Length"] = str(size)
        headers["Content-MD5"] = base64.b64encode(
            hashlib.md5(data, usedforsecurity=False).digest()).decode()
        tries = resends = 0  # tries count against max_attempts; every re-send is a retry
        while True:
            request = AWSRequest(method="PUT", url=url, data=data, headers=headers)
            request.context["has_streaming_input"] = True  # https: Content-MD5, no SHA-256
            S3SigV4Auth(self.credentials.get_frozen_credentials(), target.service,
                        target.region).add_auth(request)
            try:
                status, answer, text = self._send(target, path, data,
                                                  dict(request.headers.items()))
            except _Resend:  # a kept-alive connection the server had closed: at once,
                resends += 1  # on a new connection, not counted as a try
                continue
            except (OSError, http.client.HTTPException,
                    botocore.exceptions.BotoCoreError) as exc:
                error: Exception = _connection_error(exc, url)
            else:
                retries = tries + resends
                if status < 300 and b"<Error>" not in text[:512]:
                    return {"ETag": answer.get("etag"),
                            "VersionId": answer.get("x-amz-version-id"),
                            "ResponseMetadata": {"HTTPStatusCode": status,
                                                 "RetryAttempts": retries}}
                error = _client_error(status if status >= 300 else 500, text, retries)
                code = error.response["Error"]["Code"]
                if self._moved(bucket, status, answer, code):
                    return None
                if not (status in RETRY_STATUS or status < 300 or code in RETRY_CODES):
                    raise error
            tries += 1
            if tries >= self.max_attempts:
                raise error
            time.sleep(min(MAX_BACKOFF, random.random() * 2 ** tries))

    def _headers(self, inm: bool, content_type: str | None,
                 metadata: dict[str, str] | None) -> dict[str, str] | None:
        headers = {"User-Agent": "mcpfs"}
        if inm:
            headers["If-None-Match"] = "*"
        if content_type:
            headers["Content-Type"] = content_type
        for name, value in (metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        defaults = self.defaults
        if defaults.requester_pays:
            headers["x-amz-request-payer"] = "requester"
        if defaults.sse:
            headers["x-amz-server-side-encryption"] = defaults.sse
            if defaults.sse_kms_key_id:
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = \
                    defaults.sse_kms_key_id
        if not all(name.isascii() and value.isascii() for name, value in headers.items()):
            return None
        return headers

    def _send(self, target: Target, path: str, data: bytes,
              headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """One request on this thread's connection to the target (made when missing; closed
        and forgotten on any failure, or when the server closes it)."""
        conns: dict[tuple[str, str], http.client.HTTPConnection] = \
            self._local.__dict__.setdefault("conns", {})
        where = (target.scheme, target.netloc)
        conn = conns.pop(where, None)
        if conn is not None and _dropped(conn):  # closed by the server while idle
            self._forget(conn)
            conn = None
        reused = conn is not None
        if conn is None:
            conn = self._connect(target)
        try:
            conn.request("PUT", path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read()
        except BaseException as exc:
            self._forget(conn)
            if reused and isinstance(exc, _STALE):
                raise _Resend from exc
            raise
        if response.will_close:
            self._forget(conn)
        else:
            conns[where] = conn
        answer = {name.lower(): value for name, value in response.getheaders()}
        return response.status, answer, text

    def _connect(self, target: Target) -> http.client.HTTPConnection:
        host, port = target.netloc.rsplit(":", 1) if _has_port(target.netloc) \
            else (target.netloc, None)
        host = host.strip("[]")
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context(
                    cafile=get_cert_path(self._ca_bundle or True))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, int(port) if port else None, timeout=self.connect_timeout,
                context=self._ssl)
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
        with self._lock:
            self._all.append(conn)
        return conn

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        """Close every kept connection (at unmount; a thread using one gets a new one)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class _Resend(Exception):
    """A kept-alive connection was closed by the server before the request: send again."""


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the other end (readable at EOF; urllib3
    checks the same before reusing one)."""
    if conn.sock is None:
        return True
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _has_port(netloc: str) -> bool:
    return netloc.rsplit("]", 1)[-1].count(":") == 1


def _proxied(parts: urllib.parse.SplitResult) -> bool:
    """Whether a proxy variable routes requests to this URL (boto3 honours them)."""
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")


def _connection_error(exc: BaseException, url: str) -> Exception:
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return exc
    if isinstance(exc, socket.timeout):
        return botocore.exceptions.ReadTimeoutError(endpoint_url=url)
    return botocore.exceptions.ConnectionClosedError(endpoint_url=url)


def _client_error(status: int, text: bytes, attempts: int) -> botocore.exceptions.ClientError:
    """The ClientError botocore raises for this error answer (XML ``<Error>`` body)."""
    code = message = ""
    try:
        root = ET.fromstring(text) if text.strip() else None
    except ET.ParseError:
        root = None
    if root is not None:
        code = root.findtext("Code") or ""
        message = root.findtext("Message") or ""
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code or str(status), "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": attempts}},
        "PutObject")


__all__ = ["DIRECT_MAX", "DirectPut", "RequestDefaults", "Target", "put_kwargs"]
