"""The bridge in vfs/ without a kernel: a process that reads a file and writes the same
bytes elsewhere (what cp does) gets the native route; other writes are unchanged."""

from __future__ import annotations

import dataclasses
import os

import pytest
import trio

from mcpfs.backends.ipfs.importer import PROFILES
from mcpfs.backends.ipfs.stream_import import StreamImport
from mcpfs.bridge import Bridge, ProvenanceDB
from mcpfs.config import paths
from mcpfs.mounts import build_mounts
from mcpfs.vfs import VFS
from tests.conftest import pattern_bytes
from tests.vfs.conftest import Driver, add_bytes, only_hash

PID = 4242


@pytest.fixture
def bridged(repo, journal):
    db = ProvenanceDB(paths().state_dir)
    bridge = Bridge(db, repo.mfs_params, repo=repo, mfs_params=repo.mfs_params)
    vfs = VFS(build_mounts(repo), paths().cache_dir / "spool", journal, bridge)
    yield Driver(vfs, repo), bridge
    db.close()


async def copy(drv: Driver, src: str, dst: str, data: bytes | None = None,
               pid: int = PID, piece: int = 128 * 1024) -> None:
    """cp: open src, create dst, read/write in pieces, close dst, close src. ``data``:
    write these bytes instead of what was read."""
    rfh, _ = await drv.vfs.open(await drv.ino(src), os.O_RDONLY, pid)
    parent, name = await drv.parent(dst)
    wfh, _ = await drv.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT, pid)
    off = 0
    while chunk := await drv.vfs.read(rfh, off, piece):
        await drv.vfs.write(wfh, off, chunk if data is None else data[off:off + len(chunk)])
        off += len(chunk)
    await drv.vfs.flush(wfh)
    await drv.vfs.release(wfh)
    await drv.vfs.release(rfh)


def block_count(repo) -> int:
    return sum(1 for _ in repo.flatfs.cids())


async def test_copy_from_ipfs_links_the_source_dag(bridged, repo):
    drv, bridge = bridged
    data = pattern_bytes(3_000_000, 1)
    cid = str(add_bytes(repo, data, PROFILES["unixfs-v1-2025"]).cid)
    before = block_count(repo)
    await copy(drv, f"ipfs/{cid}", "mfs/c.bin")
    assert (await drv.stat("mfs/c.bin")).attr.cid_text == cid
    assert block_count(repo) == before + 1  # MFS's new root directory only
    assert await drv.vfs.getxattr(await drv.ino("mfs/c.bin"), "user.mcpfs.source") == \
        f"/ipfs/{cid}".encode()
    assert await drv.cat("mfs/c.bin") == data


async def test_same_length_other_bytes_are_imported_as_written(bridged, repo):
    drv, _ = bridged
    data, other = pattern_bytes(1_000_000, 1), pattern_bytes(1_000_000, 2)
    cid = str(add_bytes(repo, data, PROFILES["unixfs-v1-2025"]).cid)
    await copy(drv, f"ipfs/{cid}", "mfs/o.bin", data=other)
    assert (await drv.stat("mfs/o.bin")).attr.cid_text == only_hash(other)
    assert await drv.cat("mfs/o.bin") == other
    assert await drv.errno_of(drv.vfs.getxattr(await drv.ino("mfs/o.bin"),
                                               "user.mcpfs.source")) == 61  # ENODATA


async def test_another_process_writing_is_not_a_copy(bridged, repo):
    drv, _ = bridged
    data = pattern_bytes(600_000, 5)
    cid = str(add_bytes(repo, data, PROFILES["unixfs-v1-2025"]).cid)
    rfh, _ = await drv.vfs.open(await drv.ino(f"ipfs/{cid}"), os.O_RDONLY, PID)
    assert await drv.vfs.read(rfh, 0, 1 << 20) == data
    await drv.write_file("mfs/w.bin", data)  # pid None: not matched to the reader
    await drv.vfs.release(rfh)
    assert (await drv.stat("mfs/w.bin")).attr.cid_text == only_hash(data)


async def test_a_file_of_another_size_is_not_compared_with_what_was_read(bridged, monkeypatch):
    """A process that read a file and then writes files of another size (a script's loop
    after a read) is not copying it: no hashing of what it writes to compare."""
    drv, bridge = bridged
    await drv.write_file("mfs/src.txt", b"x")
    rfh, _ = await drv.vfs.open(await drv.ino("mfs/src.txt"), os.O_RDONLY, PID)
    assert await drv.vfs.read(rfh, 0, 10) == b"x"
    await drv.vfs.release(rfh)
    hashed = []
    identity_of_spool = bridge._identity_of_spool

    async def counting(spool):
        hashed.append(spool)
        return await identity_of_spool(spool)
    monkeypatch.setattr(bridge, "_identity_of_spool", counting)
    for i in range(3):
        parent, name = await drv.parent(f"mfs/n{i}")
        wfh, _ = await drv.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT, PID)
        await drv.vfs.write(wfh, 0, b"y" * 1024)
        await drv.vfs.flush(wfh)
        await drv.vfs.release(wfh)
    assert hashed == []
    assert await drv.cat("mfs/n1") == b"y" * 1024
    assert (await drv.stat("mfs/n1")).attr.cid_text == only_hash(b"y" * 1024)


async def test_a_partly_read_source_is_not_waited_for(bridged, monkeypatch):
    """A file the process read only partly and closed has no identity, and never will:
    a new file of the same size is hashed on the spot (small, in memory) and compared
    without a thread waiting for the source."""
    from mcpfs.bridge.identity import ReadTracker
    drv, bridge = bridged
    await drv.write_file("mfs/src.txt", b"s" * 1024)
    rfh, _ = await drv.vfs.open(await drv.ino("mfs/src.txt"), os.O_RDONLY, PID)
    assert await drv.vfs.read(rfh, 0, 1) == b"s"
    await drv.vfs.release(rfh)
    waits, hops = [], []
    monkeypatch.setattr(ReadTracker, "wait", lambda self, timeout: waits.append(self))
    thread = bridge._thread

    async def counting(fn):
        hops.append(fn)
        return await thread(fn)
    monkeypatch.setattr(bridge, "_thread", counting)
    for i in range(2):  # the first also hashes the source's DAG once (then recorded)
        hops.clear()
        parent, name = await drv.parent(f"mfs/n{i}.txt")
        wfh, _ = await drv.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT, PID)
        await drv.vfs.write(wfh, 0, b"n" * 1024)
        await drv.vfs.flush(wfh)
        await drv.vfs.release(wfh)
    assert waits == [] and hops == []
    assert (await drv.stat("mfs/n1.txt")).attr.cid_text == only_hash(b"n" * 1024)


async def test_reads_and_commits_are_recorded(bridged, repo):
    drv, bridge = bridged
    data = pattern_bytes(2_000_000, 8)
    await drv.write_file("mfs/r.bin", data)
    cid = (await drv.stat("mfs/r.bin")).attr.cid_text
    assert bridge.db.cached("/mfs/r.bin").identity == cid
    other = str(add_bytes(repo, data, PROFILES["unixfs-v1-2025"]).cid)
    assert await drv.cat(f"ipfs/{other}") == data
    for _ in range(100):  # the hash of a read ends in its own thread, shortly after
        if bridge.db.cached(f"/ipfs/{other}") is not None:
            break
        await trio.sleep(0.05)
    bridge.db.flush()
    assert bridge.db.lookup_sync(f"/ipfs/{other}").identity == cid  # same bytes
    assert {r.location for r in bridge.db.locations_sync(cid)} >= {
        "/mfs/r.bin", f"/ipfs/{cid}", f"/ipfs/{other}"}


async def test_a_dag_in_the_profiles_form_is_not_hashed_again_when_read(bridged, repo,
                                                                       monkeypatch):
    """/ipfs and /mfs serve a local DAG's bytes: when its CID has the profile's form, the
    read is not hashed (a CIDv1 DAG under a CIDv0 profile still is:
    test_reads_and_commits_are_recorded); a copy compares that CID with its own identity."""
    drv, bridge = bridged
    data = pattern_bytes(2_000_000, 9)
    cid = str(add_bytes(repo, data, bridge.params).cid)  # added outside: nothing recorded
    hashed = []
    real = StreamImport.hashing

    def counting(*args, **kwargs):
        hashed.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(StreamImport, "hashing", staticmethod(counting))
    rfh, _ = await drv.vfs.open(await drv.ino(f"ipfs/{cid}"), os.O_RDONLY, PID)
    off = 0
    while chunk := await drv.vfs.read(rfh, off, 128 * 1024):
        off += len(chunk)
    assert off == len(data)
    assert drv.vfs.handles.get(rfh).tracker.settled
    await drv.vfs.release(rfh)
    assert hashed == []
    await copy(drv, f"ipfs/{cid}", "mfs/c.bin")  # a copy of it is still recognised
    assert await drv.vfs.getxattr(await drv.ino("mfs/c.bin"), "user.mcpfs.source") == \
        f"/ipfs/{cid}".encode()
    bridge.db.flush()
    assert bridge.db.lookup_sync("/mfs/c.bin").identity == cid  # the profile's, not assumed


async def test_a_dag_of_the_profiles_form_made_otherwise_gets_its_true_identity(bridged,
                                                                               repo):
    """A CIDv0 DAG of other chunking: its CID is not the profile's identity of its bytes. A
    copy of it links the DAG, and the profile's identity is recorded once the DAG is hashed
    in the background (until then the DAG's CID stands, as for any link: after_commit)."""
    drv, bridge = bridged
    data = pattern_bytes(700_000, 10)
    other = str(add_bytes(repo, data, dataclasses.replace(bridge.params,
                                                          chunk_size=100_000)).cid)
    true = only_hash(data)
    assert other != true and other.startswith("Qm")
    await copy(drv, f"ipfs/{other}", "mfs/o.bin")
    with trio.fail_after(10):
        while bridge.db.cached("/mfs/o.bin").identity != true:
            await trio.sleep(0.02)
    bridge.db.flush()
    assert bridge.db.lookup_sync("/mfs/o.bin").identity == true
    assert bridge.db.lookup_sync(f"/ipfs/{other}").identity == true


# ---------------------------------------------------------------- checked copies
async def open_copy(drv: Driver, src: str, dst: str, pid: int = PID):
    """Open src for reading and create dst, as cp does before its first read."""
    rfh, _ = await drv.vfs.open(await drv.ino(src), os.O_RDONLY, pid)
    parent, name = await drv.parent(dst)
    wfh, _ = await drv.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT, pid)
    return rfh, wfh


async def close_copy(drv: Driver, rfh: int, wfh: int) -> None:
    await drv.vfs.flush(wfh)
    await drv.vfs.release(wfh)
    await drv.vfs.release(rfh)


async def test_a_checked_copy_writes_nothing_locally(bridged, repo):
    drv, _ = bridged
    data = pattern_bytes(3_000_000, 4)
    cid = str(add_bytes(repo, data, PROFILES["unixfs-v1-2025"]).cid)
    rfh, wfh = await open_copy(drv, f"ipfs/{cid}", "mfs/k.bin")
    of = drv.vfs.handles.get(wfh).open_file
    assert of.copycheck is not None
    off = 0
    while chunk := await drv.vfs.read(rfh, off, 256 * 1024):
        for i in range(0, len(chunk), 64 * 1024):  # the kernel's splice: 64 KiB writes
            await drv.vfs.write(wfh, off + i, chunk[i:i + 64 * 1024])
        off += len(chunk)
    assert of.copycheck is not None and of.spool.in_memory and await of.spool.size() == 0
    assert (await drv.stat("mfs/k.bin")).attr.size == len(data)  # pending: its local size
    await close_copy(drv, rfh, wfh)
    assert (await drv.stat("mfs/k.bin")).attr.cid_text == cid
    assert await drv.cat("mfs/k.bin") == data


@pytest.mark.parametrize("case", ["diverges", "shorter", "read back", "truncated"])
async def test_a_checked_copy_that_stops_being_one_keeps_every_byte(bridged, repo, case):
    drv, _ = bridged
    data = pattern_bytes(2_000_000, 6)
    cid = str(add_bytes(repo, data, PROFILES["unixfs-v1-2025"]).cid)
    rfh, wfh = await open_copy(drv, f"ipfs/{cid}", "mfs/d.bin")
    expected = bytearray()
    off = 0
    while chunk := await drv.vfs.read(rfh, off, 128 * 1024):
        if case == "diverges" and off >= 1_000_000:
            chunk = bytes(len(chunk))  # zeros instead of the source's bytes
        if case == "shorter" and off >= 1_200_000:
            break
        await drv.vfs.write(wfh, off, chunk)
        expected += chunk
        off += len(chunk)
        if case == "read back" and off >= 500_000 and off - len(chunk) < 500_000:
            other, _ = await drv.vfs.open(await drv.ino("mfs/d.bin"), os.O_RDONLY)
            assert await drv.vfs.read(other, 0, off) == bytes(expected)
            await drv.vfs.release(other)
        if case == "truncated" and off >= 900_000 and len(expected) == off and \
                not getattr(drv, "truncated", False):
            drv.truncated = True
            await drv.vfs.setattr(await drv.ino("mfs/d.bin"), size=700_000, fh=wfh)
            del expected[700_000:]
            off = 700_000
    await close_copy(drv, rfh, wfh)
    assert await drv.cat("mfs/d.bin") == bytes(expected)
    # the same bytes in the end (read back): still the source's DAG, found by hashing
    assert (await drv.stat("mfs/d.bin")).attr.cid_text == (
        cid if bytes(expected) == data else only_hash(bytes(expected)))


async def test_a_checked_copy_whose_source_changed_keeps_what_was_read(bridged, repo):
    """A checked copy that falls back re-reads the prefix it accepted: from the DAG that
    was read (by CID), not from the /mfs path, which names other bytes by now."""
    drv, _ = bridged
    data, other = pattern_bytes(1_000_000, 31), pattern_bytes(1_000_000, 32)
    await drv.write_file("mfs/src.bin", data)
    rfh, wfh = await open_copy(drv, "mfs/src.bin", "mfs/dst.bin")
    assert drv.vfs.handles.get(wfh).open_file.copycheck is not None
    off = 0
    while off < 500_000:
        chunk = await drv.vfs.read(rfh, off, 100_000)
        await drv.vfs.write(wfh, off, chunk)
        off += len(chunk)
    await drv.write_file("mfs/src.bin", other)  # the source path now names other bytes
    await drv.vfs.write(wfh, off, b"tail")  # not the source's next bytes: the spool takes over
    await close_copy(drv, rfh, wfh)
    assert await drv.cat("mfs/dst.bin") == data[:off] + b"tail"
