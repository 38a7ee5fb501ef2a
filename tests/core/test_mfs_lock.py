"""One process at a time changes a repo's MFS (mfs_lock): a second process gets EBUSY
naming the holder, at once after LOCK_WAIT, and never touches the holder's logs."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest

from mcpfs.backends.ipfs import mfs_lock
from mcpfs.backends.ipfs.node import Repo
from mcpfs.errors import McpfsError

from .test_mfs_pending import deferred, write_files

HOLDER = textwrap.dedent("""
    import sys, trio
    from mcpfs.backends.ipfs.node import Repo
    async def main():
        repo = Repo(sys.argv[1])
        async with trio.open_nursery() as nursery:
            await nursery.start(repo.mfs.run_flusher, 3600.0)
            await repo.mfs.write("/held/f", b"kept", create=True, parents=True)
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin
            nursery.cancel_scope.cancel()
    trio.run(main)
""")


async def test_a_second_process_gets_ebusy_and_leaves_the_logs_alone(tmp_path, monkeypatch):
    where = tmp_path / "repo"
    Repo(where).mfs  # created before the holder starts
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(where)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "ready\n"
        blocks_log = where / "mfs-root.blocks"
        assert blocks_log.exists()  # the holder's pending nodes
        monkeypatch.setattr(mfs_lock, "LOCK_WAIT", 0.2)
        with pytest.raises(McpfsError) as exc:
            Repo(where).mfs
        assert exc.value.errno == errno.EBUSY
        assert f"pid {holder.pid}" in str(exc.value) and "\n" not in str(exc.value)
        assert blocks_log.exists()  # not replayed and removed under the holder
        holder.kill()  # kill -9: the lock goes with the process
        holder.wait()
        again = Repo(where)
        assert await again.mfs.read("/held/f") == b"kept"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


async def test_without_a_flusher_the_lock_is_held_only_around_changes(tmp_path):
    """A CLI-like process (no flusher) lets another take the lock between its changes;
    in one process a second MFS (a restart simulated) is never refused."""
    where = tmp_path / "repo"
    repo = Repo(where)
    await write_files(repo.mfs, 3)
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
         "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(where / "mfs-root.lock")])
    assert probe.returncode == 0  # free between changes
    async with deferred(where) as (_, mfs):
        await write_files(mfs, 2, start=3)
        assert len(await Repo(where).mfs.ls("/d")) == 5  # same process: not refused
