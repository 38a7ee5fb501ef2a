"""quick_lock.QuickLock: a free lock is taken without a scheduler round; otherwise it is a
trio.Lock (mutual exclusion, first come first served)."""

from __future__ import annotations

import trio

from mcpfs.quick_lock import QuickLock


class _Steps(trio.abc.Instrument):
    """Counts the times trio resumes one task (each return from the scheduler)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def test_a_free_lock_is_taken_without_a_scheduler_round():
    lock = QuickLock()
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        async with lock:  # a trio.Lock checkpoints here: the task is resumed once more
            assert lock.locked()
        assert steps.count == 0 and not lock.locked()
        await trio.sleep(0)
        assert steps.count == 1  # (the instrument does see a real checkpoint)
    finally:
        trio.lowlevel.remove_instrument(steps)


async def test_a_held_lock_is_waited_for_in_arrival_order():
    lock = QuickLock()
    order: list[str] = []
    inside = 0

    async def user(name: str, hold: float) -> None:
        nonlocal inside
        async with lock:
            inside += 1
            assert inside == 1  # never two holders
            order.append(name)
            await trio.sleep(hold)
            inside -= 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(user, "first", 0.05)
        await trio.sleep(0.01)
        nursery.start_soon(user, "second", 0)
        await trio.sleep(0.01)
        nursery.start_soon(user, "third", 0)
        await trio.sleep(0.01)
    assert order == ["first", "second", "third"]


async def test_a_lock_released_to_a_waiter_is_not_taken_by_a_newcomer():
    lock = QuickLock()
    order: list[str] = []

    async def waiter() -> None:
        async with lock:
            order.append("waiter")
    async with trio.open_nursery() as nursery:
        await lock.__aenter__()
        nursery.start_soon(waiter)
        await trio.sleep(0.01)  # the waiter is parked on the lock
        await lock.__aexit__(None, None, None)  # handed to the waiter (trio's fairness)
        async with lock:  # the newcomer waits its turn instead of taking it at once
            order.append("newcomer")
    assert order == ["waiter", "newcomer"]
