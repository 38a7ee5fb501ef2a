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
