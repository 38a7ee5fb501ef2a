"""A trio lock whose uncontended acquire does not pass through the scheduler.

``async with trio.Lock()`` is a checkpoint even when the lock is free: the task goes back to
the run queue and trio runs one scheduling round (an ``epoll_wait`` and the loop's
bookkeeping) before it continues. A small file's close() in /mfs took three such rounds
(the open file's lock for the write and for the commit, MFS's mutation lock), each a few
tens of microseconds of the trio thread that serves FUSE.

:class:`QuickLock` takes a free lock at once (``acquire_nowait``) and waits as a trio.Lock
does when it is held or others wait for it (trio's fairness: a free lock with waiters is not
taken). Cancellation: an uncontended acquire is not a cancellation point; a contended one
is, as before. Same owner rules as trio.Lock (released by the task that took it).
"""

from __future__ import annotations

import trio


class QuickLock:
    """``async with`` like trio.Lock; see the module docstring."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


__all__ = ["QuickLock"]
