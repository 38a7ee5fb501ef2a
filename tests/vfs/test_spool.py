"""vfs/spool.py: the length a spool knows without asking the file system."""

from __future__ import annotations

import os

from mcpfs.vfs import spool as spool_module
from mcpfs.vfs.spool import Spool


async def test_a_materialized_spool_knows_its_size_until_a_change(tmp_path, monkeypatch):
    """A write-back commit asks the size of a spool just written from memory: known, no
    fstat in a worker thread. Any later write, truncate or replace forgets it, and the
    size is the file's again."""
    fstats = []
    real = os.fstat
    monkeypatch.setattr(spool_module.os, "fstat",
                        lambda fd: fstats.append(fd) or real(fd))
    spool = await Spool.create(tmp_path, memory=True)
    await spool.write(0, b"abc")
    await spool.materialize()
    assert await spool.size() == 3 and fstats == []
    await spool.write(3, b"de", then=lambda data: None)  # (on the file)
    assert await spool.size() == 5 and len(fstats) == 1
    await spool.truncate(1)
    assert await spool.size() == 1
    spool.replace_sync([])
    assert await spool.size() == 0 and len(fstats) == 3
    await spool.close()


async def test_a_small_spool_keeps_its_bytes_until_a_change(tmp_path, monkeypatch):
    """A small memory spool written to its file keeps its bytes (a write-back commit hashes
    and uploads them with no file read); any later write, truncate or replace drops them,
    so ``content()`` is never stale; a larger one keeps nothing."""
    spool = await Spool.create(tmp_path, memory=True)
    await spool.write(0, b"abc")
    assert spool.content() == b"abc"  # (in memory)
    await spool.materialize()
    monkeypatch.setattr(spool_module.os, "pread", None)  # not read from the file
    assert spool.content() == b"abc"
    monkeypatch.undo()
    await spool.write(1, b"X", then=lambda data: None)  # (on the file)
    assert spool.content() is None and await spool.read(0, 9) == b"aXc"
    await spool.close()
    for change in ("truncate", "replace"):
        spool = await Spool.create(tmp_path, memory=True)
        await spool.write(0, b"abc")
        await spool.materialize()
        if change == "truncate":
            await spool.truncate(1)
        else:
            spool.replace_sync([b"new"])
        assert spool.content() is None, change
        await spool.close()
    big = await Spool.create(tmp_path, memory=True)
    await big.write(0, b"b" * (spool_module.RETAIN_MAX + 1))
    await big.materialize()
    assert big.content() is None
    await big.close()
