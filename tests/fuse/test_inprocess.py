"""The daemon's nursery in-process: the control hook starts before READY and is cancelled
at shutdown; the mount is served by the same trio loop the test runs on."""

from __future__ import annotations

import os
import signal

import trio

from mcpfs import daemon

from .conftest import is_mounted


async def test_control_hook_runs_in_the_daemon_nursery(mcpfs_home, tmp_path, monkeypatch):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    events: list[str] = []
    sent: list[str] = []
    monkeypatch.setattr(daemon, "sd_notify", lambda state, env=None: sent.append(state))

    async def control(repo, *, stats=None, task_status=trio.TASK_STATUS_IGNORED, **_):
        events.append(f"started {type(repo).__name__}")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            events.append("cancelled")

    async def drive():
        while not any(s.startswith("READY=1") for s in sent):
            await trio.sleep(0.01)
        names = await trio.to_thread.run_sync(os.listdir, mnt)
        events.append(f"listed {sorted(names)}")
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own signal watcher unmounts

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive)
        await daemon.serve(str(mnt), control=control)
    assert events == ["started Repo", "listed ['ipfs', 'mfs']", "cancelled"]
    assert sent[0].startswith("READY=1") and sent[-1] == "STOPPING=1"
    assert not is_mounted(mnt)
