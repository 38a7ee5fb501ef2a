"""``mcpfs mount``, ``mcpfs unmount`` and ``mcpfs service install``.

``mount`` without ``--foreground`` spawns ``python -m mcpfs.daemon`` in a new session (its
output appended to ``<state>/mcpfs.log``) and waits on a private datagram socket, passed as
``$NOTIFY_SOCKET``, for the daemon's ``READY=1`` (the systemd protocol, so the daemon has one
readiness path). It returns only once the mount is live; otherwise it exits non-zero with one
line: the daemon's own error, or a timeout (the daemon is then killed). A stale mount of ours
(``fuse.mcpfs`` whose daemon is gone: ENOTCONN) is lazily unmounted first.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from ..config import paths
from ..errors import McpfsError
from .common import cli

READY_TIMEOUT = 30.0  # seconds `mcpfs mount` waits for the daemon's READY=1
FSTYPE = "fuse.mcpfs"
LOG_FILE = "mcpfs.log"
DEFAULT_MOUNTPOINT = "~/mcp"


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_type(mountpoint: str) -> str | None:
    """The fstype mounted at ``mountpoint`` (last mount wins), or None."""
    found = None
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and _unescape(fields[4]) == mountpoint:
                found = right.split()[0]
    return found


def clean_stale(mountpoint: str) -> bool:
    """Lazily unmount a dead mcpfs mount at ``mountpoint``; True when one was cleaned.
    A live mcpfs mount there raises McpfsError (already mounted)."""
    if mount_type(mountpoint) != FSTYPE:
        return False
    try:
        os.statvfs(mountpoint)  # always reaches the daemon (stat may be answered from cache)
    except OSError as exc:
        if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
            raise McpfsError(f"{mountpoint}: {exc.strerror}") from None
        subprocess.run(["fusermount3", "-uz", mountpoint], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True
    raise McpfsError(f"{mountpoint} is already mounted by a running mcpfs")


def _last_error(log_file: Path, start: int) -> str | None:
    try:
        with open(log_file, "rb") as fh:
            fh.seek(start)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    if errors:
        return errors[-1][len("Error: "):]
    return lines[-1] if lines else None


def start_background(mountpoint: str, config_file: str | None,
                     timeout: float = READY_TIMEOUT) -> int:
    """Spawn the daemon and wait for READY=1; return its pid (McpfsError otherwise)."""
    state = paths().ensure().state_dir
    log_file = state / LOG_FILE
    with tempfile.TemporaryDirectory(prefix="mcpfs-notify-") as tmp:
        addr = os.path.join(tmp, "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(addr)
            sock.settimeout(0.1)
            args = [sys.executable, "-m", "mcpfs.daemon", mountpoint]
            if config_file:
                args += ["--config", os.path.abspath(config_file)]
            env = dict(os.environ, NOTIFY_SOCKET=addr)
            with open(log_file, "ab") as log:
                start = log.tell()
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        env=env, start_new_session=True, close_fds=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    message = sock.recv(4096).decode(errors="replace")
                except socket.timeout:
                    message = ""
                if "READY=1" in message.split("\n"):
                    return proc.pid
                if proc.poll() is not None:
                    reason = _last_error(log_file, start) \
                        or f"daemon exited with {proc.returncode}"
                    raise McpfsError(reason)
            proc.kill()
            proc.wait()
            raise McpfsError(f"the mount did not become ready within {timeout:.0f}s "
                             f"(see {log_file})")


@cli.command()
@click.argument("mountpoint", type=click.Path())
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (Ctrl-C unmounts).")
@click.option("--config", "config_file", type=click.Path(), default=None,
              help="Config file (default: ~/.config/mcpfs/config.toml).")
def mount(mountpoint: str, foreground: bool, config_file: str | None) -> None:
    """Mount the mcpfs tree at MOUNTPOINT."""
    from ..daemon import check_mountpoint, run, setup_logging
    path = os.path.abspath(mountpoint)
    if clean_stale(path):
        click.echo(f"cleaned up a stale mcpfs mount at {path}", err=True)
    check_mountpoint(path)
    if foreground:
        setup_logging()
        run(path, config_file)
        return
    pid = start_background(path, config_file)
    click.echo(f"mounted {path} (daemon pid {pid})", err=True)


@cli.command()
@click.argument("mountpoint", type=click.Path())
def unmount(mountpoint: str) -> None:
    """Unmount MOUNTPOINT (the daemon commits pending writes and exits). Returns at once;
    when writes are still being committed, says so (``mcpfs status`` lists them)."""
    from .status import pending_writes
    path = os.path.abspath(mountpoint)
    if mount_type(path) is None:
        raise McpfsError(f"{path} is not mounted")
    done = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
    if done.returncode:
        lines = (done.stderr or "").strip().splitlines()
        raise McpfsError(lines[-1] if lines else f"fusermount3 -u {path} failed")
    pending = [row for row in pending_writes(paths().state_dir) if row["State"] != "open"]
    if pending:
        click.echo(f"{len(pending)} write(s) still being uploaded by the daemon in the "
                   "background ([daemon] unmount_grace); `mcpfs status` lists them, and "
                   "the next start finishes any it could not", err=True)


# ---------------------------------------------------------------- systemd
def unit_text(exec_start: str, environment: dict[str, str] | None = None,
              mountpoint: str = "%h/mcp") -> str:
    """The user unit; ``systemd/mcpfs.service`` is this with the defaults."""
    env = "".join(f"Environment={shlex.quote(f'{k}={v}')}\n"
                  for k, v in sorted((environment or {}).items()))
    return f"""[Unit]
Description=mcpfs: IPFS, MFS and more as one mounted tree
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
{env}ExecStartPre=-/usr/bin/fusermount3 -uz {mountpoint}
ExecStart={exec_start} {mountpoint}
Restart=on-failure
RestartSec=2
TimeoutStopSec=60
KillSignal=SIGTERM

[Install]
WantedBy=default.target
"""


REPO_UNIT_EXEC = "/usr/bin/env mcpfs mount --foreground"


@cli.group()
def service() -> None:
    """The systemd user service."""


@service.command("install")
@click.argument("mountpoint", required=False, default=DEFAULT_MOUNTPOINT)
def service_install(mountpoint: str) -> None:
    """Write ~/.config/systemd/user/mcpfs.service mounting MOUNTPOINT (default ~/mcp)."""
    path = os.path.abspath(os.path.expanduser(mountpoint))
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    unit_dir = Path(config_home) / "systemd" / "user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in ("MCPFS_HOME",) if os.environ.get(k)}
    exec_start = f"{shlex.quote(sys.executable)} -m mcpfs.daemon"
    unit = unit_dir / "mcpfs.service"
    unit.write_text(unit_text(exec_start, env, shlex.quote(path)))
    Path(path).mkdir(parents=True, exist_ok=True)
    click.echo(str(unit))
    if shutil.which("systemctl"):
        click.echo("enable it with: systemctl --user daemon-reload && "
                   "systemctl --user enable --now mcpfs", err=True)
