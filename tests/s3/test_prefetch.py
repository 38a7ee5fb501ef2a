"""mounts/prefetch.py against a fake range source (no server): window growth, requests in
flight, random reads, bounded memory, errors, cancellation."""

from __future__ import annotations

import errno

import pytest
import trio

from mcpfs.errors import McpfsError
from mcpfs.mounts.prefetch import (KEEP_BEHIND, MAX_CHUNK, MAX_WINDOW, MIN_WINDOW,
                                   MemoryBudget, Prefetcher)

MiB = 1 << 20
PERIOD = bytes(range(251)) * (MAX_CHUNK // 251 + 2)


def content(start: int, end: int) -> bytes:
    """Bytes [start, end) of a virtual object whose byte i is i % 251 (any size)."""
    off = start % 251
    return PERIOD[off:off + end - start]


class FakeSource:
    """Serves the virtual object after ``delay`` seconds; records every request."""

    def __init__(self, size: int, delay: float = 0.002) -> None:
        self.size = size
        self.delay = delay
        self.requests: list[tuple[int, int]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.fail_at: int | None = None
        self.cancelled = 0

    async def __call__(self, start: int, end: int) -> bytes:
        self.requests.append((start, end))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await trio.sleep(self.delay)
            if self.fail_at is not None and start <= self.fail_at < end:
                raise McpfsError("injected", errno=errno.EIO)
            return content(start, min(end, self.size))
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1


async def read_all(p: Prefetcher, size: int, piece: int = 128 * 1024) -> int:
    offset = 0
    while True:
        data = await p.read(offset, piece)
        if not data:
            return offset
        assert data == content(offset, offset + len(data))
        offset += len(data)
        assert offset <= size


async def test_sequential_window_doubles_to_max_with_requests_in_flight():
    size = 512 * MiB
    src = FakeSource(size)
    p = Prefetcher(src, size, budget=MemoryBudget(1 << 40))
    assert await read_all(p, size) == size
    sizes = [e - s for s, e in src.requests]
    # the first request is only what was asked (the time to first byte); the window's
    # read-ahead follows it at once, concurrently (so either may reach the source first)
    assert sorted(src.requests)[:2] == [(0, 128 * 1024), (128 * 1024, 128 * 1024 + MIN_WINDOW)]
    assert max(sizes) == MAX_CHUNK  # 64 MiB window / 4 requests
    assert src.max_inflight >= 3
    assert p.window == MAX_WINDOW
    assert p.fetched == size  # nothing fetched twice or past the end
    assert p.peak_buffered <= MAX_WINDOW + 2 * MAX_CHUNK + KEEP_BEHIND
    await p.close()


async def test_ten_gib_object_streams_with_bounded_memory():
    size = 10 << 30
    src = FakeSource(size, delay=0)
    budget = MemoryBudget(1 << 40)
    p = Prefetcher(src, size, max_window=8 * MiB, budget=budget)
    offset = 0
    while offset < 256 * MiB:  # the head of the object, 1 MiB at a time
        data = await p.read(offset, MiB)
        assert len(data) == MiB and data[:251] == content(offset, offset + 251)
        offset += MiB
    assert p.peak_buffered <= 8 * MiB + 2 * 2 * MiB + KEEP_BEHIND
    assert p.fetched <= 256 * MiB + 8 * MiB + 2 * MiB
    tail = await p.read(size - 100, 4096)  # a jump to the end: only what is asked
    assert tail == content(size - 100, size)
    assert src.requests[-1] == (size - 100, size)
    await p.close()
    assert p.buffered == 0 and budget.used == 0


async def test_random_reads_fetch_only_what_is_asked():
    size = 100 * MiB
    src = FakeSource(size)
    p = Prefetcher(src, size)
    for off in (50 * MiB, 3 * MiB, 77 * MiB + 5, 10):
        assert await p.read(off, 4096) == content(off, off + 4096)
    assert src.requests == [(50 * MiB, 50 * MiB + 4096), (3 * MiB, 3 * MiB + 4096),
                            (77 * MiB + 5, 77 * MiB + 5 + 4096), (10, 10 + 4096)]
    assert p.window == 0
    # a read continuing the last one turns read-ahead on again
    await p.read(10 + 4096, 4096)
    assert p.window == MIN_WINDOW and p.fetched > 5 * 4096
    await p.close()


async def test_reordered_parallel_reads_stay_sequential():
    size = 64 * MiB
    src = FakeSource(size)
    p = Prefetcher(src, size)
    piece = 128 * 1024
    results: dict[int, bytes] = {}

    async def one(off: int) -> None:
        results[off] = await p.read(off, piece)
    for base in range(0, 16 * MiB, 8 * piece):
        async with trio.open_nursery() as n:  # kernel-style: a batch, out of order
            for off in reversed(range(base, base + 8 * piece, piece)):
                n.start_soon(one, off)
    assert all(results[o] == content(o, o + piece) for o in results)
    assert p.window > MIN_WINDOW
    assert all(e - s >= 4096 * 32 for s, e in src.requests)  # no piece-sized requests
    await p.close()


async def test_fetch_error_raised_then_retried():
    size = 8 * MiB
    src = FakeSource(size)
    src.fail_at = 100
    p = Prefetcher(src, size)
    with pytest.raises(McpfsError) as exc:
        await p.read(0, 4096)
    assert exc.value.errno == errno.EIO
    src.fail_at = None
    assert await p.read(0, 4096) == content(0, 4096)
    await p.close()


async def test_close_cancels_inflight_and_frees_budget():
    size = 256 * MiB
    src = FakeSource(size, delay=0.05)
    budget = MemoryBudget(1 << 40)
    p = Prefetcher(src, size, budget=budget)
    for off in range(0, 4 * MiB, MiB):
        await p.read(off, MiB)
    assert p.buffered > 0 and budget.used > 0
    await p.close()
    await trio.sleep(0.01)
    assert src.cancelled >= 1 and src.inflight == 0
    assert budget.used == 0
    with pytest.raises(McpfsError) as exc:
        await p.read(0, 1)
    assert exc.value.errno == errno.EBADF


async def test_full_budget_disables_read_ahead_but_not_reads():
    size = 32 * MiB
    src = FakeSource(size)
    budget = MemoryBudget(0)
    p = Prefetcher(src, size, budget=budget)
    assert await read_all(p, size, piece=MiB) == size
    assert all(e <= s + MiB for s, e in src.requests)  # demanded chunks only
    await p.close()
    assert budget.used == 0


async def test_short_object_and_reads_past_end():
    src = FakeSource(1000)
    p = Prefetcher(src, 1000)
    assert await p.read(990, 100) == content(990, 1000)
    assert await p.read(1000, 10) == b""
    assert await p.read(5000, 10) == b""
    # the source returns less than the size promised (object shrank): short read, no hang
    short = Prefetcher(lambda s, e: src(s, min(e, 500)), 1000)
    assert await short.read(0, 1000) == content(0, 500)
    await p.close()
    await short.close()


async def test_given_nursery_runs_the_fetches():
    src = FakeSource(4 * MiB)
    async with trio.open_nursery() as nursery:
        p = Prefetcher(src, 4 * MiB, nursery=nursery)
        assert await read_all(p, 4 * MiB) == 4 * MiB
        await p.close()


async def test_on_cache_reports_window_hits_and_misses():
    size = 8 * MiB
    src = FakeSource(size)
    seen: list[bool] = []
    p = Prefetcher(src, size, budget=MemoryBudget(1 << 40), on_cache=seen.append)
    piece = 128 * 1024
    assert await read_all(p, size, piece) == size
    reads = size // piece + 1  # the last read (at the end) asks nothing: b"", not counted
    assert len(seen) == reads - 1
    assert seen[0] is False  # the first read starts the first request
    assert seen.count(False) == 1  # every later read was inside the read-ahead window
    assert await p.read(0, 4096) == content(0, 4096)  # behind KEEP_BEHIND: dropped, fetched
    assert seen[-1] is False
    await p.close()


async def test_seeded_bytes_are_read_without_a_request_and_start_no_window():
    src = FakeSource(8 * MiB)
    p = Prefetcher(src, src.size, budget=MemoryBudget())
    p.seed(content(0, 64 * 1024))  # what an open's GET brought
    assert await p.read(17, 1000) == content(17, 1017)
    assert src.requests == [] and p.window == 0  # a read inside them is not sequential
    assert await p.read(5 * MiB, 10) == content(5 * MiB, 5 * MiB + 10)
    assert src.requests == [(5 * MiB, 5 * MiB + 10)]
    await p.close()

    src = FakeSource(8 * MiB)
    p = Prefetcher(src, src.size, budget=MemoryBudget())
    p.seed(content(0, 64 * 1024))
    assert await read_all(p, src.size) == src.size  # from the start: read-ahead as usual
    assert min(start for start, _ in src.requests) == 64 * 1024 and p.window > 0
    assert p.fetched == src.size and p.requests == len(src.requests) + 1
    await p.close()
