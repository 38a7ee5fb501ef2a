"""``copy_file_range`` in vfs/ without a kernel (VFS.copy_range, what coreutils cp sends
within one mount): a whole DAG copied into /mfs is counted, never read, and linked; every
other range is copied through the daemon with every byte kept."""

from __future__ import annotations

import errno
import os

import pytest

from mcpfs.backends.ipfs.importer import PROFILES
from mcpfs.vfs import VFS
from mcpfs.config import paths
from mcpfs.mounts import build_mounts
from mcpfs.vfs.copies import COPY_RANGE_MAX
from tests.bridge.test_vfs_copies import PID, block_count, bridged  # noqa: F401 - fixture
from tests.bridge.test_vfs_copies import close_copy as closed
from tests.bridge.test_vfs_copies import open_copy as opened
from tests.conftest import pattern_bytes
from tests.vfs.conftest import Driver, add_bytes, only_hash

PROFILE = PROFILES["unixfs-v1-2025"]


async def copy_all(drv: Driver, rfh: int, wfh: int, off_in: int = 0, off_out: int = 0,
                   length: int = 1 << 62) -> list[int]:
    """Call copy_range until it returns 0 or ``length`` is copied, as cp does."""
    counts = []
    while length > 0:
        n = await drv.vfs.copy_range(rfh, off_in, wfh, off_out, length)
        if n == 0:
            break
        counts.append(n)
        off_in, off_out, length = off_in + n, off_out + n, length - n
    return counts


@pytest.mark.parametrize("pid", [PID, None])  # cp itself; a request with no known pid
async def test_a_whole_dag_is_one_request_and_a_link(bridged, repo, pid):
    drv, _ = bridged
    data = pattern_bytes(3 * COPY_RANGE_MAX // 2, 3)
    cid = str(add_bytes(repo, data, PROFILE).cid)
    before = block_count(repo)
    rfh, wfh = await opened(drv, f"ipfs/{cid}", "mfs/w.bin", pid)
    assert await copy_all(drv, rfh, wfh) == [len(data)]
    of = drv.vfs.handles.get(wfh).open_file
    assert of.spool.in_memory and await of.spool.size() == 0  # nothing read, nothing held
    assert (await drv.stat("mfs/w.bin")).attr.size == len(data)
    await closed(drv, rfh, wfh)
    assert (await drv.stat("mfs/w.bin")).attr.cid_text == cid
    assert block_count(repo) == before + 1  # MFS's directory only
    assert await drv.vfs.getxattr(await drv.ino("mfs/w.bin"), "user.mcpfs.source") == \
        f"/ipfs/{cid}".encode()
    assert await drv.cat("mfs/w.bin") == data


async def test_a_source_read_before_is_still_linked(bridged, repo):
    drv, _ = bridged
    data = pattern_bytes(2_000_000, 4)
    cid = str(add_bytes(repo, data, PROFILE).cid)
    rfh, wfh = await opened(drv, f"ipfs/{cid}", "mfs/r.bin")
    for off in (1_500_000, 700_000, 0):  # out of order: the tracker gives up on it
        await drv.vfs.read(rfh, off, 128 * 1024)
    assert await copy_all(drv, rfh, wfh, length=1_000_000) == [1_000_000]  # two pieces
    assert await copy_all(drv, rfh, wfh, 1_000_000, 1_000_000) == [1_000_000]
    await closed(drv, rfh, wfh)
    assert (await drv.stat("mfs/r.bin")).attr.cid_text == cid
    assert await drv.cat("mfs/r.bin") == data


@pytest.mark.parametrize("case", ["then a write", "shorter", "then a truncate"])
async def test_a_copy_that_stops_being_one_keeps_every_byte(bridged, repo, case):
    drv, _ = bridged
    data = pattern_bytes(2_500_000, 5)
    cid = str(add_bytes(repo, data, PROFILE).cid)
    rfh, wfh = await opened(drv, f"ipfs/{cid}", "mfs/s.bin")
    await copy_all(drv, rfh, wfh, length=1_000_000)
    expected = data[:1_000_000]
    if case == "then a write":
        await drv.vfs.write(wfh, 1_000_000, b"tail")
        expected += b"tail"
    elif case == "then a truncate":
        await drv.vfs.setattr(await drv.ino("mfs/s.bin"), size=300_000, fh=wfh)
        expected = expected[:300_000]
    await closed(drv, rfh, wfh)
    assert await drv.cat("mfs/s.bin") == expected
    assert (await drv.stat("mfs/s.bin")).attr.cid_text == only_hash(expected)


async def test_other_offsets_are_copied_through_the_daemon(bridged, repo):
    drv, _ = bridged
    data = pattern_bytes(COPY_RANGE_MAX + 3_000_000, 6)
    cid = str(add_bytes(repo, data, PROFILE).cid)
    rfh, wfh = await opened(drv, f"ipfs/{cid}", "mfs/o.bin")
    await drv.vfs.write(wfh, 0, b"head")
    counts = await copy_all(drv, rfh, wfh, off_in=12_345, off_out=4)
    assert counts == [COPY_RANGE_MAX, len(data) - 12_345 - COPY_RANGE_MAX]  # bounded
    await closed(drv, rfh, wfh)
    assert await drv.cat("mfs/o.bin") == b"head" + data[12_345:]


async def test_without_a_bridge_bytes_are_copied(repo, journal):
    drv = Driver(VFS(build_mounts(repo), paths().cache_dir / "spool", journal), repo)
    data = pattern_bytes(1_200_000, 7)
    await drv.write_file("mfs/a.bin", data)
    rfh, wfh = await opened(drv, "mfs/a.bin", "mfs/b.bin")
    assert sum(await copy_all(drv, rfh, wfh)) == len(data)
    assert await drv.vfs.copy_range(rfh, len(data), wfh, len(data), 10) == 0  # the end
    await closed(drv, rfh, wfh)
    assert await drv.cat("mfs/b.bin") == data
    b_cid = (await drv.stat("mfs/b.bin")).attr.cid_text
    assert b_cid == (await drv.stat("mfs/a.bin")).attr.cid_text


async def test_into_a_handle_not_open_for_writing_is_ebadf(bridged, repo):
    drv, _ = bridged
    await drv.write_file("mfs/x.bin", b"x" * 1000)
    await drv.write_file("mfs/y.bin", b"")
    rfh, _ = await drv.vfs.open(await drv.ino("mfs/x.bin"), os.O_RDONLY, PID)
    other, _ = await drv.vfs.open(await drv.ino("mfs/y.bin"), os.O_RDONLY, PID)
    assert await drv.errno_of(drv.vfs.copy_range(rfh, 0, other, 0, 1000)) == errno.EBADF
    await drv.vfs.release(other)
    await drv.vfs.release(rfh)


async def test_the_request_names_the_source_not_the_last_file_read(bridged, repo):
    drv, _ = bridged
    data, other = pattern_bytes(COPY_RANGE_MAX + 1000, 8), pattern_bytes(40_000, 9)
    cid = str(add_bytes(repo, data, PROFILE).cid)
    await drv.write_file("mfs/other.bin", other)
    rfh, _ = await drv.vfs.open(await drv.ino(f"ipfs/{cid}"), os.O_RDONLY, PID)
    ofh, _ = await drv.vfs.open(await drv.ino("mfs/other.bin"), os.O_RDONLY, PID)
    parent, name = await drv.parent("mfs/n.bin")
    wfh, _ = await drv.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT, PID)
    # the pid's most recent reader is other.bin: the bridge's guess at create
    assert drv.vfs.handles.get(wfh).open_file.copycheck.source.location == "/mfs/other.bin"
    assert await copy_all(drv, rfh, wfh) == [len(data)]
    await closed(drv, rfh, wfh)
    await drv.vfs.release(ofh)
    assert (await drv.stat("mfs/n.bin")).attr.cid_text == cid
    assert await drv.cat("mfs/n.bin") == data
