"""fuse_copy_range.py without a session: when pyfuse3 does not look as expected nothing is
written and the mount goes on without copy_file_range (cp is then spliced by the kernel);
every request is answered exactly once, an error as its errno. The working path is shown
on real mounts (test_bridge_mount.py: one request for a 256 MiB cp)."""

from __future__ import annotations

import errno
import logging

import pytest
import trio

from mcpfs import fuse_copy_range as fcr


async def never(*_args):  # a handler install must not call
    raise AssertionError("called")


def test_before_pyfuse3_init_it_is_refused_and_logged(monkeypatch, caplog):
    pytest.importorskip("pyfuse3")
    monkeypatch.setattr(fcr, "_state", {})
    with caplog.at_level(logging.INFO, logger="mcpfs.fuse"):
        assert fcr.install(never) is False
    # pyfuse3 fills its operations in init(): nothing to find a session's copy by yet
    assert "not as expected" in caplog.text and "spliced" in caplog.text


def test_a_stripped_pyfuse3_is_refused(monkeypatch, caplog):
    pytest.importorskip("pyfuse3")
    monkeypatch.setattr(fcr, "_state", {})
    monkeypatch.setattr(fcr, "_symbols", lambda path: {})
    with caplog.at_level(logging.INFO, logger="mcpfs.fuse"):
        assert fcr.install(never) is False
    assert "stripped" in caplog.text


def test_other_libfuse_layout_is_refused(monkeypatch, caplog):
    pytest.importorskip("pyfuse3")
    monkeypatch.setattr(fcr, "_state", {})
    real = fcr._symbols
    monkeypatch.setattr(fcr, "_symbols", lambda path: {
        k: (v[0], v[1] + 8 if k == fcr.OPS_SYMBOL else v[1]) for k, v in real(path).items()})
    with caplog.at_level(logging.INFO, logger="mcpfs.fuse"):
        assert fcr.install(never) is False
    assert "not 352" in caplog.text


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
