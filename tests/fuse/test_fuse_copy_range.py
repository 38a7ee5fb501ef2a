"""fuse_copy_range.py without a session: every request is answered exactly once, an error
as its errno. Refusals are in test_fuse_slots.py; the working path is shown on real mounts
(test_bridge_mount.py: one request for a 256 MiB cp)."""

from __future__ import annotations

import errno

import pytest
import trio

from mcpfs import fuse_copy_range as fcr


async def never(*_args):  # a handler install must not call
    raise AssertionError("called")


class Replies:
    """Stands in for libfuse's reply functions: records what each request got."""

    def __init__(self) -> None:
        self.got: list[tuple] = []

    def fuse_reply_write(self, req, count):
        self.got.append((req, "write", count))

    def fuse_reply_err(self, req, code):
        self.got.append((req, "err", code))


@pytest.mark.parametrize("outcome,expected", [
    (123, ("write", 123)),
    (OSError(errno.ENOSPC, "full"), ("err", errno.ENOSPC)),
    (RuntimeError("bug"), ("err", errno.EIO)),
])
async def test_each_request_is_answered_once(monkeypatch, outcome, expected):
    replies = Replies()

    async def handler(*args):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    monkeypatch.setattr(fcr, "_state", {"libfuse": replies, "handler": handler})
    await fcr._answer(7, 1, 0, 2, 0, 4096, 0)
    assert replies.got == [(7, *expected)]


async def test_a_request_outside_serving_is_enosys(monkeypatch):
    replies = Replies()
    monkeypatch.setattr(fcr, "_state", {"libfuse": replies, "handler": never})
    fcr._on_request(9, 1, 0, None, 2, 0, None, 10, 0)
    assert replies.got == [(9, "err", errno.ENOSYS)]
    async with fcr.serving():
        assert "nursery" in fcr._state
    assert "nursery" not in fcr._state
    await trio.sleep(0)
