"""``[s3] write_back``: close() returns once the file is journaled, the upload follows in
the background (vfs/write_back.py over mounts/s3.py on SeaweedFS), without FUSE. The
kill -9 between close() and the upload is in tests/fuse/test_s3_recovery.py."""

from __future__ import annotations

import contextlib
import errno
import json
import os

import pytest
import trio

from mcpfs.backends.s3 import UPLOAD_SUFFIX
from mcpfs.bridge.transfers import Transfers
from mcpfs.config import paths
from mcpfs.daemon import build_bridge
from mcpfs.errors import McpfsError
from mcpfs.mounts import build_mounts
from mcpfs.mounts.base import FILE, Attr
from mcpfs.mounts.s3 import S3Mount
from mcpfs.mounts.s3_times import mtime_text
from mcpfs.vfs import VFS
from mcpfs.vfs.inodes import ROOT_INODE
from mcpfs.vfs.journal import COMMITTING, FAILED, Journal
from mcpfs.stats import Stats
from mcpfs.vfs.write_back import UPLOADS
from tests.vfs.conftest import add_bytes, repo  # noqa: F401 - repo: a fixture

from .conftest import make_backend


class Gate:
    """Holds every upload of the mount until opened (so a test sees the file pending)."""

    def __init__(self, mount: S3Mount) -> None:
        self.open = trio.Event()
        self.started = 0
        real = mount.commit

        async def held(writer):
            self.started += 1
            await self.open.wait()
            return await real(writer)
        mount.commit = held


@pytest.fixture
async def wb(s3_server, bucket, tmp_path, nursery):
    mount = S3Mount(make_backend(s3_server, write_back=True))
    journal = Journal(tmp_path / "state")
    vfs = VFS({"s3": mount}, tmp_path / "spool", journal)
    await nursery.start(vfs.write_back.serve)
    vfs.write_back.retry_delay = 0.01
    yield vfs, mount, journal, bucket
    await vfs.commit_all()
    journal.close()


async def ino(vfs: VFS, path: str) -> int:
    node = ROOT_INODE
    for name in path.split("/"):
        node = (await vfs.lookup(node, name)).ino
    return node


async def write(vfs: VFS, path: str, data: bytes) -> None:
    head, _, name = path.rpartition("/")
    try:  # as the kernel does: an existing name is opened with O_TRUNC, a new one created
        fh, _ = await vfs.open(await ino(vfs, path), os.O_WRONLY | os.O_TRUNC)
    except McpfsError as exc:
        assert exc.errno == errno.ENOENT
        fh, _ = await vfs.create(await ino(vfs, head), name, os.O_WRONLY | os.O_CREAT)
    for i in range(0, len(data), 128 << 10):
        await vfs.write(fh, i, data[i:i + (128 << 10)])
    await vfs.flush(fh)  # close(): returns before the upload
    await vfs.release(fh)


async def read(vfs: VFS, path: str) -> bytes:
    fh, _ = await vfs.open(await ino(vfs, path), os.O_RDONLY)
    try:
        return await vfs.read(fh, 0, 1 << 30)
    finally:
        await vfs.release(fh)


async def waits_for_the_gate(vfs: VFS, gate: Gate, path: str, data: bytes,
                             meanwhile=lambda: True) -> None:
    """``write(path, data)`` must wait while ``gate`` holds the uploads (``meanwhile()``
    holding then), and end once it opens."""
    done = trio.Event()

    async def writer():
        await write(vfs, path, data)
        done.set()
    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set() and meanwhile()
        gate.open.set()
    await vfs.write_back.drain()


async def test_the_folders_of_pending_files_are_found_without_a_request(wb, raw):
    """While uploads wait (a server that does not answer), the folders above a pending
    file are directories without asking the backend: a path walk to the file never
    hangs on the server (the kill -9 FUSE test stops the server that way)."""
    vfs, mount, journal, bucket = wb
    await vfs.mkdir(await ino(vfs, f"s3/{bucket}"), "deep")
    await vfs.mkdir(await ino(vfs, f"s3/{bucket}/deep"), "er")
    gate = Gate(mount)
    await write(vfs, f"s3/{bucket}/deep/er/f.txt", b"pending")
    asked = []
    real = mount.lookup

    async def lookup(sub):
        if sub:  # (not /s3 itself)
            asked.append(sub)
        return await real(sub)
    mount.lookup = lookup
    try:
        await _walk_folders(vfs, bucket)
        assert asked == []
        assert await read(vfs, f"s3/{bucket}/deep/er/f.txt") == b"pending"
    finally:
        gate.open.set()  # (else the fixture's commit_all waits for ever)
    await vfs.write_back.drain()
    await vfs.lookup(await ino(vfs, "s3"), bucket)
    assert asked == [bucket]  # uploaded: the backend answers again


async def _walk_folders(vfs, bucket):
    """Look up s3/<bucket>, then deep, then er, as a path walk does."""
    parent = await ino(vfs, "s3")
    for name in (bucket, "deep", "er"):
        entry = await vfs.lookup(parent, name)
        assert entry.attr.is_dir
        parent = entry.ino


async def test_close_returns_before_the_upload_and_the_file_is_served_meanwhile(wb, raw):
    vfs, mount, journal, bucket = wb
    gate = Gate(mount)
    data = os.urandom(300_000)
    await write(vfs, f"s3/{bucket}/a.bin", data)
    await trio.testing.wait_all_tasks_blocked()
    assert gate.started == 1  # the upload runs, close() has returned
    assert "Contents" not in raw.list_objects_v2(Bucket=bucket)
    rows = journal.pending()
    assert [(r.path, r.state) for r in rows] == [(f"{bucket}/a.bin", COMMITTING)]
    with open(rows[0].spool, "rb") as fh:  # durable before close() returned
        assert fh.read() == data
    assert (await vfs.getattr(await ino(vfs, f"s3/{bucket}/a.bin"))).attr.size == len(data)
    assert await read(vfs, f"s3/{bucket}/a.bin") == data
    gate.open.set()
    await vfs.write_back.drain()
    assert raw.get_object(Bucket=bucket, Key="a.bin")["Body"].read() == data
    assert journal.pending() == [] and not os.listdir(vfs.spool_dir)
    assert not vfs.open_files


async def test_small_files_are_journaled_then_uploaded_in_parallel(wb, raw):
    vfs, mount, journal, bucket = wb
    gate = Gate(mount)
    for i in range(20):
        await write(vfs, f"s3/{bucket}/s{i:02}", b"x%d" % i)
    await trio.testing.wait_all_tasks_blocked()
    assert gate.started == UPLOADS  # at once
    assert len(journal.pending()) == 20
    gate.open.set()
    await vfs.write_back.drain()
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"s{i:02}" for i in range(20)]
    assert journal.pending() == []


async def test_unlink_and_rename_wait_for_the_upload(wb, raw):
    """The backend sees the upload first: a delete (or a copy) issued before it would be
    undone by it."""
    vfs, mount, journal, bucket = wb
    gate = Gate(mount)
    await write(vfs, f"s3/{bucket}/gone", b"bytes")
    await write(vfs, f"s3/{bucket}/moved", b"moving")
    async with trio.open_nursery() as n:
        root = await ino(vfs, f"s3/{bucket}")
        n.start_soon(vfs.unlink, root, "gone")
        n.start_soon(vfs.rename, root, "moved", root, "there")
        await trio.testing.wait_all_tasks_blocked()
        assert "Contents" not in raw.list_objects_v2(Bucket=bucket)
        gate.open.set()
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["there"]
    assert raw.get_object(Bucket=bucket, Key="there")["Body"].read() == b"moving"


async def test_a_new_writer_waits_and_its_bytes_are_committed_after(wb, raw):
    vfs, mount, journal, bucket = wb
    gate = Gate(mount)
    await write(vfs, f"s3/{bucket}/f", b"first")
    await waits_for_the_gate(vfs, gate, f"s3/{bucket}/f", b"second version")  # O_TRUNC
    assert raw.get_object(Bucket=bucket, Key="f")["Body"].read() == b"second version"
    assert journal.pending() == []


async def test_a_failing_upload_stays_as_written_and_is_retried_until_it_lands(wb, raw):
    """A server that keeps failing (not a refusal): 4 tries in a row, then a round every
    `retry_later` s for as long as it takes. Meanwhile the file is shown and read as
    written (not the server's older version), is not waited for, and its row says failed
    (one failed run counted) for a crash or shutdown to leave to the next start."""
    vfs, mount, journal, bucket = wb
    raw.put_object(Bucket=bucket, Key="kept", Body=b"older")
    vfs.write_back.retry_later = 0.5
    tries = []

    async def broken(writer):
        tries.append(writer.path)
        raise McpfsError("backend down", errno=errno.EIO)
    real = mount.commit
    mount.commit = broken
    await write(vfs, f"s3/{bucket}/kept", b"keep me")
    await vfs.write_back.drain()
    assert len(tries) == 4  # ATTEMPTS
    rows = journal.pending()
    assert [(r.path, r.state) for r in rows] == [(f"{bucket}/kept", FAILED)]
    assert rows[0].attempts == 1  # one run that failed, however many tries (recovery.py)
    assert await read(vfs, f"s3/{bucket}/kept") == b"keep me"  # as written, at once
    assert (await vfs.getattr(await ino(vfs, f"s3/{bucket}/kept"))).attr.size == 7
    await trio.sleep(0.6)  # a round of retries
    await vfs.write_back.drain()
    assert len(tries) == 8
    mount.commit = real
    with trio.fail_after(10):
        while journal.pending():
            await trio.sleep(0.05)
    assert raw.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"keep me"
    assert not os.path.exists(rows[0].spool)


async def write_until_retry_waits(vfs: VFS, mount: S3Mount, path: str, data: bytes) -> None:
    """``write(path, data)`` while every upload fails (not a refusal): after its 4 tries the
    file waits for its next round (``retry_later``); uploads work again after."""
    async def broken(writer):
        raise McpfsError("backend down", errno=errno.EIO)
    real = mount.commit
    mount.commit = broken
    try:
        await write(vfs, path, data)
        await vfs.write_back.drain()
    finally:
        mount.commit = real


async def test_a_write_to_a_file_waiting_for_a_retry_continues_from_its_bytes(wb, raw):
    """A writer of a file whose upload waits for its next round does not wait, and starts
    from what was written (appended here), never from the server's older version; `rm`
    of such a file drops it and its row."""
    vfs, mount, journal, bucket = wb
    raw.put_object(Bucket=bucket, Key="f", Body=b"older")
    vfs.write_back.retry_later = 3600.0
    await write_until_retry_waits(vfs, mount, f"s3/{bucket}/f", b"version 2")
    fh, _ = await vfs.open(await ino(vfs, f"s3/{bucket}/f"), os.O_WRONLY | os.O_APPEND)
    await vfs.write(fh, 9, b" + more")
    await vfs.flush(fh)
    await vfs.release(fh)
    await vfs.write_back.drain()
    assert raw.get_object(Bucket=bucket, Key="f")["Body"].read() == b"version 2 + more"
    assert journal.pending() == []
    await write_until_retry_waits(vfs, mount, f"s3/{bucket}/new", b"never uploaded")
    await vfs.unlink(await ino(vfs, f"s3/{bucket}"), "new")
    assert journal.pending() == []


async def test_without_write_back_close_waits_for_the_upload(s3_server, bucket, raw, tmp_path,
                                                             nursery):
    mount = S3Mount(make_backend(s3_server))
    vfs = VFS({"s3": mount}, tmp_path / "spool", Journal(tmp_path / "state"))
    await nursery.start(vfs.write_back.serve)
    await write(vfs, f"s3/{bucket}/sync", b"now")
    assert raw.get_object(Bucket=bucket, Key="sync")["Body"].read() == b"now"


async def test_close_waits_when_the_queue_is_full(wb, raw):
    """At most QUEUED files wait for their upload (each holds a spool descriptor): the
    next close() waits for room."""
    vfs, mount, journal, bucket = wb
    vfs.write_back.room = trio.Semaphore(3)
    gate = Gate(mount)
    for i in range(3):
        await write(vfs, f"s3/{bucket}/q{i}", b"queued")
    await waits_for_the_gate(vfs, gate, f"s3/{bucket}/q3", b"waits",
                             lambda: len(journal.pending()) == 3)
    assert sorted(o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]) == \
        ["q0", "q1", "q2", "q3"]


async def test_two_closes_of_one_handle_at_once_queue_it_once(wb, raw):
    """dup'd descriptors closed together (two flushes of one handle): one upload, no
    crash of the write-back task."""
    vfs, mount, journal, bucket = wb
    gate = Gate(mount)
    fh, _ = await vfs.create(await ino(vfs, f"s3/{bucket}"), "dup", os.O_WRONLY | os.O_CREAT)
    await vfs.write(fh, 0, b"once")
    async with trio.open_nursery() as n:
        n.start_soon(vfs.flush, fh)
        n.start_soon(vfs.flush, fh)
        await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
    await vfs.release(fh)
    await vfs.write_back.drain()
    assert raw.get_object(Bucket=bucket, Key="dup")["Body"].read() == b"once"
    assert journal.pending() == [] and not vfs.open_files


async def test_an_unexpected_error_is_retried_and_never_escapes(wb, raw):
    vfs, mount, journal, bucket = wb
    real, tries = mount.commit, []

    async def flaky(writer):
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("a bug")
        return await real(writer)
    mount.commit = flaky
    await write(vfs, f"s3/{bucket}/flaky", b"second try")
    await vfs.write_back.drain()
    assert len(tries) == 2
    assert raw.get_object(Bucket=bucket, Key="flaky")["Body"].read() == b"second try"


async def denied_write(vfs: VFS, mount: S3Mount, journal: Journal, path: str):
    """Write ``path`` while every upload is denied: the write-back gives up at once
    (EACCES will not change on retry) and keeps the spool for the next start."""
    real, tries = mount.commit, []

    async def denied(writer):
        tries.append(1)
        raise McpfsError("access denied", errno=errno.EACCES)
    mount.commit = denied
    await write(vfs, path, b"old")
    await vfs.write_back.drain()
    mount.commit = real
    assert len(tries) == 1
    [row] = journal.pending()
    assert row.state == FAILED and os.path.exists(row.spool)
    return row


async def test_a_given_up_upload_is_superseded_by_rm(wb, raw):
    """A given-up overwrite leaves the object as it was; removing it removes the kept
    spool too, so the next start does not bring the file back."""
    vfs, mount, journal, bucket = wb
    raw.put_object(Bucket=bucket, Key="d", Body=b"on the server")
    row = await denied_write(vfs, mount, journal, f"s3/{bucket}/d")
    assert await read(vfs, f"s3/{bucket}/d") == b"on the server"
    await vfs.unlink(await ino(vfs, f"s3/{bucket}"), "d")
    assert journal.pending() == [] and not os.path.exists(row.spool)
    assert await vfs.recover() == []


async def test_a_given_up_upload_is_superseded_by_a_newer_write(wb, raw):
    """...and when the path is written again and that commit succeeds, so the next start
    does not put the old bytes over the new ones. (The second upload is the mount's
    commit answering success without the server: SeaweedFS sometimes answers HTTP 500 to
    the conditional PUT here under load, which would only test its retries.)"""
    vfs, mount, journal, bucket = wb
    row = await denied_write(vfs, mount, journal, f"s3/{bucket}/d")
    stored = []

    async def accepted(writer):
        stored.append(await writer.spool.read(0, 100))
        return Attr(FILE, 3)
    mount.commit = accepted
    await write(vfs, f"s3/{bucket}/d", b"new")
    await vfs.write_back.drain()
    assert stored == [b"new"]
    assert journal.pending() == [] and not os.path.exists(row.spool)
    assert await vfs.recover() == []


async def test_times_set_after_close_during_the_upload_are_kept(wb, raw):
    """rsync sets its temp file's times after close(); with write_back the upload may be
    under way then: the kept mtime is the one set, read when the upload ends."""
    vfs, mount, journal, bucket = wb
    old = 1_600_000_000_123_456_789
    release = trio.Event()
    real = mount.backend.put_bytes

    async def held(*args, **kwargs):
        await release.wait()
        return await real(*args, **kwargs)
    mount.backend.put_bytes = held
    await write(vfs, f"s3/{bucket}/t", b"temp file")
    await trio.testing.wait_all_tasks_blocked()  # the upload waits in put_bytes
    await vfs.setattr(await ino(vfs, f"s3/{bucket}/t"), mtime_ns=old, perm=0o600)
    release.set()
    await vfs.write_back.drain()
    got = (await vfs.getattr(await ino(vfs, f"s3/{bucket}/t"))).attr
    assert (got.mtime_ns, got.perm) == (old, 0o600)
    assert raw.get_object(Bucket=bucket, Key="t")["Body"].read() == b"temp file"


async def test_a_kept_upload_keeps_the_files_mtime_for_the_next_start(wb, raw, nursery):
    """A file whose upload waits for the next start (given up here; a crash is the same
    row) is uploaded then with the mtime it had, the one `cp -p` set, not the retry's."""
    vfs, mount, journal, bucket = wb
    old = 1_600_000_000_123_456_789

    async def broken(writer):
        raise McpfsError("backend down", errno=errno.EIO)
    real = mount.commit
    mount.commit = broken
    fh, _ = await vfs.create(await ino(vfs, f"s3/{bucket}"), "p", os.O_WRONLY | os.O_CREAT)
    await vfs.write(fh, 0, b"preserved")
    await vfs.setattr(await ino(vfs, f"s3/{bucket}/p"), mtime_ns=old)  # cp -p
    await vfs.flush(fh)
    await vfs.release(fh)
    await vfs.write_back.drain()
    [row] = journal.pending()
    assert os.stat(row.spool).st_mtime_ns == old
    mount.commit = real
    fresh = VFS({"s3": mount}, os.path.dirname(row.spool), journal)  # the next start
    assert await fresh.recover() == [("s3", f"{bucket}/p", "queued")]
    await nursery.start(fresh.write_back.serve)
    await fresh.write_back.drain()
    head = raw.head_object(Bucket=bucket, Key="p")
    assert head["Metadata"]["mtime"] == mtime_text(old)
    assert (await fresh.getattr(await ino(fresh, f"s3/{bucket}/p"))).attr.mtime_ns == old


async def test_drain_waits_until_each_ended_commit_has_closed_its_file(wb, raw):
    """A commit ends (uploaded), then closes its file: spool and journal row go. drain()
    (shutdown) returns only after that, so no row is left to upload again at the next
    start. (It returned once nothing was pending: here as soon as ``a`` ended, ``b``
    still closing.)"""
    vfs, mount, journal, bucket = wb
    close, commit = vfs._close_open_file, mount.commit
    b_closing, b_go, a_go, drained = trio.Event(), trio.Event(), trio.Event(), trio.Event()

    async def held_close(of):
        if of.node.path.endswith("/b") and not vfs.write_back.pending(of):
            b_closing.set()  # (the close after its commit, not the one at release)
            await b_go.wait()
        await close(of)

    async def held_commit(writer):
        if writer.path.endswith("/a"):
            await a_go.wait()
        return await commit(writer)

    async def drain():
        await vfs.write_back.drain()
        drained.set()
    vfs._close_open_file, mount.commit = held_close, held_commit
    early = None
    async with trio.open_nursery() as nursery:
        await write(vfs, f"s3/{bucket}/a", b"one")
        nursery.start_soon(write, vfs, f"s3/{bucket}/b", b"two")
        await b_closing.wait()
        nursery.start_soon(drain)
        a_go.set()
        await trio.sleep(0.3)  # a committed and closed
        early = drained.is_set()
        b_go.set()  # (before asserting: the close waits shielded)
        await drained.wait()
    assert early is False and journal.pending() == []
    assert raw.get_object(Bucket=bucket, Key="b")["Body"].read() == b"two"


async def test_kept_files_of_a_previous_run_are_pending_then_uploaded(s3_server, bucket, raw,
                                                                     tmp_path, nursery):
    """The next start (recovery before the mount is live): each kept row of /s3 becomes a
    pending file at once, with its size and its bytes from the spool, holding no
    descriptor until its upload; the uploads run once write-back serves; a later row of
    the same path supersedes an earlier one (journal order), whose spool goes."""
    mount = S3Mount(make_backend(s3_server))
    journal = Journal(tmp_path / "state")
    spools = tmp_path / "spool"
    spools.mkdir()
    rows = [(f"k{i:02}", b"kept %d" % i) for i in range(40)] + [("k07", b"newer")]
    for n, (name, data) in enumerate(rows):
        (spools / f"{n}.spool").write_bytes(data)
        row = journal.add_sync("s3", f"{bucket}/{name}", str(spools / f"{n}.spool"))
        journal.set_sync(row, COMMITTING)
    vfs = VFS({"s3": mount}, spools, journal)
    descriptors = len(os.listdir("/proc/self/fd"))
    outcome = await vfs.recover()
    assert outcome == [("s3", f"{bucket}/{name}", "queued") for name, _ in rows]
    assert len(os.listdir("/proc/self/fd")) < descriptors + 5  # not one per kept file
    assert not (spools / "7.spool").exists()  # superseded by the row of k07 after it
    assert (await vfs.getattr(await ino(vfs, f"s3/{bucket}/k07"))).attr.size == 5
    assert await read(vfs, f"s3/{bucket}/k03") == b"kept 3"  # from its spool
    assert not raw.list_objects_v2(Bucket=bucket).get("Contents")  # nothing uploaded yet
    await nursery.start(vfs.write_back.serve)
    await vfs.write_back.drain()
    for name, data in rows[:7] + rows[8:]:
        assert raw.get_object(Bucket=bucket, Key=name)["Body"].read() == data
    assert journal.pending() == [] and os.listdir(spools) == []
    journal.close()


async def test_a_given_up_upload_is_superseded_by_a_rename_over_it_or_rmdir(wb, raw):
    """`mv other d` replaces what was kept for `d`, and `rmdir` of a folder whose kept new
    file never reached the server removes that file too: neither comes back at the next
    start."""
    vfs, mount, journal, bucket = wb
    kept = await denied_write(vfs, mount, journal, f"s3/{bucket}/d")
    await write(vfs, f"s3/{bucket}/other", b"renamed over it")
    await vfs.write_back.drain()
    parent = await ino(vfs, f"s3/{bucket}")
    await vfs.rename(parent, "other", parent, "d")
    assert journal.pending() == [] and not os.path.exists(kept.spool)
    await vfs.mkdir(parent, "folder")
    kept = await denied_write(vfs, mount, journal, f"s3/{bucket}/folder/new")
    await vfs.rmdir(parent, "folder")
    assert journal.pending() == [] and not os.path.exists(kept.spool)
    assert await vfs.recover() == []
    assert raw.get_object(Bucket=bucket, Key="d")["Body"].read() == b"renamed over it"


async def test_unlink_of_a_committed_file_still_open_drops_its_row(wb, raw):
    """A committed file keeps its `committing` row while handles remain (a crash then
    re-commits the same bytes, harmless); once it is removed the row must go, or the next
    start would bring the deleted file back."""
    vfs, mount, journal, bucket = wb
    parent = await ino(vfs, f"s3/{bucket}")
    fh, _ = await vfs.create(parent, "held", os.O_RDWR | os.O_CREAT)
    await vfs.write(fh, 0, b"x" * (300 << 10))  # past the memory spool: a row on disk
    await vfs.fsync(fh)  # committed while the handle stays open
    assert [r.state for r in journal.pending()] == [COMMITTING]
    await vfs.unlink(parent, "held")
    assert journal.pending() == []
    await vfs.release(fh)
    assert await vfs.recover() == []


async def test_a_start_that_fails_leaves_the_kept_files_for_the_next(s3_server, bucket, raw,
                                                                     tmp_path):
    """The daemon's shutdown after a start that never got ready (write-back never served)
    keeps the adopted files' rows and spools (commit_all(recovered=False)): they are the
    next start's, not uploaded by a process on its way out with an error."""
    mount = S3Mount(make_backend(s3_server))
    journal = Journal(tmp_path / "state")
    spools = tmp_path / "spool"
    spools.mkdir()
    (spools / "a.spool").write_bytes(b"kept")
    journal.set_sync(journal.add_sync("s3", f"{bucket}/a", str(spools / "a.spool")),
                     COMMITTING)
    vfs = VFS({"s3": mount}, spools, journal)
    assert await vfs.recover() == [("s3", f"{bucket}/a", "queued")]
    await vfs.commit_all(recovered=False)
    assert [r.state for r in journal.pending()] == [COMMITTING]
    assert (spools / "a.spool").read_bytes() == b"kept" and not vfs.open_files
    assert not raw.list_objects_v2(Bucket=bucket).get("Contents")
    journal.close()


def test_unmount_grace_must_be_seconds_above_zero():
    from mcpfs.config import Config
    from mcpfs.daemon import UNMOUNT_GRACE, unmount_grace
    assert unmount_grace(None) == UNMOUNT_GRACE
    assert unmount_grace(Config({"daemon": {"unmount_grace": 5}})) == 5.0
    for bad in (0, -1, "soon", None):
        with pytest.raises(McpfsError, match="unmount_grace"):
            unmount_grace(Config({"daemon": {"unmount_grace": bad}}))


async def test_a_rename_of_a_committed_file_still_open_moves_its_row(wb, raw):
    """...and a rename of it (or of its folder) makes its row name the new path, so a
    crash re-commits it there, not at the old name."""
    vfs, mount, journal, bucket = wb
    parent = await ino(vfs, f"s3/{bucket}")
    await vfs.mkdir(parent, "dir")
    fh, _ = await vfs.create(await ino(vfs, f"s3/{bucket}/dir"), "held",
                             os.O_RDWR | os.O_CREAT)
    await vfs.write(fh, 0, b"x" * (300 << 10))
    await vfs.fsync(fh)
    await vfs.rename(await ino(vfs, f"s3/{bucket}/dir"), "held",
                     await ino(vfs, f"s3/{bucket}/dir"), "moved")
    assert [r.path for r in journal.pending()] == [f"{bucket}/dir/moved"]
    await vfs.rename(parent, "dir", parent, "folder")
    assert [(r.path, r.state) for r in journal.pending()] == [(f"{bucket}/folder/moved",
                                                              COMMITTING)]
    await vfs.release(fh)
    assert journal.pending() == []


async def test_a_superseded_kept_upload_is_aborted_not_left_open(s3_server, bucket, raw,
                                                                  tmp_path, nursery):
    """Two kept rows of one path, the earlier killed in the middle of its multipart upload
    (the upload's id beside its spool, as kill -9 leaves it): the later row wins, and the
    earlier's upload is aborted once write-back serves, not left open (and billed) on the
    server; another key's open upload is left alone."""
    mount = S3Mount(make_backend(s3_server))
    journal = Journal(tmp_path / "state")
    spools = tmp_path / "spool"
    spools.mkdir()
    orphan = raw.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    other = raw.create_multipart_upload(Bucket=bucket, Key="other")["UploadId"]
    (spools / "0.spool").write_bytes(b"older")
    (spools / ("0.spool" + UPLOAD_SUFFIX)).write_text(json.dumps(
        {"bucket": bucket, "key": "k", "size": 5, "part_size": 5 << 20, "upload_id": orphan}))
    (spools / "1.spool").write_bytes(b"newer")
    for n in range(2):
        row = journal.add_sync("s3", f"{bucket}/k", str(spools / f"{n}.spool"))
        journal.set_sync(row, COMMITTING)
    vfs = VFS({"s3": mount}, spools, journal)
    assert await vfs.recover() == [("s3", f"{bucket}/k", "queued")] * 2
    assert os.listdir(spools) == ["1.spool"]  # the earlier spool and its marker are gone
    assert len(raw.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 2  # no request yet
    await nursery.start(vfs.write_back.serve)
    await vfs.write_back.drain()
    assert raw.get_object(Bucket=bucket, Key="k")["Body"].read() == b"newer"
    with trio.fail_after(10):
        while len(raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) > 1:
            await trio.sleep(0.05)
    left = raw.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in left] == [other]
    journal.close()


async def write_failing(vfs: VFS, mount: S3Mount, path: str, data: bytes, code: int) -> None:
    """Write ``path`` while every upload fails with ``code``; a close() error is expected
    only without write-back (then close() returns it)."""
    real = mount.commit

    async def failing(writer):
        raise McpfsError("refused", errno=code)
    mount.commit = failing
    head, _, name = path.rpartition("/")
    try:
        try:
            fh, _ = await vfs.open(await ino(vfs, path), os.O_WRONLY | os.O_TRUNC)
        except McpfsError:
            fh, _ = await vfs.create(await ino(vfs, head), name, os.O_WRONLY | os.O_CREAT)
        try:
            await vfs.write(fh, 0, data)
            await vfs.flush(fh)
        except McpfsError as exc:
            assert exc.errno == code
        finally:
            await vfs.release(fh)  # (the kernel releases after a failed close too)
        await vfs.write_back.drain()
    finally:
        mount.commit = real


async def restart_and_upload(s3_server, journal: Journal, spools) -> list:
    """The next start: what recovery does with the journal, its uploads run to the end."""
    vfs = VFS({"s3": S3Mount(make_backend(s3_server))}, spools, journal)
    async with trio.open_nursery() as nursery:
        outcome = await vfs.recover()
        await nursery.start(vfs.write_back.serve)
        await vfs.write_back.drain()
        nursery.cancel_scope.cancel()
    return outcome


async def test_a_failed_close_is_superseded_by_a_later_write_of_the_path(s3_server, bucket,
                                                                         raw, tmp_path):
    """Without write-back: a close() that returned EIO keeps its spool for the next start;
    writing the path again (it succeeds) supersedes it, so the next start does not put
    the older bytes back over the newer object."""
    mount = S3Mount(make_backend(s3_server))
    journal = Journal(tmp_path / "state")
    vfs = VFS({"s3": mount}, tmp_path / "spool", journal)
    path = f"s3/{bucket}/d"
    await write_failing(vfs, mount, path, b"o" * (400 << 10), errno.EIO)  # a row on disk
    assert [r.state for r in journal.pending()] == [FAILED]
    await write(vfs, path, b"newer")
    assert journal.pending() == [] and os.listdir(tmp_path / "spool") == []
    assert await restart_and_upload(s3_server, journal, tmp_path / "spool") == []
    assert raw.get_object(Bucket=bucket, Key="d")["Body"].read() == b"newer"
    journal.close()


async def test_a_second_refused_write_supersedes_the_first(wb, s3_server, raw, tmp_path):
    """Two refused write-backs of one path, then one that lands: nothing of the first two
    is replayed at the next start (the first is superseded by the second at once, the
    second by the write that landed)."""
    vfs, mount, journal, bucket = wb
    path = f"s3/{bucket}/d"
    for data in (b"first " * 50_000, b"second " * 50_000):
        await write_failing(vfs, mount, path, data, errno.EACCES)
        assert [r.state for r in journal.pending()] == [FAILED]
    await write(vfs, path, b"landed")
    await vfs.write_back.drain()
    assert journal.pending() == []
    assert await restart_and_upload(s3_server, journal, tmp_path / "spool") == []
    assert raw.get_object(Bucket=bucket, Key="d")["Body"].read() == b"landed"


@contextlib.asynccontextmanager
async def transfers_of(vfs: VFS, repo):
    """``mcpfs cp`` (the bridge's transfers) over ``vfs``, /ipfs of ``repo`` added."""
    bridge = build_bridge(paths().state_dir, repo, None, Stats())
    vfs.mounts.update({k: v for k, v in build_mounts(repo).items() if k == "ipfs"})
    vfs.bridge = bridge
    bridge.transfers = Transfers(bridge, vfs, paths().cache_dir)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.transfers.serve)
            yield bridge.transfers
            nursery.cancel_scope.cancel()
    finally:
        bridge.db.close()


async def test_mcpfs_cp_waits_for_a_pending_upload_of_its_destination(wb, raw, repo):
    """``mcpfs cp`` onto a file whose upload is still queued: the queued upload lands
    first, the copy after it, so the object ends as the copy."""
    vfs, mount, journal, bucket = wb
    first = trio.Event()
    real = mount.commit
    held = []

    async def hold_the_first(writer):  # the write-back's upload waits; later commits pass
        if not held:
            held.append(writer)
            await first.wait()
        return await real(writer)
    mount.commit = hold_the_first
    await write(vfs, f"s3/{bucket}/t", b"older, written through the mount")
    newer = add_bytes(repo, b"newer, copied by mcpfs cp").cid
    async with transfers_of(vfs, repo) as transfers:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transfers.submit, f"/ipfs/{newer}", f"/s3/{bucket}/t")
            await trio.testing.wait_all_tasks_blocked()
            assert len(held) == 1  # the copy has not gone ahead of the queued upload
            first.set()
        await transfers.wait(list(transfers.jobs))
    await vfs.write_back.drain()
    assert raw.get_object(Bucket=bucket, Key="t")["Body"].read() == b"newer, copied by mcpfs cp"


async def test_mcpfs_cp_of_or_over_an_upload_waiting_for_a_retry_is_ebusy(wb, raw, repo):
    """An upload that failed 4 times waits for its next round. ``mcpfs cp`` onto that path
    is EBUSY (dropped for the copy, it would be lost if the copy failed too; retried after,
    it would replace the copy), and so is copying from it (the server has only the older
    object). Nothing is lost: the round uploads it."""
    vfs, mount, journal, bucket = wb
    vfs.write_back.retry_later = 1.5  # the copies below come first
    raw.put_object(Bucket=bucket, Key="src", Body=b"older source")
    await write_until_retry_waits(vfs, mount, f"s3/{bucket}/src",
                                  b"source written through the mount")
    await write_until_retry_waits(vfs, mount, f"s3/{bucket}/dst",
                                  b"destination written through the mount")
    await vfs.mkdir(await ino(vfs, f"s3/{bucket}"), "dir")
    await write_until_retry_waits(vfs, mount, f"s3/{bucket}/dir/fresh", b"never uploaded")
    newer = add_bytes(repo, b"newer, copied by mcpfs cp").cid
    async with transfers_of(vfs, repo) as transfers:
        into = await transfers.submit(f"/ipfs/{newer}", f"/s3/{bucket}/dst")
        await transfers.wait(into)
        assert "not done yet" in str(transfers.jobs[into[0]].error)
        for src, recursive in ((f"/s3/{bucket}/src", False), (f"/s3/{bucket}/dir/fresh", False),
                               (f"/s3/{bucket}/dir", True)):  # (dir/fresh: not on the server)
            with pytest.raises(McpfsError) as err:
                await transfers.submit(src, f"/s3/{bucket}/copied", recursive)
            assert err.value.errno == errno.EBUSY
    with trio.fail_after(10):
        while journal.pending():
            await trio.sleep(0.05)
    assert raw.get_object(Bucket=bucket, Key="dst")["Body"].read() == \
        b"destination written through the mount"
    assert raw.get_object(Bucket=bucket, Key="src")["Body"].read() == \
        b"source written through the mount"
    assert "Contents" not in raw.list_objects_v2(Bucket=bucket, Prefix="cop")
    assert raw.get_object(Bucket=bucket, Key="dir/fresh")["Body"].read() == b"never uploaded"


async def test_a_reader_open_at_the_retry_round_puts_it_off_not_for_good(wb, raw):
    """A reader holding a file whose upload waits for its retry when the round comes: the
    round is put off (it used to end the retries for the run), and the upload lands."""
    vfs, mount, journal, bucket = wb
    vfs.write_back.retry_later = 0.3
    await write_until_retry_waits(vfs, mount, f"s3/{bucket}/r", b"written through the mount")
    fh, _ = await vfs.open(await ino(vfs, f"s3/{bucket}/r"), os.O_RDONLY)
    await trio.sleep(0.5)  # the round comes while it is open
    assert await vfs.read(fh, 0, 100) == b"written through the mount"
    await vfs.release(fh)
    with trio.fail_after(10):
        while journal.pending():
            await trio.sleep(0.05)
    assert raw.get_object(Bucket=bucket, Key="r")["Body"].read() == \
        b"written through the mount"
