"""A VFS over a real repo in a temporary MCPFS_HOME, driven without a kernel."""

from __future__ import annotations

import errno
import os

import pytest

from mcpfs.backends.ipfs.blockstore import NullBlockstore
from mcpfs.backends.ipfs.directory import build_directory
from mcpfs.backends.ipfs.importer import ImportParams, import_bytes
from mcpfs.backends.ipfs.node import Repo
from mcpfs.config import paths
from mcpfs.errors import McpfsError
from mcpfs.mounts import build_mounts
from mcpfs.vfs import VFS
from mcpfs.vfs.inodes import ROOT_INODE
from mcpfs.vfs.journal import Journal


class Driver:
    """Path-level helpers over the inode API, the way the kernel would call it."""

    def __init__(self, vfs: VFS, repo: Repo) -> None:
        self.vfs = vfs
        self.repo = repo

    async def ino(self, path: str) -> int:
        ino = ROOT_INODE
        for name in [p for p in path.split("/") if p]:
            ino = (await self.vfs.lookup(ino, name)).ino
        return ino

    async def parent(self, path: str) -> tuple[int, str]:
        head, _, name = path.strip("/").rpartition("/")
        return await self.ino(head), name

    async def stat(self, path: str):
        return await self.vfs.getattr(await self.ino(path))

    async def ls(self, path: str) -> dict:
        fh = await self.vfs.opendir(await self.ino(path))
        try:
            return {name: attr for _, name, _, attr in self.vfs.readdir(fh, 0)}
        finally:
            self.vfs.releasedir(fh)

    async def cat(self, path: str, piece: int = 128 * 1024) -> bytes:
        fh, _ = await self.vfs.open(await self.ino(path), os.O_RDONLY)
        out = bytearray()
        try:
            while True:
                data = await self.vfs.read(fh, len(out), piece)
                if not data:
                    return bytes(out)
                out += data
        finally:
            await self.vfs.release(fh)

    async def write_file(self, path: str, data: bytes, piece: int = 128 * 1024) -> None:
        """cp: create (or open with O_TRUNC), write in pieces, flush, release."""
        parent, name = await self.parent(path)
        try:
            ino = (await self.vfs.lookup(parent, name)).ino
            fh, _ = await self.vfs.open(ino, os.O_WRONLY | os.O_TRUNC)
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            fh, _ = await self.vfs.create(parent, name, os.O_WRONLY | os.O_CREAT)
        try:
            for i in range(0, len(data), piece):
                await self.vfs.write(fh, i, data[i:i + piece])
            await self.vfs.flush(fh)
        finally:
            await self.vfs.release(fh)

    async def errno_of(self, coro) -> int:
        try:
            await coro
        except McpfsError as exc:
            return exc.errno
        raise AssertionError("no error raised")


def only_hash(data: bytes, params: ImportParams | None = None) -> str:
    """What `mcpfs add -n` prints for ``data`` (default params)."""
    return str(import_bytes(NullBlockstore(), data, params or ImportParams()).cid)


def add_bytes(repo: Repo, data: bytes, params: ImportParams | None = None):
    return import_bytes(repo.store, data, params or ImportParams())


def add_dir(repo: Repo, entries: dict, params: ImportParams | None = None):
    """entries: name -> bytes | dict (nested); returns Imported of the directory."""
    params = params or ImportParams()
    items = []
    for name, value in entries.items():
        child = add_dir(repo, value, params) if isinstance(value, dict) \
            else add_bytes(repo, value, params)
        items.append((name, child.cid, child.tsize))

    def put(block: bytes):
        cid = params.node_cid(block)
        repo.store.put(cid, block)
        return cid
    return build_directory(items, params, put)


@pytest.fixture
def repo(mcpfs_home):
    return Repo(paths().repo_dir)


@pytest.fixture
def journal(mcpfs_home):
    j = Journal(paths().state_dir)
    yield j
    j.close()


@pytest.fixture
def drv(repo, journal):
    vfs = VFS(build_mounts(repo), paths().cache_dir / "spool", journal)
    return Driver(vfs, repo)
