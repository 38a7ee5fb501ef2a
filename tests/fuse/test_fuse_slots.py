"""fuse_slots.py and its two users without a live session: when pyfuse3 or libfuse does
not look as expected nothing is written, one line is logged, and the mount goes on
without the extra (cp spliced by the kernel; read-only closes flushed). The noflush
callback marks read-only opens only and always hands the open to pyfuse3. The working
paths are shown on real mounts (test_bridge_mount.py, test_mfs_mount.py)."""

from __future__ import annotations

import ctypes
import logging
import os

import pytest

from mcpfs import fuse_copy_range, fuse_noflush, fuse_slots


async def never(*_args):  # a handler install must not call
    raise AssertionError("called")


INSTALLS = {
    "copy_file_range": (lambda: fuse_copy_range.install(never), "spliced"),
    "noflush": (fuse_noflush.install, "closes are flushed"),
}


@pytest.fixture(params=sorted(INSTALLS))
def install(request, monkeypatch):
    pytest.importorskip("pyfuse3")
    monkeypatch.setattr(fuse_slots, "_state", {})
    return INSTALLS[request.param]


def test_before_pyfuse3_init_it_is_refused_and_logged(install, caplog):
    call, said = install
    with caplog.at_level(logging.INFO, logger="mcpfs.fuse"):
        assert call() is False
    # pyfuse3 fills its operations in init(): nothing to find a session's copy by yet
    assert "not as expected" in caplog.text and said in caplog.text


def test_a_stripped_pyfuse3_is_refused(install, monkeypatch, caplog):
    monkeypatch.setattr(fuse_slots, "_symbols", lambda path: {})
    with caplog.at_level(logging.INFO, logger="mcpfs.fuse"):
        assert install[0]() is False
    assert "stripped" in caplog.text


def test_other_libfuse_layout_is_refused(install, monkeypatch, caplog):
    real = fuse_slots._symbols
    monkeypatch.setattr(fuse_slots, "_symbols", lambda path: {
        k: (v[0], v[1] + 8 if k == fuse_slots.OPS_SYMBOL else v[1])
        for k, v in real(path).items()})
    with caplog.at_level(logging.INFO, logger="mcpfs.fuse"):
        assert install[0]() is False
    assert "not 352" in caplog.text


class Version:
    """Stands in for libfuse, saying only its version."""

    def __init__(self, text: bytes) -> None:
        self.fuse_pkgversion = lambda: text


@pytest.mark.parametrize("text,usable", [
    (b"3.10.5", True), (b"3.14.0", True), (b"3.14", True), (b"3.14.1", False),
    (b"3.16.2", False), (b"3.17.0", True), (b"3.18.1", True), (b"x.y", False)])
def test_noflush_is_refused_where_libfuse_moved_the_bit(text, usable):
    if usable:
        fuse_noflush._check_layout(Version(text))
    else:
        with pytest.raises(LookupError):
            fuse_noflush._check_layout(Version(text))


@pytest.mark.parametrize("flags,marked", [
    (os.O_RDONLY, True), (os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, True),
    (os.O_RDONLY | os.O_TRUNC, False), (os.O_WRONLY, False), (os.O_RDWR, False),
    (os.O_WRONLY | os.O_APPEND, False)])
def test_the_open_callback_marks_read_only_opens_and_hands_each_to_pyfuse3(
        monkeypatch, flags, marked):
    seen = []
    monkeypatch.setattr(fuse_noflush, "_state", {
        "pyfuse3_open": lambda req, ino, fi: seen.append((req, ino, fi.contents.bits))})
    info = fuse_slots.FileInfo(flags=flags, bits=0b100)  # keep_cache already set
    fuse_noflush._on_open(3, 42, ctypes.pointer(info))
    expect = 0b100 | (fuse_noflush.NOFLUSH_BIT if marked else 0)
    assert seen == [(3, 42, expect)]
