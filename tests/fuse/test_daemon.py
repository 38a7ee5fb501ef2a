"""The daemon's life: sd_notify, signals, `mcpfs mount/unmount`, systemd unit, crashes,
a full disk."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcpfs.backends.ipfs.node import Repo
from mcpfs.backends.ipfs.pins import walk_dag
from mcpfs.cli.mount import REPO_UNIT_EXEC, unit_text
from mcpfs.config import paths
from mcpfs.daemon import check_mountpoint, sd_notify
from mcpfs.errors import McpfsError
from tests.conftest import pattern_bytes

from .conftest import is_mounted, mcpfs, run

ROOT = Path(__file__).resolve().parents[2]


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    return sock


def test_sd_notify_on_a_real_datagram_socket(tmp_path):
    sock = _notify_socket(tmp_path / "n.sock")
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
    assert sock.recv(100) == b"READY=1"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"mcpfs-test-{os.getpid()}"
    abstract.bind("\0" + name)
    assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
    assert abstract.recv(100) == b"STOPPING=1"
    assert not sd_notify("READY=1", {})
    sock.close()
    abstract.close()


def test_ready_then_stopping_and_clean_unmount_on_sigterm(mcpfs_home, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock = _notify_socket(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    proc = subprocess.Popen([sys.executable, "-m", "mcpfs.daemon", str(mnt)], env=env,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert sock.recv(1000).split(b"\n")[0] == b"READY=1"
        assert is_mounted(mnt) and sorted(os.listdir(mnt)) == ["ipfs", "mfs"]
        (mnt / "mfs" / "kept").write_bytes(b"kept")
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(1000) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
        assert not is_mounted(mnt)
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        sock.close()
    assert Repo(paths().repo_dir).mfs.tree.ls(Repo(paths().repo_dir).mfs.root(), "/")


def test_external_unmount_stops_the_daemon(daemon):
    mnt = daemon.start()
    run("fusermount3", "-u", str(mnt))
    assert daemon.proc.wait(timeout=20) == 0
    assert "file system was unmounted" in daemon.log_text()


def test_check_mountpoint_reasons(tmp_path, monkeypatch):
    with pytest.raises(McpfsError, match="does not exist"):
        check_mountpoint(str(tmp_path / "missing"))
    with pytest.raises(McpfsError, match="busy"):
        check_mountpoint("/proc")
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p != "/dev/fuse" and real_exists(p))
    with pytest.raises(McpfsError, match="/dev/fuse"):
        check_mountpoint(str(tmp_path))


@pytest.fixture
def cli_mnt(mcpfs_home, tmp_path):
    """A mount point for `mcpfs mount` (background); teardown unmounts, kills daemons."""
    mnt = tmp_path / "cli-mnt"
    mnt.mkdir()
    pids: list[int] = []
    yield mnt, pids
    if is_mounted(mnt):
        if subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    for pid in pids:
        _wait_gone(pid, kill=True)
    assert not is_mounted(mnt)


def _wait_gone(pid: int, timeout: float = 15, kill: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
            return True
        time.sleep(0.05)
    if kill:
        os.kill(pid, signal.SIGKILL)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_mount_command_background_busy_stale_unmount(cli_mnt, tmp_path):
    mnt, pids = cli_mnt
    missing = mcpfs("mount", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("Error: mount point") and \
        len(missing.stderr.strip().splitlines()) == 1
    done = mcpfs("mount", str(mnt))
    pids.append(int(re.search(r"pid (\d+)", done.stderr).group(1)))
    assert is_mounted(mnt) and sorted(os.listdir(mnt)) == ["ipfs", "mfs"]
    (mnt / "mfs" / "a").write_text("a")
    again = mcpfs("mount", str(mnt), check=False)
    assert again.returncode == 1 and "already mounted" in again.stderr
    os.kill(pids[0], signal.SIGKILL)  # leaves a stale mount behind
    assert _wait_gone(pids[0])
    with pytest.raises(OSError) as info:
        os.statvfs(mnt)
    assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    done = mcpfs("mount", str(mnt))
    pids.append(int(re.search(r"pid (\d+)", done.stderr).group(1)))
    assert "stale" in done.stderr
    assert (mnt / "mfs" / "a").read_text() == "a"
    mcpfs("unmount", str(mnt))
    assert _wait_gone(pids[1]) and not is_mounted(mnt)
    assert mcpfs("unmount", str(mnt), check=False).returncode == 1


def test_mount_on_a_foreign_mount_is_busy(cli_mnt):
    mnt, _ = cli_mnt
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        busy = mcpfs("mount", str(mnt), check=False)
        assert busy.returncode == 1 and "busy" in busy.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(["systemd-analyze", "--user", "verify", str(unit)], text=True,
                          capture_output=True, env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)))


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_unit_verifies_and_service_install(tmp_path, monkeypatch):
    repo_unit = ROOT / "systemd" / "mcpfs.service"
    assert repo_unit.read_text() == unit_text(REPO_UNIT_EXEC)
    text = repo_unit.read_text()
    assert "Type=notify" in text and "Restart=on-failure" in text
    result = _verify(repo_unit, tmp_path)
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = mcpfs("service", "install", str(tmp_path / "where"))
    unit = tmp_path / "config" / "systemd" / "user" / "mcpfs.service"
    assert out.stdout.strip() == str(unit) and (tmp_path / "where").is_dir()
    assert f"-m mcpfs.daemon {tmp_path / 'where'}" in unit.read_text()
    result = _verify(unit, tmp_path)
    assert result.returncode == 0, result.stderr


WRITER = """
import sys, time
with open(sys.argv[1], "wb") as fh:
    fh.write(b"z" * (4 << 20))
    fh.flush()
    print("written", flush=True)
    time.sleep(60)
"""


def test_kill_9_during_a_write_keeps_mfs_intact(daemon, tmp_path):
    mnt = daemon.start()
    (mnt / "mfs" / "before.bin").write_bytes(pattern_bytes(1_000_000, 3))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt / "mfs" / "big.bin")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert writer.stdout.readline() == b"written\n"
        daemon.kill9()
    finally:
        writer.kill()
        writer.wait()
    repo = Repo(paths().repo_dir)
    root = repo.mfs.root()
    assert len(list(walk_dag(repo.store, root))) > 1  # every block of the flushed root
    assert [e["Name"] for e in repo.mfs.tree.ls(root, "/")] == ["before.bin"]
    daemon.start()
    assert "discarded the unfinished write of /mfs/big.bin" in daemon.log_text()
    assert os.listdir(mnt / "mfs") == ["before.bin"]
    assert (mnt / "mfs" / "before.bin").read_bytes() == pattern_bytes(1_000_000, 3)
    (mnt / "mfs" / "after").write_text("usable")
    assert sorted(os.listdir(mnt / "mfs")) == ["after", "before.bin"]
    deadline = time.monotonic() + 10  # release (which removes a spool) follows close()
    while list((paths().cache_dir / "spool").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list((paths().cache_dir / "spool").iterdir())


def _small_tmpfs(folder) -> None:
    folder.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")


@pytest.mark.parametrize("full", ["spool", "blocks"])
def test_disk_full_is_enospc_to_the_writer(daemon, mcpfs_home, full):
    """The spool's disk full (random writes are spooled), or the blockstore's (a sequential
    write streams into the import, unspooled): ENOSPC to the writer, earlier data intact."""
    folder = paths().cache_dir if full == "spool" else paths().state_dir
    _small_tmpfs(folder)
    try:
        mnt = daemon.start()
        (mnt / "mfs" / "early").write_bytes(b"early data")
        with pytest.raises(OSError) as info:
            with open(mnt / "mfs" / "big", "wb") as fh:
                if full == "spool":
                    fh.seek(4 << 20)  # a write past the end: not sequential, spooled
                    fh.write(b"!")
                    fh.seek(0)
                for _ in range(16):
                    fh.write(os.urandom(256 << 10))  # distinct blocks: no dedup
        assert info.value.errno == errno.ENOSPC
        assert (mnt / "mfs" / "early").read_bytes() == b"early data"
        if full == "blocks":  # the streamed bytes are gone: the write is dropped whole
            assert "big" not in os.listdir(mnt / "mfs")
        daemon.stop()
    finally:
        daemon.stop()
        subprocess.run(["umount", str(folder)], check=True)


def _ctrl_c_after_mount(mnt: Path, pids: list[int], listdir: bool) -> None:
    from .conftest import CLI
    proc = subprocess.Popen([sys.executable, "-c", CLI, "mount", "--foreground", str(mnt)],
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    pids.append(proc.pid)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.005)
        if listdir:
            assert sorted(os.listdir(mnt)) == ["ipfs", "mfs"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert not is_mounted(mnt)
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "unmounted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_foreground_mount_and_ctrl_c(cli_mnt):
    """`make run`: `mcpfs mount --foreground`, Ctrl-C (SIGINT) unmounts cleanly."""
    _ctrl_c_after_mount(*cli_mnt, listdir=True)


def test_ctrl_c_the_moment_the_mount_appears(cli_mnt):
    """A SIGINT while the daemon still sets up after the mount became visible (its request
    loop may be stopping while a startup stat waits for an answer): a clean unmount and
    exit 0, every time (this hung about one time in three)."""
    for _ in range(5):
        _ctrl_c_after_mount(*cli_mnt, listdir=False)


def test_cli_that_cannot_reach_the_daemon_does_not_touch_its_mfs(daemon):
    """The CLI falls back to the repo when the control socket does not answer (here it
    is moved away, as another XDG_RUNTIME_DIR would hide it): for MFS it gets a one-line
    EBUSY naming the daemon, and the daemon's logs are left alone (kill -9 loses
    nothing)."""
    mnt = daemon.start()
    for i in range(20):
        (mnt / "mfs" / f"f{i}").write_bytes(b"%d" % i)
    sock = paths().socket_path
    hidden = sock.with_name(sock.name + ".hidden")
    sock.rename(hidden)
    try:
        r = mcpfs("files", "ls", "/", check=False)
    finally:
        hidden.rename(sock)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "in use by another mcpfs process" in r.stderr and len(r.stderr.splitlines()) == 1
    assert (paths().repo_dir / "mfs-root.blocks").exists()
    daemon.kill9()
    mnt = daemon.start()
    assert sorted(os.listdir(mnt / "mfs")) == sorted(f"f{i}" for i in range(20))


def test_a_failing_daemon_task_begins_the_shutdown_time_limit():
    """A background task that fails ends the daemon like a signal would, and its
    shutdown gets the same time limit (the nursery waits for shielded commits)."""
    import trio

    from mcpfs.daemon import ShutdownLimit
    limit = ShutdownLimit(3600.0, "/nonexistent", None, {"unmounted": True, "ready": True})

    async def broken(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        raise RuntimeError("a background task failed")

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(limit.guard(broken))
            await trio.sleep_forever()
    try:
        with pytest.raises(BaseException) as failed:
            trio.run(main)
        assert "a background task failed" in repr(failed.value.exceptions)
        assert limit._timer is not None and limit._timer.is_alive()
    finally:
        limit.end()
