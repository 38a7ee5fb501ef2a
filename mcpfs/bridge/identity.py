"""Content identities of files read through the mount, computed while they are read.

A :class:`ReadTracker` follows one read handle. Reads that arrive in offset order (a
small reorder window absorbs the kernel's concurrent read-ahead requests finishing out of
order) are offered to a hashing :class:`~mcpfs.backends.ipfs.stream_import.StreamImport`;
once the read reaches the end of the file the CID of the whole content under the bridge's
profile is known and ``on_done(tracker, cid)`` is called (from the hashing thread, or the
trio thread for small files). A read that skips ahead past the window, a reader faster than
hashing, or a close before the end leave no identity (nothing is recorded).

Costs: nothing until a second sequential read (so ``open; read 1 byte; close`` of a big
file starts no thread); small files (``INLINE_MAX``) are hashed on the trio thread at their
end (sub-millisecond); larger ones in one thread per tracker.

The tracker also carries what a copy needs to know of its source (``location``,
``version``, ``ipfs_cid``: a DAG of the same bytes this node may hold): the bridge matches a
new write against the trackers of the same process (core.py).

Concurrency: ``on_read``/``close`` run on the trio thread only; ``_result``/``_finished`` are
written once, by the hashing thread or the trio thread, and read after ``_finished`` is set.
``_finished`` is a plain flag; the Event a waiter blocks on is made only when someone waits
(``_waiter``), under the module's ``_WAITERS`` lock, which ``_finish_now`` takes too: an
Event per open cost more than the rest of the tracker.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from ..backends.ipfs.importer import ImportParams
from ..backends.ipfs.stream_import import StreamImport, hash_pieces

INLINE_MAX: Final = 256 * 1024  # files up to this size are hashed on the trio thread
REORDER_MAX: Final = 32  # out-of-order reads buffered before tracking gives up
HASH_QUEUE: Final = 256  # pieces (<= 128 KiB) queued to the hashing thread (32 MiB)
WINDOW_MAX: Final = 64 << 20  # bytes read and not yet written back kept for a CopyCheck
_WAITERS: Final = threading.Lock()  # guards making and setting a tracker's ``_waiter``


class ReadTracker:
    def __init__(self, location: str, version: str | None, size: int, params: ImportParams,
                 on_done: Callable[[ReadTracker, str], None], *, pid: int | None = None,
                 ipfs_cid: str | None = None, identity: str | None = None,
                 hash_reads: bool = True) -> None:
        self.location = location
        self.version = version
        self.size = size
        self.pid = pid
        self.ipfs_cid = ipfs_cid  # a CID of the same bytes (the DAG read, or S3 metadata)
        self.params = params
        self._on_done = on_done
        self._next = 0  # the next offset expected in order
        self._ordered = True  # every read so far fitted the in-order stream
        self._hashing = identity is None and hash_reads  # (hash_reads: see core.py)
        self._head: list[bytes] = []  # pieces before the hasher starts (or all, if small)
        self._ahead: dict[int, bytes] = {}
        self._stream: StreamImport | None = None
        # the identity is final (see the docstring): known, or never to come from the reads
        self._finished = not self._hashing
        self._waiter: threading.Event | None = None
        self._result: str | None = identity
        self.window: deque[tuple[int, bytes]] | None = None  # kept for a CopyCheck
        self._window_bytes = 0
        self.closed_at: float | None = None

    @property
    def identity(self) -> str | None:
        """The identity if it is known by now (no waiting)."""
        return self._result if self._finished else None

    @property
    def settled(self) -> bool:
        """Whether the identity is final: known, or never to be (closed, no hashing left)."""
        return self._finished or (self.closed_at is not None and not self._hashing)

    @property
    def read_from_start(self) -> bool:
        """Whether the reads so far all came in order from offset 0 (a copy's source)."""
        return self._ordered

    def wait(self, timeout: float) -> str | None:
        """Block until the identity is known (or it never will be); None then."""
        with _WAITERS:
            if self._finished:
                return self._result
            if not self._hashing:
                return None
            if self._waiter is None:
                self._waiter = threading.Event()
            waiter = self._waiter
        waiter.wait(timeout)
        return self._result

    def _finish_now(self) -> None:
        """Mark the identity final (known, or never to be) and wake any waiter."""
        with _WAITERS:
            self._finished = True
            waiter = self._waiter
        if waiter is not None:
            waiter.set()

    # ---------------------------------------------------------------- trio thread
    def on_read(self, offset: int, data: bytes) -> None:
        if not self._ordered or not data or not (self._hashing or self.window is not None):
            return
        if offset != self._next:
            if offset < self._next:  # a re-read (page cache dropped): keep the new tail
                if offset + len(data) <= self._next:
                    return
                data = data[self._next - offset:]
            else:
                if len(self._ahead) >= REORDER_MAX:
                    self._unordered()
                    return
                self._ahead[offset] = data
                return
        self._take(data)
        while self._next in self._ahead and self._ordered:
            self._take(self._ahead.pop(self._next))

    def _take(self, data: bytes) -> None:
        offset = self._next
        self._next += len(data)
        if self.window is not None:
            self.window.append((offset, data))
            self._window_bytes += len(data)
            if self._window_bytes > WINDOW_MAX:  # the writer does not follow: no copy
                self.window = None
        if self._hashing:
            self._hash(data)

    def _hash(self, data: bytes) -> None:
        if self._stream is None:
            self._head.append(data)
            if self._next >= self.size:
                if self.size <= INLINE_MAX:
                    self._done(str(hash_pieces(self._head, self.params).cid))
                    self._head = []
                    return
            elif self.size <= INLINE_MAX or len(self._head) < 2:
                return
            self._stream = StreamImport.hashing(self.params, HASH_QUEUE)
            head, self._head = self._head, []
            for piece in head:
                if not self._stream.offer(piece):
                    self.stop_hashing()
                    return
        elif not self._stream.offer(data):
            self.stop_hashing()
            return
        if self._next >= self.size:
            stream, self._stream = self._stream, None
            threading.Thread(target=self._finish, args=(stream,), name="identity-finish",
                             daemon=True).start()

    def _finish(self, stream: StreamImport) -> None:
        imported = stream.finish()
        if imported is None:
            self._hashing = False
            self._finish_now()
            return
        self._done(str(imported.cid))

    def _done(self, cid: str) -> None:
        self._result = cid
        self._hashing = False  # nothing more to take
        self._finish_now()
        self._on_done(self, cid)

    def stop_hashing(self) -> None:
        """No identity from this read (a reader faster than hashing, a gap, or a copy that
        is checked byte by byte instead)."""
        if not self._hashing:
            return
        self._hashing = False
        self._head = []
        if self._stream is not None:
            self._stream.abandon()
            self._stream = None
        if self._result is None:
            self._finish_now()

    def _unordered(self) -> None:
        self._ordered = False
        self._ahead.clear()
        self.window = None
        self.stop_hashing()

    # ---------------------------------------------------------------- copies
    def keep_window(self) -> bool:
        """Keep the pieces read in order until a CopyCheck consumes them; only possible
        before the first read (False otherwise)."""
        if self._next or not self._ordered:
            return False
        self.window = deque()
        return True

    def matches(self, offset: int, data: bytes) -> bool:
        """Whether ``data`` equals what was read at ``offset`` (from the window), dropping
        the pieces that end at or before ``offset``."""
        window = self.window
        if window is None:
            return False
        while window and window[0][0] + len(window[0][1]) <= offset:
            self._window_bytes -= len(window.popleft()[1])
        end, parts, pos = offset + len(data), [], offset
        for start, piece in window:
            if start > pos or pos >= end:
                break
            parts.append(piece[pos - start:min(end - start, len(piece))])
            pos = start + min(end - start, len(piece))
        if pos < end:
            return False
        got = parts[0] if len(parts) == 1 else b"".join(parts)
        return got == data

    def close(self, now: float) -> None:
        """The handle is released: a read that did not reach the end leaves no identity
        (an empty file, never read, has the empty file's)."""
        self.closed_at = now
        if self._ahead:  # reads past a gap that was never filled
            self._unordered()
        if self._finished:
            return
        if self.size == 0 and self._hashing:
            self._done(str(hash_pieces([], self.params).cid))
        elif self._next < self.size:
            self.stop_hashing()


__all__ = ["ReadTracker", "INLINE_MAX"]
