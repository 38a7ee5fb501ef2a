"""One prefetcher for ranged reads (``/s3``, later ``/hf`` and gateways).

A :class:`Prefetcher` serves ``read(offset, size)`` of one remote object of known size from
a *range source* (``async fetch(start, end) -> bytes``, ``end`` exclusive):

- Sequential reads (a read starting where the last one ended, or inside data already
  fetched or being fetched: the kernel issues read-ahead out of order) grow a read-ahead
  window: ``MIN_WINDOW`` (1 MiB), doubling on each sequential read up to ``max_window``
  (64 MiB). The window ahead of the read is covered by chunks of ``window / MAX_INFLIGHT``
  bytes (1..16 MiB), so several requests are in flight at once. A reader's very first
  request is only the range asked (its answer is the time to first byte); the window's
  read-ahead is requested right after it.
- A random read (anywhere else) resets the window: only the asked range is fetched, and
  chunks that do not overlap it are cancelled and dropped.
- Chunks entirely behind the reader (more than ``KEEP_BEHIND`` bytes) are dropped, so the
  memory of one reader stays below ``max_window + 2 * chunk + KEEP_BEHIND`` (the chunk
  being read, the window ahead rounded up to whole chunks): a 10 GiB object is streamed,
  never held. Read-ahead also needs room in a :class:`MemoryBudget` shared by all readers
  of the process (default 512 MiB); when it is full only demanded bytes are fetched.

Cache statistics: with ``on_cache``, each read reports a hit (``on_cache(True)``) when the
range it asks was already fetched or being fetched (read-ahead served it), else a miss (a
request was started for it). The callback runs in the trio thread and must be cheap.

Resources: each chunk is fetched by its own task, spawned in ``nursery`` if one is given,
else as a trio system task; every task has its own CancelScope, cancelled when its chunk is
dropped or the prefetcher is closed. A fetch error is stored in its chunk and raised by the
reads that need it (the chunk is then dropped, so a later read retries).

Concurrency: all state is touched from the trio thread only, and never across an ``await``
in a way that assumes it unchanged: ``read`` re-looks chunks up after each wait. Several
reads of one prefetcher may run at once (FUSE issues parallel reads); they share chunks.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ..errors import McpfsError

MiB: Final = 1 << 20
MIN_WINDOW: Final = 1 * MiB  # first read-ahead of a sequential reader
MAX_WINDOW: Final = 64 * MiB  # read-ahead never grows past this
MAX_INFLIGHT: Final = 4  # the window is split into this many requests
MAX_CHUNK: Final = 16 * MiB  # largest single range request
KEEP_BEHIND: Final = 1 * MiB  # fetched bytes kept behind the read position (reordered reads)
DEFAULT_BUDGET_BYTES: Final = 512 * MiB  # read-ahead memory of all readers together

RangeSource = Callable[[int, int], Awaitable[bytes]]


class MemoryBudget:
    """A byte counter shared by prefetchers: read-ahead takes from it or is skipped;
    demanded bytes are always fetched (counted, possibly over the limit). Trio thread only."""

    def __init__(self, limit: int = DEFAULT_BUDGET_BYTES) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, n: int) -> bool:
        return self.used + n <= self.limit

    def try_take(self, n: int) -> bool:
        if not self.fits(n):
            return False
        self.used += n
        return True

    def take(self, n: int) -> None:
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


DEFAULT_BUDGET = MemoryBudget()


class _Chunk:
    __slots__ = ("start", "end", "data", "error", "done", "scope")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.data: bytes | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()
        self.scope = trio.CancelScope()


class Prefetcher:
    """Reads of one object of ``size`` bytes through ``fetch``; see the module docstring."""

    def __init__(self, fetch: RangeSource, size: int, *, nursery: Any = None,
                 max_window: int = MAX_WINDOW, budget: MemoryBudget | None = None,
                 name: str = "", on_cache: Callable[[bool], None] | None = None) -> None:
        self.fetch = fetch
        self.on_cache = on_cache
        self.size = size
        self.nursery = nursery
        self.max_window = max_window
        self.budget = budget or DEFAULT_BUDGET
        self.name = name
        self.window = 0  # current read-ahead in bytes (0: random mode)
        self._chunks: list[_Chunk] = []  # sorted by start, non-overlapping
        self._next = 0  # where a sequential read would start
        self._seeded: _Chunk | None = None  # the chunk seed() made
        self._closed = False
        # observability (tests, stats): bytes requested from the source, peak buffered
        self.fetched = 0
        self.requests = 0
        self.peak_buffered = 0

    # ---------------------------------------------------------------- chunk bookkeeping
    @property
    def buffered(self) -> int:
        """Bytes held or being fetched by this prefetcher."""
        return sum(c.end - c.start for c in self._chunks)

    def _find(self, offset: int) -> _Chunk | None:
        i = bisect.bisect_right([c.start for c in self._chunks], offset) - 1
        if i >= 0 and self._chunks[i].start <= offset < self._chunks[i].end:
            return self._chunks[i]
        return None

    def _drop(self, chunk: _Chunk) -> None:
        chunk.scope.cancel()
        self._chunks.remove(chunk)
        self.budget.give(chunk.end - chunk.start)

    def _spawn(self, start: int, end: int) -> _Chunk:
        chunk = _Chunk(start, end)
        bisect.insort(self._chunks, chunk, key=lambda c: c.start)
        self.requests += 1
        self.fetched += end - start
        self.peak_buffered = max(self.peak_buffered, self.buffered)
        if self.nursery is not None:
            self.nursery.start_soon(self._run, chunk)
        else:
            trio.lowlevel.spawn_system_task(self._run, chunk)
        return chunk

    async def _run(self, chunk: _Chunk) -> None:
        """Fetch one chunk; never raises (errors are kept in the chunk)."""
        with chunk.scope:
            try:
                chunk.data = await self.fetch(chunk.start, chunk.end)
            except Exception as exc:  # noqa: BLE001 - handed to the reads that need it
                chunk.error = exc
        chunk.done.set()  # cancelled: neither data nor error (readers fetch again)

    def _chunk_size(self) -> int:
        return max(MIN_WINDOW, min(MAX_CHUNK, self.window // MAX_INFLIGHT))

    def _cover(self, start: int, end: int, demanded: bool) -> None:
        """Spawn chunks so that ``[start, end)`` is covered. Demanded ranges always are;
        read-ahead only while the budget allows."""
        pos = start
        step = self._chunk_size() if self.window else end - start
        while pos < end:
            hit = self._find(pos)
            if hit is not None:
                pos = hit.end
                continue
            i = bisect.bisect_right([c.start for c in self._chunks], pos)
            gap_end = self._chunks[i].start if i < len(self._chunks) else self.size
            if demanded:  # random: exactly what is asked; sequential: at least a chunk
                stop = min(gap_end, self.size, end, pos + MAX_CHUNK)
                # a whole chunk when the budget has room for it; not for the reader's very
                # first request, whose answer is the time to first byte (the read-ahead
                # covers the rest of the window, concurrently)
                if self.window and self.requests:
                    whole = min(gap_end, self.size, max(end, pos + step), pos + MAX_CHUNK)
                    if self.budget.fits(whole - pos):
                        stop = whole
                self.budget.take(stop - pos)
            else:
                stop = min(gap_end, self.size, pos + step)
                if not self.budget.try_take(stop - pos):
                    return
            self._spawn(pos, stop)
            pos = stop

    def seed(self, data: bytes) -> None:
        """Take ``data``, the object's first bytes fetched already (with the open), as a
        finished chunk: reads inside it need no request. Counted as one request."""
        if not data or self._chunks:
            return
        chunk = _Chunk(0, min(len(data), self.size))
        chunk.data = data[:chunk.end]
        chunk.done.set()
        self.budget.take(chunk.end)
        self._chunks.append(chunk)
        self._seeded = chunk
        self.requests += 1
        self.fetched += chunk.end
        self.peak_buffered = max(self.peak_buffered, chunk.end)

    # ---------------------------------------------------------------- reading
    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (b"" at or past the end). Raises the source's
        error (McpfsError) for a range that failed to fetch."""
        if self._closed:
            raise McpfsError(f"{self.name}: reader closed", errno=errno.EBADF)
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        hit = self._find(offset)  # the open's bytes alone are no sign of a sequential reader
        sequential = offset == self._next or (hit is not None and hit is not self._seeded)
        if sequential:
            self.window = min(self.max_window, max(MIN_WINDOW, self.window * 2))
        else:
            self.window = 0
            for chunk in [c for c in self._chunks if c.end <= offset or c.start >= end]:
                self._drop(chunk)
        self._next = max(self._next, end) if sequential else end
        for chunk in [c for c in self._chunks if c.end <= offset - KEEP_BEHIND]:
            self._drop(chunk)
        requests = self.requests
        self._cover(offset, end, demanded=True)
        if self.on_cache is not None:
            self.on_cache(self.requests == requests)  # nothing new to fetch: a window hit
        if self.window:
            self._cover(end, min(self.size, end + self.window), demanded=False)
        self.peak_buffered = max(self.peak_buffered, self.buffered)
        return await self._gather(offset, end)

    async def _gather(self, offset: int, end: int) -> bytes:
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            chunk = self._find(pos)
            if chunk is None:  # dropped by a concurrent random read: fetch it again
                stop = min(end, pos + MAX_CHUNK)
                self.budget.take(stop - pos)
                chunk = self._spawn(pos, stop)
            await chunk.done.wait()
            if self._closed:
                raise McpfsError(f"{self.name}: reader closed", errno=errno.EBADF)
            if chunk.error is not None:
                if chunk in self._chunks:
                    self._drop(chunk)
                raise chunk.error
            if chunk.data is None:  # cancelled (dropped meanwhile): look again
                continue
            data = chunk.data or b""
            piece = data[pos - chunk.start:end - chunk.start]
            parts.append(piece)
            pos += len(piece)
            if pos < min(end, chunk.end):  # the object is shorter than its size said
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def close(self) -> None:
        """Cancel every fetch and free every chunk (idempotent)."""
        self._closed = True
        for chunk in list(self._chunks):
            self._drop(chunk)


__all__ = ["Prefetcher", "MemoryBudget", "DEFAULT_BUDGET", "RangeSource", "MIN_WINDOW",
           "MAX_WINDOW"]
