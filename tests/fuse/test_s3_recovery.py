"""/s3 after a crash, on a SeaweedFS of the test's own (stopped with SIGSTOP: a server that
accepts connections and never answers): write-back's kill -9, and a start whose server
hangs. The journal's kept uploads run behind the live mount (vfs/recovery.py)."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from mcpfs.cli.status import pending_writes
from mcpfs.config import paths

from .conftest import is_mounted, mcpfs, run
from .test_s3_mount import MiB, _write_config, exists, get, keys, sha256, uploads, \
    wait_uploaded


@pytest.fixture
def own_s3(tmp_path_factory, no_aws_env):
    """A SeaweedFS of the test's own (same launcher as the session's): the test stops it
    with SIGSTOP, after which weed answers HTTP 500 for a while; the shared one must not."""
    from tests.s3_server import raw_client, s3_server as shared
    for server in shared.__wrapped__(tmp_path_factory):
        raw = raw_client(server["endpoint"])
        raw.create_bucket(Bucket="write-back")
        env = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": server["access_key"],
               "AWS_SECRET_ACCESS_KEY": server["secret_key"]}
        yield server, raw, env


def write_back_config(s3_server, grace: float | None = None, **extra) -> None:
    """[s3] write_back on, 5 MiB parts one at a time (an upload long enough to catch);
    ``grace``: [daemon] unmount_grace."""
    _write_config(s3_server, write_back="true", part_size=5 * MiB, part_concurrency=1,
                  **extra)
    if grace is not None:
        with open(paths().config_file, "a") as cfg:
            cfg.write(f"[daemon]\nunmount_grace = {grace}\n")


def copy_then_hang(s3_server, tmp_path, dst, mib: int) -> tuple[bytes, object]:
    """cp a new file of ``mib`` MiB to ``dst`` (returns once journaled), then stop the
    server (SIGSTOP: connections accepted, never answered) before its upload can end;
    (the bytes, the source file). The caller sends SIGCONT."""
    data = os.urandom(mib * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    dst.parent.mkdir(exist_ok=True)
    run("cp", str(src), str(dst))
    os.kill(s3_server["pid"], signal.SIGSTOP)
    return data, src


def test_write_back_cp_returns_first_and_kill_9_loses_nothing(daemon, own_s3, tmp_path):
    """With write_back, cp (and 50 small files) return before the upload; the files read
    back at once through the mount; a kill -9 before the upload ends (the server is
    stopped right after cp returns, so it cannot end) is completed by the next start: the
    journal says committing, and nothing partial is ever visible."""
    s3_server, raw, env = own_s3
    bucket = "write-back"
    write_back_config(s3_server)
    mnt = daemon.start(env)
    folder = mnt / "s3" / bucket / "wb"
    folder.mkdir()
    for i in range(50):
        (folder / f"s{i:02}").write_bytes(b"small %d" % i)
    data, src = copy_then_hang(s3_server, tmp_path, folder / "big.bin", 120)
    try:
        assert run("cmp", str(src), str(folder / "big.bin")).returncode == 0  # the spool
        status = mcpfs("status").stdout
        assert f"/s3/{bucket}/wb/big.bin  committing" in status, status
        daemon.kill9()
    finally:
        os.kill(s3_server["pid"], signal.SIGCONT)
    assert not exists(raw, bucket, "wb/big.bin")
    daemon.start(env)  # the uploads resume behind the live mount
    wait_uploaded()
    assert sha256(get(raw, bucket, "wb/big.bin")) == sha256(data)
    assert sorted(keys(raw, bucket, "wb/")) == ["wb/", "wb/big.bin"] + [  # mkdir's marker
        f"wb/s{i:02}" for i in range(50)]
    assert get(raw, bucket, "wb/s07") == b"small 7"
    assert pending_writes(paths().state_dir) == []
    # a multipart upload the server began as the daemon died, before the daemon could
    # record its id, stays incomplete (invisible; SEMANTICS.md): at most that one
    assert len(uploads(raw, bucket)) <= 1
    # once running again, a write-back upload ends by itself
    (folder / "later").write_bytes(b"later")
    deadline = time.monotonic() + 30
    while not exists(raw, bucket, "wb/later") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get(raw, bucket, "wb/later") == b"later"


def test_a_hung_server_does_not_hold_up_the_start(daemon, own_s3, tmp_path):
    """kill -9 with an upload pending, and the server hangs (SIGSTOP: it accepts
    connections, never answers) at the next start: the mount goes live anyway, shows the
    file with its size and reads it from the spool, all without the server (a listing
    needs the server: EIO after the timeouts); once the
    server answers again the upload completes by itself. (Before, the start waited for the
    upload: with the default timeouts `mcpfs mount` gave up after 30 s, at every start.)"""
    s3_server, raw, env = own_s3
    bucket = "write-back"
    write_back_config(s3_server, read_timeout=2, max_attempts=3)
    mnt = daemon.start(env)
    folder = mnt / "s3" / bucket / "wb"
    data, src = copy_then_hang(s3_server, tmp_path, folder / "big.bin", 120)
    try:
        daemon.kill9()
        daemon.start(env)
        assert (folder / "big.bin").stat().st_size == len(data)
        assert run("cmp", str(src), str(folder / "big.bin")).returncode == 0  # the spool
        status = mcpfs("status").stdout
        assert f"/s3/{bucket}/wb/big.bin  committing" in status, status
    finally:
        os.kill(s3_server["pid"], signal.SIGCONT)
    wait_uploaded(timeout=90)
    assert sha256(get(raw, bucket, "wb/big.bin")) == sha256(data)
    assert "completed the interrupted write of /s3/write-back/wb/big.bin" in daemon.log_text()


def test_no_second_daemon_while_one_still_uploads_after_unmount(daemon, own_s3, tmp_path):
    """After an unmount the daemon stays until its pending uploads end (here: the server
    hangs). A second start with the same MCPFS_HOME, at another mount point, is refused
    with a one-line reason until then: it would replay the journal rows the first one is
    still committing (and discard the spools of open ones). Once the server answers, the
    first daemon finishes the upload and exits, and a start works again."""
    s3_server, raw, env = own_s3
    bucket = "write-back"
    write_back_config(s3_server, grace=90)  # the first one stays meanwhile
    mnt = daemon.start(env)
    data, _ = copy_then_hang(s3_server, tmp_path, mnt / "s3" / bucket / "big.bin", 60)
    other = tmp_path / "other"
    other.mkdir()
    try:
        run("fusermount3", "-u", str(mnt))  # the daemon now waits for the upload
        refused = mcpfs("mount", str(other), check=False)
        assert refused.returncode == 1 and not is_mounted(other)
        assert "another mcpfs daemon" in refused.stderr and "Traceback" not in refused.stderr
        assert daemon.proc.poll() is None  # still uploading, and status says so
        said = mcpfs("status").stdout
        assert f"pid {daemon.proc.pid} does not answer: busy, or unmounted and still " \
            "finishing its uploads" in said, said
        assert [r["State"] for r in pending_writes(paths().state_dir)] == ["committing"]
    finally:
        os.kill(s3_server["pid"], signal.SIGCONT)
        if is_mounted(other):  # (a failed run: the second daemon was not refused)
            run("fusermount3", "-uz", str(other))
    daemon.proc.wait(120)
    assert sha256(get(raw, bucket, "big.bin")) == sha256(data)
    assert pending_writes(paths().state_dir) == []
    daemon.start(env)
    assert (mnt / "s3" / bucket / "big.bin").stat().st_size == len(data)


def test_an_unmount_waits_for_uploads_only_the_grace(daemon, own_s3, tmp_path):
    """The shutdown after an unmount waits for pending uploads at most `[daemon]
    unmount_grace` seconds; past it (the server hangs) the daemon exits, the upload stays
    in the journal, and the next start completes it."""
    s3_server, raw, env = own_s3
    bucket = "write-back"
    write_back_config(s3_server, grace=2)
    mnt = daemon.start(env)
    data, _ = copy_then_hang(s3_server, tmp_path, mnt / "s3" / bucket / "big.bin", 60)
    try:
        said = mcpfs("unmount", str(mnt)).stderr  # returns at once, and says why
        assert "1 write(s) still being uploaded by the daemon" in said, said
        assert daemon.proc.wait(30) == 0  # not the 60 s read timeout, times 5 attempts
        assert [r["State"] for r in pending_writes(paths().state_dir)] == ["committing"]
        assert "1 pending writes did not end within 2 s" in daemon.log_text()
    finally:
        os.kill(s3_server["pid"], signal.SIGCONT)
    daemon.start(env)
    wait_uploaded()
    assert sha256(get(raw, bucket, "big.bin")) == sha256(data)


def test_a_failed_close_is_not_replayed_over_a_later_write(daemon, own_s3, tmp_path):
    """Without write-back: a close() whose upload fails (the server hangs: EIO after the
    timeouts) keeps its spool for the next start; once the server answers, writing the
    same path again succeeds. The next start must not put the first, older bytes back
    over it (it did: the kept row stayed in the journal)."""
    s3_server, raw, env = own_s3
    bucket = "write-back"
    _write_config(s3_server, read_timeout=1, max_attempts=1)
    mnt = daemon.start(env)
    dst = mnt / "s3" / bucket / "f.bin"
    older, newer = b"o" * (400 << 10), b"n" * (300 << 10)  # past the memory spool: a row
    fh = open(dst, "wb")
    fh.write(older)
    fh.flush()
    os.kill(s3_server["pid"], signal.SIGSTOP)
    try:
        with pytest.raises(OSError) as failed:
            fh.close()
        assert failed.value.errno == errno.EIO
        deadline = time.monotonic() + 30  # the release (after close) tries once more
        while "f.bin  failed" not in mcpfs("status").stdout or \
                "commit of /s3/write-back/f.bin failed" not in daemon.log_text() or \
                len(pending_writes(paths().state_dir)) != 1:
            assert time.monotonic() < deadline, daemon.log_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # (the release's own try ends: its read timeout is 1 s)
    finally:
        os.kill(s3_server["pid"], signal.SIGCONT)
    assert not exists(raw, bucket, "f.bin")
    deadline = time.monotonic() + 60  # weed answers 500 for a while after SIGCONT
    while True:
        try:
            dst.write_bytes(newer)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    deadline = time.monotonic() + 10  # (the new file's row goes at its release, which the
    while pending_writes(paths().state_dir):  # kernel sends after close() returned)
        assert time.monotonic() < deadline, pending_writes(paths().state_dir)
        time.sleep(0.1)
    daemon.stop()
    daemon.start(env)
    assert pending_writes(paths().state_dir) == []
    assert get(raw, bucket, "f.bin") == newer
    assert dst.read_bytes() == newer
