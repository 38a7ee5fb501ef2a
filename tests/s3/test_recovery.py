"""The journal's retry of an /s3 commit (vfs/recovery.py over mounts/s3.py), without FUSE:
a commit that had completed before the crash, and the multipart resume state beside the
spool (stale, gone, or with a corrupt part). The kill -9 itself is in
tests/fuse/test_s3_mount.py."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time

import botocore.exceptions
import pytest
import trio
import trio.testing

from mcpfs.backends.s3 import UPLOAD_SUFFIX
from mcpfs.errors import McpfsError
from mcpfs.mounts.s3 import S3Mount
from mcpfs.vfs.journal import COMMITTING, Journal
from mcpfs.vfs.recovery import recover

from .conftest import make_backend

MiB = 1 << 20


def spool_with(tmp_path, data: bytes) -> str:
    folder = tmp_path / "spool"
    folder.mkdir(exist_ok=True)
    path = folder / "x.spool"
    path.write_bytes(data)
    return str(path)


async def test_retry_of_a_completed_new_file_commit(s3_server, bucket, raw, tmp_path):
    """The object is already there (the first attempt completed, then the process died
    before removing the row): the retry must not lose to its own If-None-Match."""
    mount = S3Mount(make_backend(s3_server))  # if_none_match is on by default
    assert mount.backend.config.if_none_match
    data = os.urandom(10 * MiB)  # multipart: the conditional CompleteMultipartUpload
    raw.put_object(Bucket=bucket, Key="new.bin", Body=data)
    journal = Journal(tmp_path / "state")
    row = journal.add_sync("s3", f"{bucket}/new.bin", spool_with(tmp_path, data))
    journal.set_sync(row, COMMITTING)
    assert await recover({"s3": mount}, journal) == [("s3", f"{bucket}/new.bin", "committed")]
    assert raw.get_object(Bucket=bucket, Key="new.bin")["Body"].read() == data
    assert journal.pending() == [] and os.listdir(tmp_path / "spool") == []


async def test_resume_resends_only_missing_or_corrupt_parts(s3_server, bucket, raw, tmp_path):
    mount = S3Mount(make_backend(s3_server, part_size=5 * MiB))
    data = os.urandom(23 * MiB)  # 5 parts: 4 x 5 MiB + 3 MiB
    spool = spool_with(tmp_path, data)
    up = raw.create_multipart_upload(Bucket=bucket, Key="r.bin")["UploadId"]
    raw.upload_part(Bucket=bucket, Key="r.bin", UploadId=up, PartNumber=1,
                    Body=data[:5 * MiB])
    raw.upload_part(Bucket=bucket, Key="r.bin", UploadId=up, PartNumber=2,
                    Body=b"corrupt" + data[5 * MiB + 7:10 * MiB])  # right size, wrong bytes
    with open(spool + UPLOAD_SUFFIX, "w") as fh:
        json.dump({"bucket": bucket, "key": "r.bin", "upload_id": up, "size": len(data),
                   "part_size": 5 * MiB}, fh)
    journal = Journal(tmp_path / "state")
    row = journal.add_sync("s3", f"{bucket}/r.bin", spool)
    journal.set_sync(row, COMMITTING)
    assert await recover({"s3": mount}, journal) == [("s3", f"{bucket}/r.bin", "committed")]
    got = raw.get_object(Bucket=bucket, Key="r.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert os.listdir(tmp_path / "spool") == []  # spool and sidecar


async def test_stale_or_vanished_upload_starts_afresh(s3_server, bucket, raw, tmp_path):
    mount = S3Mount(make_backend(s3_server))
    data = os.urandom(9 * MiB)
    spool = spool_with(tmp_path, data)
    stale = raw.create_multipart_upload(Bucket=bucket, Key="s.bin")["UploadId"]
    with open(spool + UPLOAD_SUFFIX, "w") as fh:  # recorded for another size: aborted
        json.dump({"bucket": bucket, "key": "s.bin", "upload_id": stale, "size": 1,
                   "part_size": 8 * MiB}, fh)
    await mount.backend.upload_file(bucket, "s.bin", spool, len(data))
    assert raw.get_object(Bucket=bucket, Key="s.bin")["Body"].read() == data
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with open(spool + UPLOAD_SUFFIX, "w") as fh:  # an upload id the server no longer has
        json.dump({"bucket": bucket, "key": "s.bin", "upload_id": stale, "size": len(data),
                   "part_size": 8 * MiB}, fh)
    await mount.backend.upload_file(bucket, "s.bin", spool, len(data))
    assert not os.path.exists(spool + UPLOAD_SUFFIX)
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_discarded_row_removes_the_sidecar(s3_server, tmp_path):
    journal = Journal(tmp_path / "state")
    spool = spool_with(tmp_path, b"partial")
    open(spool + UPLOAD_SUFFIX, "w").close()
    journal.add_sync("s3", "b/never-closed", spool)  # an "open" row
    assert await recover({"s3": S3Mount(make_backend(s3_server))}, journal) == [
        ("s3", "b/never-closed", "discarded")]
    assert os.listdir(tmp_path / "spool") == []


async def test_an_upload_whose_id_was_never_recorded_is_aborted(s3_server, bucket, raw,
                                                                tmp_path, monkeypatch):
    """Killed between CreateMultipartUpload and recording its id: the retry finds the
    marker written before the request and aborts the key's uploads begun since; another
    key's upload is left alone."""
    from mcpfs.backends import s3_upload
    mount = S3Mount(make_backend(s3_server))
    data = os.urandom(9 * MiB)
    spool = spool_with(tmp_path, data)
    other = raw.create_multipart_upload(Bucket=bucket, Key="other.bin")["UploadId"]
    real = s3_upload._write_marker

    def killed(marker, state):
        if "upload_id" in state:
            raise KeyboardInterrupt  # the process dies: nothing after this runs
        real(marker, state)
    monkeypatch.setattr(s3_upload, "_write_marker", killed)
    try:
        await mount.backend.upload_file(bucket, "k.bin", spool, len(data))
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    open_now = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert sorted(u["Key"] for u in open_now) == ["k.bin", "other.bin"]  # the orphan
    journal = Journal(tmp_path / "state")
    row = journal.add_sync("s3", f"{bucket}/k.bin", spool)
    journal.set_sync(row, COMMITTING)
    assert await recover({"s3": mount}, journal) == [("s3", f"{bucket}/k.bin", "committed")]
    assert raw.get_object(Bucket=bucket, Key="k.bin")["Body"].read() == data
    left = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other]


async def _copy_killed(s3_server, bucket, raw, markers, monkeypatch, recorded: bool):
    """A multipart copy of a 9 MiB object whose process "dies" when it records the upload
    id, after writing it or before (KeyboardInterrupt there; the abort and marker removal
    the copy would then run are made to do nothing, as after kill -9)."""
    from mcpfs.backends import s3_copy
    monkeypatch.setattr(s3_copy, "MAX_COPY_SIZE", 8 * MiB)
    monkeypatch.setattr(s3_copy, "COPY_PART_MIN", 5 * MiB)
    data = os.urandom(9 * MiB)
    raw.put_object(Bucket=bucket, Key="big.bin", Body=data)
    backend = make_backend(s3_server, copy_markers=markers)
    real = s3_copy._write_marker

    def killed(marker, state):
        if "upload_id" in state:
            if recorded:
                real(marker, state)
            raise KeyboardInterrupt
        real(marker, state)

    async def dead(*args, **kwargs):  # the process is gone: no abort, no clean-up
        return True
    monkeypatch.setattr(s3_copy, "_write_marker", killed)
    monkeypatch.setattr(backend, "_abort", dead)
    monkeypatch.setattr(backend, "_unmark", dead)
    try:
        await backend.copy(bucket, "big.bin", bucket, "moved.bin", len(data))
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    return data


async def test_a_copy_killed_midway_is_aborted_at_the_next_start(s3_server, bucket, raw,
                                                                 tmp_path, monkeypatch):
    """A rename of an object above CopyObject's limit is a multipart copy; the daemon
    killed during it leaves a marker naming its upload, which the next start's warm-up
    aborts (the source whole, no destination, another upload untouched)."""
    markers = tmp_path / "state" / "s3-copies"
    other = raw.create_multipart_upload(Bucket=bucket, Key="other.bin")["UploadId"]
    data = await _copy_killed(s3_server, bucket, raw, markers, monkeypatch, recorded=True)
    open_now = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert sorted(u["Key"] for u in open_now) == ["moved.bin", "other.bin"]  # the orphan
    assert len(list(markers.iterdir())) == 1
    restarted = S3Mount(make_backend(s3_server, copy_markers=markers))
    async with trio.open_nursery() as nursery:  # the daemon's start: the mount's warm-up
        nursery.start_soon(restarted.warm)
        with trio.fail_after(10):
            while list(markers.iterdir()):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    left = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other]
    assert list(markers.iterdir()) == []
    assert raw.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    assert "moved.bin" not in [o["Key"] for o in raw.list_objects_v2(
        Bucket=bucket).get("Contents", [])]
    assert await restarted.backend.abort_interrupted_copies() == 0  # done once


async def test_a_copy_killed_before_recording_its_id_is_aborted(s3_server, bucket, raw,
                                                                tmp_path, monkeypatch):
    """Killed between CreateMultipartUpload and recording its id: the marker written
    before the request makes the next start abort the key's uploads begun then."""
    markers = tmp_path / "state" / "s3-copies"
    await _copy_killed(s3_server, bucket, raw, markers, monkeypatch, recorded=False)
    assert [u["Key"] for u in raw.list_multipart_uploads(Bucket=bucket).get(
        "Uploads", [])] == ["moved.bin"]
    restarted = make_backend(s3_server, copy_markers=markers)
    assert await restarted.abort_interrupted_copies() == 1
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(markers.iterdir()) == []


async def test_an_id_less_marker_spares_uploads_begun_long_after_it(s3_server, bucket, raw,
                                                                    tmp_path):
    """The key's uploads are aborted only near the marker's time: one begun an hour later
    (another client, a later copy) is not the one the killed process made."""
    markers = tmp_path / "state" / "s3-copies"
    markers.mkdir(parents=True)
    later = raw.create_multipart_upload(Bucket=bucket, Key="k.bin")["UploadId"]
    (markers / "1-a.json").write_text(json.dumps(
        {"bucket": bucket, "key": "k.bin", "started": time.time() - 3600}))
    (markers / "2-b.json.tmp").write_text('{"bucket": "torn')  # a write cut short
    backend = make_backend(s3_server, copy_markers=markers)
    assert await backend.abort_interrupted_copies() == 2
    assert [u["UploadId"] for u in raw.list_multipart_uploads(Bucket=bucket).get(
        "Uploads", [])] == [later]
    assert list(markers.iterdir()) == []


async def test_a_marker_whose_abort_fails_waits_for_the_next_start(s3_server, bucket, raw,
                                                                  tmp_path, monkeypatch):
    """Offline or denied at start: the marker stays, and the next start aborts."""
    markers = tmp_path / "state" / "s3-copies"
    await _copy_killed(s3_server, bucket, raw, markers, monkeypatch, recorded=True)
    first = make_backend(s3_server, copy_markers=markers)

    def down(**kwargs):
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "no"}}, "AbortMultipartUpload")
    monkeypatch.setattr(first.client, "abort_multipart_upload", down)
    assert await first.abort_interrupted_copies() == 1
    assert len(list(markers.iterdir())) == 1
    assert len(raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    second = make_backend(s3_server, copy_markers=markers)
    assert await second.abort_interrupted_copies() == 1
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(markers.iterdir()) == []


def _big_source(raw, bucket, monkeypatch) -> bytes:
    from mcpfs.backends import s3_copy
    monkeypatch.setattr(s3_copy, "MAX_COPY_SIZE", 8 * MiB)
    monkeypatch.setattr(s3_copy, "COPY_PART_MIN", 5 * MiB)
    data = os.urandom(9 * MiB)
    raw.put_object(Bucket=bucket, Key="big.bin", Body=data)
    return data


async def test_copies_that_end_leave_no_marker(s3_server, bucket, raw, tmp_path,
                                               monkeypatch):
    """A multipart copy that completes, one that fails midway (its source deleted), one
    cancelled just as its upload was created, and one refused at creation leave neither a
    marker nor an open upload; one whose creation failed in a way that may have left an
    upload (a 500) keeps its marker for the next start."""
    markers = tmp_path / "state" / "s3-copies"
    data = _big_source(raw, bucket, monkeypatch)
    backend = make_backend(s3_server, copy_markers=markers)
    await backend.copy(bucket, "big.bin", bucket, "copy.bin", len(data))
    assert raw.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == data
    assert list(markers.iterdir()) == []

    def gone(**kwargs):  # the source deleted while its parts are copied
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "UploadPartCopy")
    monkeypatch.setattr(backend.client, "upload_part_copy", gone)
    with pytest.raises(McpfsError) as info:
        await backend.copy(bucket, "big.bin", bucket, "copy2.bin", len(data))
    assert info.value.errno == errno.ENOENT
    assert list(markers.iterdir()) == []
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    real_create = backend.client.create_multipart_upload
    with trio.CancelScope() as scope:
        def create_then_cancel(**kwargs):  # SIGTERM while the request runs
            out = real_create(**kwargs)
            trio.from_thread.run_sync(scope.cancel)
            return out
        monkeypatch.setattr(backend.client, "create_multipart_upload", create_then_cancel)
        await backend.copy(bucket, "big.bin", bucket, "copy3.bin", len(data))
    assert scope.cancelled_caught
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(markers.iterdir()) == []

    for code, kept in (("AccessDenied", 0), ("InternalError", 1)):
        def refused(code=code, **kwargs):
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": code, "Message": "no"},
                 "ResponseMetadata": {"HTTPStatusCode": 403 if kept == 0 else 500}},
                "CreateMultipartUpload")
        monkeypatch.setattr(backend.client, "create_multipart_upload", refused)
        with pytest.raises(McpfsError):
            await backend.copy(bucket, "big.bin", bucket, "copy4.bin", len(data))
        assert (code, len(list(markers.iterdir()))) == (code, kept)


async def test_a_copy_waits_for_the_pass_over_left_markers(s3_server, bucket, raw, tmp_path,
                                                           monkeypatch):
    """Right after a restart a copy to the key a left marker names (a bridge transfer
    resumed) must not begin its upload before that marker is handled, or the pass would
    take the new upload for the one the killed process made and abort it."""
    markers = tmp_path / "state" / "s3-copies"
    markers.mkdir(parents=True)
    (markers / "1-a.json").write_text(json.dumps(
        {"bucket": bucket, "key": "moved.bin", "started": time.time()}))
    data = _big_source(raw, bucket, monkeypatch)
    backend = make_backend(s3_server, copy_markers=markers)
    gate = trio.Event()
    real = backend._abort_unrecorded

    async def slow(state):  # the server is slow to list at start
        await gate.wait()
        return await real(state)
    monkeypatch.setattr(backend, "_abort_unrecorded", slow)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.abort_interrupted_copies)  # the warm-up's pass
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(backend.copy, bucket, "big.bin", bucket, "moved.bin", len(data))
        await trio.testing.wait_all_tasks_blocked()
        assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        gate.set()
    assert raw.get_object(Bucket=bucket, Key="moved.bin")["Body"].read() == data
    assert list(markers.iterdir()) == []


async def test_a_row_behind_a_server_is_never_given_up(s3_server, bucket, raw, tmp_path):
    """However many runs failed to upload it (a server down for days, a laptop restarted
    often), an /s3 row is tried again at every start: the limit of failed runs is /mfs's
    (a local commit that fails, fails again)."""
    from mcpfs.vfs.journal import FAILED
    from mcpfs.vfs.recovery import MAX_ATTEMPTS
    mount = S3Mount(make_backend(s3_server))
    journal = Journal(tmp_path / "state")
    row = journal.add_sync("s3", f"{bucket}/late", spool_with(tmp_path, b"still here"))
    for _ in range(MAX_ATTEMPTS + 2):
        journal.set_sync(row, FAILED)
    assert await recover({"s3": mount}, journal) == [("s3", f"{bucket}/late", "committed")]
    assert raw.get_object(Bucket=bucket, Key="late")["Body"].read() == b"still here"
