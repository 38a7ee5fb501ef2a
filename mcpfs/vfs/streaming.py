"""Streaming writes of an open file: the Mount's import fed as sequential writes arrive.

:class:`Streaming` is part of :class:`~mcpfs.vfs.handles.OpenFile` (a base class, so the
streaming logic lives in one module; it uses the OpenFile's ``lock``, ``spool``, ``stream``,
``writer``, ``bridge``, ``size`` and journal row). See handles.py's docstring for when a
stream starts and ends. A stream whose DAG keeps the bytes (``stream.keeps_bytes``) is
*unspooled*: the writes go only to the import; :meth:`_respool` reads them back into the
spool when something needs them there. An import that fails drops the write as a whole and
its error becomes sticky (``lost``): every later write, read and close() gets it.

Errors: what the import raised (ENOSPC from a full blockstore, EIO), or the spool's.
Concurrency: every method here runs under ``OpenFile.lock`` (trio thread); the import
runs in its own thread, fed through a bounded queue (stream_import.py).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import trio

from ..errors import McpfsError
from .spool import limiter as spool_limiter

log = logging.getLogger("mcpfs.vfs")


class Streaming:
    async def _leave_stream(self, keep: bool = True) -> None:
        """Writes stop streaming (a write elsewhere, a truncate, a read): an unspooled
        stream's bytes go back into the spool first (unless ``keep`` is False: a truncate
        to 0), any other stream is abandoned. Under ``lock``."""
        self.sequential = False
        stream, self.stream = self.stream, None
        if stream is None:
            return
        if self.unspooled and keep:
            await self._respool(stream)
        else:
            self.unspooled = False
            stream.abandon()

    async def _respool(self, stream: Any) -> None:
        """Finish an unspooled ``stream`` and write its bytes into the spool (one worker
        thread; the blocks are read back). Raises (the write dropped) when the import
        failed or the spool could not take the bytes (ENOSPC). Under ``lock``."""
        self.unspooled = False

        def work() -> BaseException | None:
            try:
                chunks = stream.content()
                if chunks is None:
                    return stream.error or McpfsError("import abandoned", errno=errno.EIO)
                self.spool.replace_sync(chunks)
            except Exception as exc:  # noqa: BLE001 - the spool is partial: dropped below
                return exc
            return None
        err = await trio.to_thread.run_sync(work, limiter=spool_limiter())
        if err is not None:
            raise self._stream_lost(stream, err)

    def _stream_lost(self, stream: Any, err: BaseException | None = None) -> McpfsError:
        """An unspooled import failed (or its bytes could not be read back): they are gone,
        so the write is dropped as a whole (as a failed copy check is), and its error is
        what every later write and close() of the file get (``lost``)."""
        self.unlinked = True
        self.unspooled = self.sequential = False
        if self.stream is stream:
            self.stream = None
        stream.abandon()
        err = err or stream.error
        log.error("write to /%s/%s: the streaming import failed (%s); the file is dropped",
                  self.mount.name, self.writer.path, err or "abandoned")
        if not isinstance(err, McpfsError):
            err = McpfsError(f"import failed: {err}",
                             errno=getattr(err, "errno", None) or errno.EIO)
        self.lost = err
        return err

    async def _feed(self, data: bytes) -> None:
        """The next sequential bytes of an unspooled file, into its import only: queued
        from the trio thread, or from a worker thread when the importer is behind."""
        stream = self.stream
        if not stream.try_feed(data):
            await trio.to_thread.run_sync(stream.feed, data, limiter=spool_limiter())
        if stream.failed:
            raise self._stream_lost(stream)

    async def _finish_unspooled(self) -> Any:
        """Commit of an unspooled file: wait for its import, hand the DAG to the Mount
        (``imported``; for the bridge the identity, which is the import's CID) and return
        the stream (its bytes can still be read back). Under ``lock``."""
        stream, self.stream = self.stream, None
        self.unspooled = self.sequential = False
        imported = await trio.to_thread.run_sync(stream.finish)
        if imported is None:
            raise self._stream_lost(stream)
        self.writer.extra["imported"] = imported
        self.writer.extra["content_size"] = imported.size
        if self.bridge is not None:
            self.writer.extra["identity"] = str(imported.cid)
        return stream

    async def _start_stream(self) -> None:
        """Begin the Mount's streaming import with what the (memory) spool holds."""
        start = getattr(self.mount, "start_stream", None)
        if start is None and self.bridge is not None:  # no import of its own: the hash
            start = lambda _writer: self.bridge.write_stream()  # noqa: E731
        if start is None:
            self.sequential = False
            return
        self.stream = start(self.writer)
        if self.stream is None:
            self.sequential = False
            return
        if self.size:
            head = await self.spool.read(0, self.size)
            await trio.to_thread.run_sync(self.stream.feed, head, limiter=spool_limiter())
        # the bridge's identity must be the import's CID (same params), else it hashes
        # the spool, which then has to hold the bytes
        self.unspooled = getattr(self.stream, "keeps_bytes", False) and \
            getattr(self.bridge, "identity_from_mfs", True)
        if self.unspooled:  # a large write in progress: listed by ``mcpfs status``, and a
            await self._add_row_locked()  # crash is logged as a discarded write at start


__all__ = ["Streaming"]
