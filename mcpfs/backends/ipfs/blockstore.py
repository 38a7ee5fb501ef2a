"""Blockstores: kubo's flatfs layout on disk, a byte-budget LRU cache, and a null store.

On disk a block lives at ``blocks/<shard>/<KEY>.data`` where KEY is the unpadded upper-case
base32 of the block's multihash and shard is KEY's next-to-last two characters, exactly as
kubo's flatfs (``/repo/flatfs/shard/v1/next-to-last/2``), so a kubo repo's blocks folder can
be read and vice versa. Blocks are keyed by multihash: a raw and a dag-pb CID of the same
bytes are one block.

Writes go to a temporary file in ``blocks/.temp`` (kubo's flatfs does the same), then
``os.replace`` into the shard folder: a reader or a crash sees the whole block or none. One
folder for every new file keeps ext4's inode allocation in one block group: creating them
in the 1,024 shard folders instead spread the new inodes (and the inode-bitmap reads) over
as many groups, which made a 512 MiB import 1.1-1.6x slower on ext4 here. A temporary file
older than ``STALE_TEMP`` (a crash's leftover) is removed when the store is opened.
``sync()`` fsyncs what was written since the last sync (MFS and pins call it before they
record a root). Reads re-hash the bytes: a corrupt block raises
:class:`CorruptBlock` naming the CID, never returns wrong bytes.

Statistics: a :class:`~mcpfs.stats.Stats` in ``stats`` (None by default; set by
``Repo.attach_stats``) counts the embedded node's disk work as the "ipfs" backend:
FlatFSBlockstore's "put" for each block actually written (a block already stored writes
nothing and is not counted; bytes out), "get" for each block read from disk (bytes in; an
unreadable or corrupt block is an error), "get_missing" for a block not in the store (a
normal answer: the caller may fetch it elsewhere), "delete"; CachedBlockstore's lookups as
``backend_cache("ipfs", hit)``. Without stats the cost is one None check per call.

Concurrency: safe from several threads at once. ``_unsynced`` is guarded by ``_lock``; file
operations are atomic per block and need no lock. ``Stats`` has its own leaf lock.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from cachetools import LRUCache

from ...errors import BlockNotFound, CorruptBlock, McpfsError, NoSpace
from .cid import CID, IDENTITY, RAW, decode_multihash

if TYPE_CHECKING:
    from ...stats import Stats

SHARD_SPEC = "/repo/flatfs/shard/v1/next-to-last/2\n"
TEMP_DIR: Final = ".temp"  # in the store's root: where blocks are written before the rename
STALE_TEMP: Final = 3600.0  # seconds after which a temporary file is a crash's leftover
SYNC_THREADS = 16  # fsyncs in flight at once: the filesystem commits them together
STATS_NAME: Final = "ipfs"  # the backend's name in Stats.backend / backend_cache


class Blockstore(Protocol):
    def put(self, cid: CID, data: bytes) -> None: ...
    def get(self, cid: CID) -> bytes: ...
    def has(self, cid: CID) -> bool: ...
    def delete(self, cid: CID) -> None: ...
    def sync(self) -> None: ...


def write_file(path: str | Path, data: bytes | memoryview, mode: int = 0o666) -> None:
    """Create ``path`` holding ``data`` (raw fd: no buffered-file object per block); a
    short write is continued. OSError as the system raised it (the caller cleans up)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _fsync_path(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # deleted since it was written
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SYNCFS_MIN_FILES = 32  # from this many unsynced blocks on, one syncfs beats per-file fsyncs
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _syncfs(folder: Path) -> bool:
    """syncfs(2) of the file system holding ``folder``; False when it is unavailable or
    fails (the caller then fsyncs file by file)."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def multihash_key(multihash: bytes) -> str:
    return base64.b32encode(multihash).decode("ascii").rstrip("=")


def key_multihash(key: str) -> bytes:
    return base64.b32decode(key + "=" * (-len(key) % 8))


class FlatFSBlockstore:
    """Blocks in files, kubo-compatible; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        spec = self.root / "SHARDING"
        if not spec.exists():
            spec.write_text(SHARD_SPEC)
        elif spec.read_text().strip() != SHARD_SPEC.strip():
            raise McpfsError(f"{self.root}: unsupported flatfs sharding {spec.read_text()!r}")
        self._lock = threading.Lock()
        self._unsynced: set[str] = set()
        self._known_dirs: set[str] = set()
        self._prefix = f"{self.root}{os.sep}"  # plain strings on the hot paths (no pathlib)
        self._temp = f"{self.root}{os.sep}{TEMP_DIR}{os.sep}"
        self._remove_stale_temp()

    def _remove_stale_temp(self) -> None:
        """Create ``.temp``, and remove files in it older than STALE_TEMP (another
        process writing to this store now has younger ones)."""
        os.makedirs(self._temp, exist_ok=True)
        too_old = time.time() - STALE_TEMP
        for entry in os.scandir(self._temp):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < too_old:
                    os.unlink(entry.path)
        self.stats: Stats | None = None  # disk reads and writes (see the module docstring)

    def path_of(self, cid: CID) -> Path:
        return Path(self._file_of(cid))

    def _file_of(self, cid: CID) -> str:
        """The block's file (a str: pathlib took 7 of a 1 KiB put's 77 us)."""
        key = multihash_key(cid.multihash)
        return f"{self._prefix}{key[-3:-1]}{os.sep}{key}.data"

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        if cid.hash_code == IDENTITY:
            return
        path = self._file_of(cid)
        shard, _, name = path.rpartition(os.sep)
        stats = self.stats
        if shard not in self._known_dirs:
            os.makedirs(shard, exist_ok=True)
            self._known_dirs.add(shard)
        if os.path.exists(path):  # content-addressed: the stored block is these bytes
            return
        start = time.perf_counter() if stats is not None else 0.0
        tmp = f"{self._temp}{name}-{os.getpid()}-{threading.get_ident()}"
        try:
            write_file(tmp, data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if stats is not None:
                stats.backend(STATS_NAME, "put", seconds=time.perf_counter() - start,
                              error=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left writing block {cid}") from None
            raise McpfsError(f"cannot write block {cid}: {exc.strerror}") from None
        with self._lock:
            self._unsynced.add(path)
        if stats is not None:
            stats.backend(STATS_NAME, "put", bytes_out=len(data),
                          seconds=time.perf_counter() - start)

    def get(self, cid: CID) -> bytes:
        if cid.hash_code == IDENTITY:
            return cid.digest
        if self.stats is None:
            return self._read(cid)
        start = time.perf_counter()
        try:
            data = self._read(cid)
        except BlockNotFound:
            self.stats.backend(STATS_NAME, "get_missing", seconds=time.perf_counter() - start)
            raise
        except McpfsError:
            self.stats.backend(STATS_NAME, "get", seconds=time.perf_counter() - start,
                               error=True)
            raise
        self.stats.backend(STATS_NAME, "get", bytes_in=len(data),
                           seconds=time.perf_counter() - start)
        return data

    def _read(self, cid: CID) -> bytes:
        """The verified bytes of a stored block; BlockNotFound, McpfsError, CorruptBlock."""
        try:
            with open(self._file_of(cid), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise BlockNotFound(f"block not found: {cid}") from None
        except OSError as exc:
            raise McpfsError(f"cannot read block {cid}: {exc.strerror}") from None
        if not cid.verify(data):
            raise CorruptBlock(f"corrupt block {cid}: its bytes do not match the CID")
        return data

    def has(self, cid: CID) -> bool:
        return cid.hash_code == IDENTITY or os.path.exists(self._file_of(cid))

    def size(self, cid: CID) -> int:
        if cid.hash_code == IDENTITY:
            return len(cid.digest)
        try:
            return self.path_of(cid).stat().st_size
        except FileNotFoundError:
            raise BlockNotFound(f"block not found: {cid}") from None

    def delete(self, cid: CID) -> None:
        try:
            self.path_of(cid).unlink()
        except FileNotFoundError:
            raise BlockNotFound(f"block not found: {cid}") from None
        if self.stats is not None:
            self.stats.backend(STATS_NAME, "delete")

    def sync(self) -> None:
        """Make every block written since the last sync durable, with their folders.

        Many blocks: one ``syncfs`` of the file system holding the store (a single
        journal commit, instead of one per file); few: fsync each file and folder."""
        with self._lock:
            pending, self._unsynced = self._unsynced, set()
        dirs = {os.path.dirname(path) for path in pending}
        if not pending:
            return
        if len(pending) >= SYNCFS_MIN_FILES and _syncfs(self.root):
            return
        with ThreadPoolExecutor(min(SYNC_THREADS, len(pending))) as pool:
            list(pool.map(_fsync_path, pending))  # fsync releases the GIL
            list(pool.map(_fsync_path, dirs))
        _fsync_path(self.root)

    def multihashes(self) -> Iterator[bytes]:
        """Every stored block's multihash (order unspecified)."""
        for shard in os.scandir(self.root):
            if not shard.is_dir() or shard.name == TEMP_DIR:
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if name.endswith(".data") and not name.startswith("."):
                    try:
                        mh = key_multihash(name[:-5])
                        decode_multihash(mh)
                    except Exception:  # noqa: BLE001 - foreign file in the store
                        continue
                    yield mh

    def cids(self) -> Iterator[CID]:
        """Every stored block as a CIDv1 raw (kubo's `refs local` shows multihashes too)."""
        for mh in self.multihashes():
            yield CID(1, RAW, mh)

    def delete_multihash(self, mh: bytes) -> None:
        self.delete(CID(1, RAW, mh))


class MemoryBlockstore:
    """Blocks in a dict; for ``--only-hash`` use :class:`NullBlockstore` instead.

    Concurrency: dict operations are atomic under the GIL; no lock needed.
    """

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        self.blocks[cid.multihash] = bytes(data)

    def get(self, cid: CID) -> bytes:
        if cid.hash_code == IDENTITY:
            return cid.digest
        try:
            return self.blocks[cid.multihash]
        except KeyError:
            raise BlockNotFound(f"block not found: {cid}") from None

    def has(self, cid: CID) -> bool:
        return cid.hash_code == IDENTITY or cid.multihash in self.blocks

    def delete(self, cid: CID) -> None:
        if self.blocks.pop(cid.multihash, None) is None:
            raise BlockNotFound(f"block not found: {cid}")

    def sync(self) -> None:
        pass


class NullBlockstore(MemoryBlockstore):
    """Discards every block (``add --only-hash``); ``get`` finds nothing."""

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        pass


class StoreWrapper:
    """A blockstore in front of another: every call, and any other attribute (stats,
    multihashes(), path_of()...), goes to ``inner`` unless the subclass overrides it."""

    def __init__(self, inner: Blockstore) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        self.inner.put(cid, data)

    def get(self, cid: CID) -> bytes:
        return self.inner.get(cid)

    def has(self, cid: CID) -> bool:
        return self.inner.has(cid)

    def delete(self, cid: CID) -> None:
        self.inner.delete(cid)

    def sync(self) -> None:
        self.inner.sync()


class CachedBlockstore(StoreWrapper):
    """An LRU of recently read blocks (byte budget) in front of another blockstore.

    Concurrency: the LRU is guarded by ``_lock`` (cachetools caches are not thread-safe);
    ``hits``/``misses`` are plain counters (approximate under concurrent reads); ``stats``
    (see the module docstring) counts every lookup exactly, under its own lock.
    """

    def __init__(self, inner: Blockstore, max_bytes: int = 64 << 20) -> None:
        super().__init__(inner)
        self._cache: LRUCache[bytes, bytes] = LRUCache(max_bytes, getsizeof=len)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.stats: Stats | None = None

    def get(self, cid: CID) -> bytes:
        with self._lock:
            data = self._cache.get(cid.multihash)
        if self.stats is not None and cid.hash_code != IDENTITY:
            self.stats.backend_cache(STATS_NAME, data is not None)
        if data is not None:
            self.hits += 1
            return data
        self.misses += 1
        data = self.inner.get(cid)
        with self._lock:
            if len(data) <= self._cache.maxsize:
                self._cache[cid.multihash] = data
        return data

    def delete(self, cid: CID) -> None:
        with self._lock:
            self._cache.pop(cid.multihash, None)
        self.inner.delete(cid)


__all__ = ["Blockstore", "FlatFSBlockstore", "MemoryBlockstore", "NullBlockstore",
           "StoreWrapper", "CachedBlockstore", "multihash_key"]
