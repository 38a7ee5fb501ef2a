"""Single PutObjects of spool files in helper processes, off the daemon's GIL.

One boto3 PutObject costs about 1 ms of Python CPU. In the daemon that CPU holds the GIL
the FUSE request loop needs, so a burst of small files uploaded in the background (write-
back) slows every request of the mount, and the uploads themselves (measured on 2 cores:
about 4.4 ms of daemon CPU per small file, 1.8 ms with the PUT in a helper process; 1,000
write-back creates went from ~200 to ~300 files/s). :class:`PutPool` runs those PUTs in
``processes`` helper processes (``concurrent.futures.ProcessPoolExecutor``, started on
first use with the ``spawn`` method, never by fork of the threaded daemon). A helper exits
by itself within a second once the daemon is gone (``kill -9`` included): it watches its
parent, since a pool worker would otherwise wait forever on a queue it holds both ends of.

What a helper gets: a :class:`ClientSpec` (endpoint, region, addressing style, retries,
timeouts: the daemon's own client settings) and, with each request, the daemon's current
credentials (botocore refreshes them in the daemon; nothing is read from the helper's
environment, and no secret is ever logged or put on a command line). What comes back is
plain data: ``("ok", etag, version_id)``, ``("client", error_response)`` (a ClientError's
response: the daemon rebuilds the ClientError and maps it as any other), ``("boto",
class_name)`` or ``("os", errno, strerror)`` (the spool could not be read).

Errors: a helper that died (killed, out of memory) is EIO for the requests it had, logged
once; the pool is rebuilt for the next request. Resources: :meth:`PutPool.close` (at
unmount) shuts the helpers down. Concurrency: ``submit`` may be called from several worker
threads; ``_lock`` guards the executor swap.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mcpfs.backends.s3")

Creds = tuple[str, str, str | None]  # access key, secret key, session token


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


@dataclass(frozen=True)
class ClientSpec:
    """The settings of the daemon's S3 client, for building the same client elsewhere."""

    endpoint_url: str | None
    region: str | None
    addressing_style: str
    retry_mode: str
    max_attempts: int
    pool: int
    connect_timeout: float = 10
    read_timeout: float = 60
    defaults: RequestDefaults = RequestDefaults()  # (frozen: a safe shared default)


# ---------------------------------------------------------------- in a helper process
PARENT_CHECK = 1.0  # seconds between a helper's checks that the daemon still runs


def _watch_parent(parent: int) -> None:
    """A helper's initializer: exit as soon as ``parent`` (the daemon) is gone."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_CLIENTS: dict[tuple[ClientSpec, Creds], Any] = {}  # a helper's clients (few: creds change)


def _client(spec: ClientSpec, creds: Creds) -> Any:
    client = _CLIENTS.get((spec, creds))
    if client is None:
        import boto3
        import botocore.config
        if len(_CLIENTS) >= 4:  # old credentials: drop their clients
            _CLIENTS.clear()
        session = boto3.session.Session(aws_access_key_id=creds[0],
                                        aws_secret_access_key=creds[1],
                                        aws_session_token=creds[2])
        client = _CLIENTS[(spec, creds)] = session.client(
            "s3", endpoint_url=spec.endpoint_url, region_name=spec.region,
            config=botocore.config.Config(
                retries={"mode": spec.retry_mode, "total_max_attempts": spec.max_attempts},
                s3={"addressing_style": spec.addressing_style},
                max_pool_connections=spec.pool, connect_timeout=spec.connect_timeout,
                read_timeout=spec.read_timeout))
        spec.defaults.install(client)
    return client


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


def put_file(spec: ClientSpec, creds: Creds, bucket: str, key: str, path: str, size: int,
             inm: bool, content_type: str | None, metadata: dict[str, str] | None) -> tuple:
    """One PutObject of the file ``path`` (``size`` bytes), run in a helper; plain data
    back (see the module docstring)."""
    import botocore.exceptions
    try:
        with open(path, "rb") as body:
            resp = _client(spec, creds).put_object(
                **put_kwargs(bucket, key, body, size, inm, content_type, metadata))
        return ("ok", resp.get("ETag"), resp.get("VersionId"))
    except botocore.exceptions.ClientError as exc:
        meta = exc.response.get("ResponseMetadata", {})
        response = {"Error": dict(exc.response.get("Error", {})),
                    "ResponseMetadata": {"HTTPStatusCode": meta.get("HTTPStatusCode", 0),
                                         "RetryAttempts": meta.get("RetryAttempts", 0)}}
        return ("client", response)
    except botocore.exceptions.BotoCoreError as exc:
        return ("boto", type(exc).__name__)
    except OSError as exc:
        return ("os", exc.errno or errno.EIO, exc.strerror or str(exc))


# ---------------------------------------------------------------- in the daemon
class PutPool:
    """Helper processes for single PutObjects; see the module docstring."""

    def __init__(self, spec: ClientSpec, processes: int) -> None:
        self.spec = spec
        self.processes = processes
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_watch_parent, initargs=(os.getpid(),))
            return self._executor

    def put_file(self, creds: Creds, bucket: str, key: str, path: str, size: int,
                 inm: bool, content_type: str | None,
                 metadata: dict[str, str] | None) -> tuple:
        """Blocking (a worker thread): the helper's answer; ``("died",)`` when the helper
        died (the pool is rebuilt for the next request)."""
        executor = self._get()
        try:
            return executor.submit(put_file, self.spec, creds, bucket, key, path, size, inm,
                                   content_type, metadata).result()
        except BrokenExecutor:
            with self._lock:
                if self._executor is executor:
                    log.error("an S3 upload process died; starting a new one")
                    self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            return ("died",)

    def close(self) -> None:
        """Stop the helpers (requests in flight finish first)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["ClientSpec", "PutPool", "RequestDefaults", "put_file", "put_kwargs"]
