"""Content identities without a kernel: the read tracker (order, gaps, re-reads), the
streaming import's failure path, and the provenance DB."""

from __future__ import annotations

import random

import pytest

from mcpfs.backends.ipfs.blockstore import NullBlockstore
from mcpfs.backends.ipfs.importer import PROFILES, ImportParams, import_bytes
from mcpfs.backends.ipfs.stream_import import StreamImport
from mcpfs.bridge.db import DONE, RUNNING, Location, ProvenanceDB
from mcpfs.bridge.identity import INLINE_MAX, ReadTracker
from tests.conftest import pattern_bytes

PIECE = 128 * 1024


def cid_of(data: bytes, params: ImportParams | None = None) -> str:
    return str(import_bytes(NullBlockstore(), data, params or ImportParams()).cid)


def tracker(size: int, done: list, params: ImportParams | None = None) -> ReadTracker:
    return ReadTracker("/s3/b/k", "etag", size, params or ImportParams(),
                       lambda t, cid: done.append(cid))


@pytest.mark.parametrize("size", [0, 1, 100_000, INLINE_MAX, INLINE_MAX + 1, 3_000_000])
def test_in_order_reads_give_the_cid_of_the_bytes(size):
    data = pattern_bytes(size, size % 7)
    done: list[str] = []
    t = tracker(size, done)
    for off in range(0, size, PIECE):
        t.on_read(off, data[off:off + PIECE])
    t.on_read(size, b"")  # the read at the end returns nothing
    t.close(0.0)
    assert t.wait(10) == cid_of(data)
    assert done == [cid_of(data)]


def test_out_of_order_reads_within_the_window_and_re_reads():
    data = pattern_bytes(5_000_000, 3)
    pieces = [(off, data[off:off + PIECE]) for off in range(0, len(data), PIECE)]
    rng = random.Random(1)
    shuffled = []
    for i in range(0, len(pieces), 8):  # the kernel's read-ahead: a few at a time, any order
        batch = pieces[i:i + 8]
        rng.shuffle(batch)
        shuffled += batch
    shuffled.insert(20, pieces[3])  # a re-read of something already hashed
    done: list[str] = []
    t = tracker(len(data), done, PROFILES["unixfs-v1-2025"])
    for off, piece in shuffled:
        t.on_read(off, piece)
    assert t.wait(10) == cid_of(data, PROFILES["unixfs-v1-2025"])
    assert done == [cid_of(data, PROFILES["unixfs-v1-2025"])]


def test_a_gap_or_an_early_close_leaves_no_identity():
    data = pattern_bytes(2_000_000, 4)
    done: list[str] = []
    gap = tracker(len(data), done)
    for off in range(0, len(data), PIECE):
        if off != 2 * PIECE:  # never read: the window fills, tracking gives up
            gap.on_read(off, data[off:off + PIECE])
    gap.close(0.0)
    assert gap.wait(1) is None and not gap.read_from_start
    early = tracker(len(data), done)
    early.on_read(0, data[:PIECE])
    early.on_read(PIECE, data[PIECE:2 * PIECE])
    early.close(0.0)
    assert early.wait(1) is None
    assert done == []


def test_a_failing_stream_import_reports_none_without_hanging():
    def boom(pieces):
        next(iter(pieces))
        raise OSError("disk on fire")
    stream = StreamImport(boom, queue_pieces=2)
    for _ in range(10):  # the feeder is unblocked after the failure
        stream.feed(b"x" * 1000)
    assert stream.finish(timeout=10) is None
    assert stream.failed


def test_provenance_db_records_renames_forgets_and_keeps_transfers(tmp_path):
    db = ProvenanceDB(tmp_path)
    db.record(Location("/mfs/a", "QmA", "QmA", 10))
    db.record(Location("/s3/b/a", "QmA", "etag1", 10, "/mfs/a"))
    db.record(Location("/s3/b/x", "QmX", "etag2", 5))
    assert db.cached("/s3/b/a").source == "/mfs/a"
    db.rename("/s3/b/a", "/s3/b/renamed")
    db.forget("/s3/b/x")
    assert [r.location for r in db.locations_sync("QmA")] == ["/mfs/a", "/s3/b/renamed"]
    tid = db.add_transfer_sync("/ipfs/Qm", "/s3/b/k", 100)
    db.update_transfer_sync(tid, done=40)
    db.close()
    again = ProvenanceDB(tmp_path)  # a restart: everything was committed
    assert again.lookup_sync("/s3/b/renamed").identity == "QmA"
    assert again.lookup_sync("/s3/b/x") is None
    [row] = again.transfers_sync(RUNNING)
    assert (row.src, row.dst, row.done, row.total) == ("/ipfs/Qm", "/s3/b/k", 40, 100)
    again.update_transfer_sync(tid, state=DONE)
    assert again.transfers_sync(RUNNING) == []
    again.close()


def test_provenance_rows_of_a_burst_share_one_transaction(tmp_path, monkeypatch):
    """Small files written one after the other are recorded 20 ms apart at most, so their
    rows reach SQLite together (COALESCE), not one transaction per file."""
    import time

    db = ProvenanceDB(tmp_path)
    commits: list[int] = []
    real = db._commit_rows
    monkeypatch.setattr(db, "_commit_rows", lambda batch: (commits.append(len(batch)),
                                                           real(batch)))
    for i in range(10):  # ~10 ms in all: a row every ~1 ms, as a create loop makes them
        db.record(Location(f"/mfs/f{i}", f"Qm{i}", f"Qm{i}", 1))
        time.sleep(0.001)
    db.flush()
    assert sum(commits) == 10
    assert len(commits) <= 2, commits  # without coalescing: about one per row
    assert db.lookup_sync("/mfs/f9").identity == "Qm9"
    db.close()
