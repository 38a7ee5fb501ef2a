"""How the S3 backend's requests run (mixed into :class:`~mcpfs.backends.s3.S3Backend`,
whose ``limiter``, ``stats``, ``_direct``, ``_denied`` and ``_inm_ok`` it uses): boto3 work
in worker threads (:meth:`RequestRuns.call`), direct requests (s3_direct.py) from the trio
thread once a bucket's target is known (:meth:`RequestRuns.direct_first`), both under the
one ``limiter`` (at most ``threads`` requests in flight), counted in ``stats`` and with
their errors mapped once (s3_errors.map_error); and If-None-Match for servers without it.

Concurrency: trio thread; the limiter is the only shared state (stats has its own lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import botocore.exceptions
import trio

from ..errors import McpfsError
from .s3_direct import DIRECT_MAX, Target
from .s3_errors import map_error

log = logging.getLogger("mcpfs.backends.s3")

T = TypeVar("T")
STATS_NAME = "s3"  # the backend's name in Stats.backend


class RequestRuns:
    """The request runners of S3Backend (see the module docstring)."""

    async def call(self, fn: Callable[[], T], what: str, op: str = "other", *,
                   bytes_out: int = 0, bytes_in: Callable[[T], int] | None = None) -> T:
        """Run ``fn`` (boto3 work) in a worker thread; errors through :func:`map_error`.
        With ``stats``: counted as one ``op`` request, ``bytes_out`` sent and
        ``bytes_in(result)`` received when it succeeds, an error when it raises (a
        cancellation is not counted)."""
        return await self._counted(
            lambda: trio.to_thread.run_sync(fn, limiter=self.limiter), what, op,
            bytes_out=bytes_out, bytes_in=bytes_in)

    async def direct_first(self, bucket: str, size: int,
                           direct: Callable[[Target], Awaitable[T | None]] | None,
                           work: Callable[[], T], what: str, op: str, *,
                           bytes_out: int = 0) -> T:
        """One request of ``size`` bytes to ``bucket``: ``direct(target)`` from the trio
        thread when :meth:`_direct_now` allows (under the limiter, as a worker thread's:
        at most ``threads`` requests in flight; counted and its errors mapped as
        :meth:`call` says), else, or when it was not sent (None: not counted), ``work``
        in a worker thread through :meth:`call`."""
        target = self._direct_now(bucket, size) if direct is not None else None
        if target is not None:
            token = object()  # (a borrower of its own: a task may hold the limiter)
            await self.limiter.acquire_on_behalf_of(token)
            try:
                resp = await self._counted(lambda: direct(target), what, op,
                                           bytes_out=bytes_out, unsent=None)
            finally:
                self.limiter.release_on_behalf_of(token)
            if resp is not None:
                return resp
        return await self.call(work, what, op, bytes_out=bytes_out)

    async def _counted(self, run: Callable[[], Awaitable[T]], what: str, op: str, *,
                       bytes_out: int = 0, bytes_in: Callable[[T], int] | None = None,
                       unsent: Any = object()) -> T:
        """``await run()`` counted and its errors mapped as :meth:`call` says; a result
        that ``is unsent`` is not counted (nothing was sent)."""
        stats = self.stats
        start = time.perf_counter() if stats is not None else 0.0
        try:
            result = await run()
        except Exception as exc:
            if stats is not None:
                stats.backend(STATS_NAME, op, seconds=time.perf_counter() - start,
                              error=True)
            if isinstance(exc, (botocore.exceptions.BotoCoreError,
                                botocore.exceptions.ClientError)):
                raise map_error(exc, what, self._denied) from None
            raise
        if stats is not None and result is not unsent:
            stats.backend(STATS_NAME, op, bytes_in=bytes_in(result) if bytes_in else 0,
                          bytes_out=bytes_out, seconds=time.perf_counter() - start)
        return result

    def _direct_to(self, bucket: str, size: int = 0) -> Target | None:
        """Where a direct request of ``size`` bytes to ``bucket`` goes (s3_direct; a worker
        thread: the first call per bucket prepares one request); None: boto3 sends it (no
        direct requests, a bucket they do not serve, more than ``DIRECT_MAX`` bytes)."""
        direct = self._direct
        return direct.target(bucket) if direct is not None and size <= DIRECT_MAX else None

    def _direct_now(self, bucket: str, size: int = 0) -> Target | None:
        """:meth:`_direct_to` when the trio thread can know it and sign without blocking
        (the bucket's target was found before, the credentials need no refresh); None
        otherwise (then a worker thread does the request)."""
        direct = self._direct
        if direct is None or size > DIRECT_MAX or not direct.credentials_at_hand():
            return None
        return direct.known(bucket)

    async def _conditional(self, attempt: Callable[[bool], Awaitable[T]], inm: bool) -> T:
        """``attempt(inm)``; a server without If-None-Match (501 NotImplemented) gets one
        warning and plain requests from then on."""
        try:
            return await attempt(inm and self._inm_ok)
        except McpfsError as exc:
            if not (inm and self._inm_ok and "NotImplemented" in str(exc)):
                raise
            log.warning("S3 endpoint does not support If-None-Match; writes of new files "
                        "may overwrite a concurrent writer's")
            self._inm_ok = False
            return await attempt(False)


__all__ = ["RequestRuns", "STATS_NAME"]
