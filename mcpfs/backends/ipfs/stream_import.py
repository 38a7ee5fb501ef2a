"""An import that runs while the bytes arrive: pieces in, one DAG root out.

:class:`StreamImport` runs an import function (``MFSTree.import_pieces``, which writes
blocks, or :func:`hash_pieces`, which only computes the CID) in its own thread, fed through
a bounded queue. Two ways to feed it:

- ``feed(data)`` blocks while the queue is full (back-pressure: vfs feeds writes from a
  worker thread, so a slow import slows the writer instead of growing memory);
- ``offer(data)`` never blocks: when the queue is full the import is abandoned and
  ``offer`` returns False (reads are offered from the trio thread, which must not wait;
  a reader faster than hashing simply gets no identity).

- ``try_feed(data)`` never blocks and never abandons: False when the queue is full (vfs
  feeds sequential writes from the trio thread this way, and hops to a worker thread to
  ``feed`` only when the importer is behind).

``finish()`` (blocking) waits for the root of everything fed: an :class:`Imported`, or
None when the import failed or was abandoned; ``error`` then says why the import failed.
``abandon()`` never blocks. A stream made with ``read_back`` (a block-writing import: its
DAG holds every byte fed) can give those bytes back: ``content()`` finishes it and reads
the DAG, so a writer may skip keeping its own copy (vfs's spool) while it streams. The thread holds
``hold()`` (e.g. the repo's GC ``writing()`` lock) from start to end, so a GC cannot remove
blocks the import wrote or deduplicated against. Abandoned or failed imports leave
unreferenced blocks for the next GC.

Concurrency: the queue is the only channel between the feeder and the import thread;
``_aborted``/``_error`` are plain flags written by one side and read by the other.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Final

from .blockstore import NullBlockstore
from .importer import Imported, ImportParams, import_chunks
from .mfs_tree import rechunk

log = logging.getLogger("mcpfs.ipfs.stream")

QUEUE_PIECES: Final = 32  # pieces (FUSE writes/reads, <= 128 KiB each) queued ahead
_EOF = object()
_ABORT = object()


class _Abandoned(Exception):
    pass


def hash_pieces(pieces: Iterable[bytes], params: ImportParams) -> Imported:
    """The DAG root ``pieces`` would import to with ``params``, writing no block."""
    return import_chunks(NullBlockstore(), rechunk(pieces, params.chunk_size), params)


class StreamImport:
    """See the module docstring. ``only_hash`` records that no block is written."""

    def __init__(self, run: Callable[[Iterator[bytes]], Imported], *,
                 hold: Callable[[], AbstractContextManager] | None = None,
                 queue_pieces: int = QUEUE_PIECES, only_hash: bool = False,
                 read_back: Callable[[Imported], Iterable[bytes]] | None = None,
                 name: str = "stream-import") -> None:
        self.only_hash = only_hash
        self._read_back = None if only_hash else read_back
        self.fed = 0
        self._run_import = run
        self._hold = hold
        self._queue: queue.Queue = queue.Queue(queue_pieces)
        self._done = threading.Event()
        self._result: Imported | None = None
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def hashing(cls, params: ImportParams, queue_pieces: int = QUEUE_PIECES) -> StreamImport:
        """A stream that only computes the CID under ``params``."""
        return cls(lambda pieces: hash_pieces(pieces, params), queue_pieces=queue_pieces,
                   only_hash=True, name="identity-hash")

    def _pieces(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _EOF:
                return
            if item is _ABORT:
                raise _Abandoned
            yield item

    def _run(self) -> None:
        try:
            with self._hold() if self._hold is not None else nullcontext():
                self._result = self._run_import(self._pieces())
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self._error = exc
            self._done.set()
            while not self._aborted:  # unblock a feeder until it learns of the failure
                try:
                    if self._queue.get(timeout=0.1) is _EOF:
                        break
                except queue.Empty:
                    pass
        finally:
            self._done.set()

    @property
    def failed(self) -> bool:
        return self._error is not None or self._aborted

    @property
    def error(self) -> BaseException | None:
        """Why the import failed (None while it runs, after success or an abandon)."""
        return None if isinstance(self._error, _Abandoned) else self._error

    @property
    def keeps_bytes(self) -> bool:
        """The DAG holds every byte fed and ``content()`` can read them back."""
        return self._read_back is not None

    def content(self) -> Iterator[bytes] | None:
        """Finish (blocking), then the bytes of everything fed, read back from the DAG;
        None when the import failed or was abandoned (the bytes are gone)."""
        if self._read_back is None:
            raise ValueError("this stream keeps no bytes")
        imported = self.finish() if not self._done.is_set() else self.wait(0)
        if imported is None:
            return None
        return iter(self._read_back(imported))

    def feed(self, data: bytes) -> None:
        """Queue the next bytes (blocks while the queue is full and the import runs)."""
        if self.failed:
            return
        self.fed += len(data)
        self._queue.put(bytes(data))

    def try_feed(self, data: bytes) -> bool:
        """Queue the next bytes if there is room (True); False, and nothing queued, when
        the queue is full. After a failure the bytes are dropped (True): see ``error``."""
        if self.failed:
            return True
        try:
            self._queue.put_nowait(bytes(data))
        except queue.Full:
            return False
        self.fed += len(data)
        return True

    def offer(self, data: bytes) -> bool:
        """Queue the next bytes without waiting; abandons the import (False) when full."""
        if self.failed:
            return False
        if self.try_feed(data):
            return True
        self.abandon()
        return False

    def finish(self, timeout: float | None = None) -> Imported | None:
        """Wait for the DAG of everything fed; None when the import failed, was abandoned
        or did not end within ``timeout`` seconds."""
        if self._aborted:
            return None
        self._queue.put(_EOF)
        if not self._done.wait(timeout):
            self.abandon()
            return None
        if self._error is not None:
            if not isinstance(self._error, _Abandoned):
                log.warning("streaming import failed: %s", self._error)
            return None
        return self._result

    def wait(self, timeout: float | None = None) -> Imported | None:
        """The result of a stream already finished by another caller (blocking)."""
        if not self._done.wait(timeout) or self._error is not None:
            return None
        return self._result

    def abandon(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        try:
            self._queue.put_nowait(_ABORT)
        except queue.Full:  # the importer is busy: it drains the queue, then sees the flag
            threading.Thread(target=self._queue.put, args=(_ABORT,), daemon=True).start()


__all__ = ["StreamImport", "hash_pieces", "QUEUE_PIECES"]
