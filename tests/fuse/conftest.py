"""A real mount: the daemon in a subprocess, on a temporary MCPFS_HOME.

The fixture waits for the daemon's READY=1 on a datagram socket (the systemd protocol), and
always cleans up: ``fusermount3 -u``, then ``-uz`` if that fails, then SIGTERM/SIGKILL of
the daemon process by its pid. The daemon's log must hold no traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcpfs.backends.ipfs.node import Repo
from mcpfs.config import paths

READY_TIMEOUT = 20.0

if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
    pytest.skip("no FUSE here", allow_module_level=True)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


class Daemon:
    def __init__(self, home: Path, mnt: Path, log: Path) -> None:
        self.home, self.mnt, self.log = home, mnt, log
        self.proc: subprocess.Popen | None = None

    def start(self, extra_env: dict | None = None) -> Path:
        addr = str(self.home.parent / f"notify-{time.monotonic_ns()}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(addr)
        sock.settimeout(0.1)
        env = dict(os.environ, NOTIFY_SOCKET=addr, MCPFS_HOME=str(self.home), **(extra_env or {}))
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mcpfs.daemon", str(self.mnt)],
                                     stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while time.monotonic() < deadline:
                try:
                    if b"READY=1" in sock.recv(4096):
                        return self.mnt
                except socket.timeout:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited: {self.log.read_text()[-2000:]}")
            raise RuntimeError("daemon not ready in time")
        finally:
            sock.close()
            os.unlink(addr)

    def stop(self) -> None:
        if is_mounted(self.mnt):
            if subprocess.run(["fusermount3", "-u", str(self.mnt)],
                              capture_output=True).returncode:
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def repo(mcpfs_home) -> Repo:
    """The repo the daemon will open (fill it before starting the daemon)."""
    return Repo(paths().repo_dir)


@pytest.fixture
def daemon(mcpfs_home, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    d = Daemon(Path(mcpfs_home), mnt, tmp_path / "daemon.log")
    try:
        yield d
    finally:
        d.stop()
    assert not is_mounted(mnt)
    assert "Traceback" not in d.log_text(), d.log_text()


@pytest.fixture
def mnt(daemon) -> Path:
    daemon.start()
    return daemon.mnt


def run(*args: str, check: bool = True, text: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=text, check=check, timeout=60,
                          errors="replace" if text else None, **kw)


CLI = ("import sys; from mcpfs.cli import main; from mcpfs.cli import mount; "
       "main(sys.argv[1:])")  # `mount` is imported in case cli/__init__ does not list it yet


def mcpfs(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `mcpfs` command line (same interpreter, same environment)."""
    return run(sys.executable, "-c", CLI, *args, check=check)


def mount_ops() -> dict[tuple[str, str], int]:
    """(subtree, FUSE op) -> requests the running daemon answered so far."""
    import json
    stats = json.loads(mcpfs("status", "--json").stdout)["Stats"]
    return {(mount, op): o["Count"] for mount, m in stats["Mounts"].items()
            for op, o in m.get("Ops", {}).items()}


# ---------------------------------------------------------------- /s3 (SeaweedFS)
# The server (``s3_server``, ``raw``, ``bucket``, ``many_keys``) is tests/s3_server.py's,
# shared with tests/s3/ through tests/conftest.py.

NO_AWS_FILES = {  # boto3 must see only what a test gives it, never the host's ~/.aws
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(autouse=True)
def no_aws_env(monkeypatch):
    """Drop AWS_* from every mount test's environment (the daemon inherits it), so a host
    with AWS credentials does not grow an /s3 the test did not ask for."""
    for var in [v for v in os.environ if v.startswith("AWS_") and v != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(var)
    for var, value in NO_AWS_FILES.items():
        monkeypatch.setenv(var, value)
    # likewise /hf: no token, endpoint or login of the host's
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", os.path.join(NO_AWS_FILES["AWS_CONFIG_FILE"] + ".hf-home"))


@pytest.fixture
def s3_env(s3_server, no_aws_env) -> dict:
    """What a user exports to mount an S3-compatible server: boto3's own variables."""
    return {"AWS_ENDPOINT_URL": s3_server["endpoint"], "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": s3_server["access_key"],
            "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"]}


@pytest.fixture
def s3_mnt(daemon, s3_env) -> Path:
    """A mount with /s3 on the session's SeaweedFS (configured by environment only)."""
    daemon.start(s3_env)
    return daemon.mnt
