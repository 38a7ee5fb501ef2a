"""kubo's commands over one local :class:`Repo`, synchronous: the single implementation
behind both the control server's routes and the CLI when no daemon runs.

Every method returns kubo's JSON-shaped values (or iterators of bytes for cat/get/export),
so the server only encodes them and the CLI prints the same thing whichever side ran them.
Methods block (hashing, disk I/O, fsync): the server calls them in worker threads
(``trio.to_thread.run_sync`` under its CapacityLimiter), the CLI directly.

Resources and errors: writes (add, block/dag put, car import) hold ``repo.gc_lock.writing()``
from the first block written until the pin is recorded, so a concurrent GC cannot remove
them in between; iterators returned for streams hold nothing but the repo. Failures are
:class:`McpfsError` subclasses with kubo-like messages; nothing is rolled back (blocks
already written are content-addressed and left for GC).

Concurrency: a RepoOps has no state of its own; the repo's parts (blockstore, pins, GC lock)
are thread-safe, so several threads may call methods at once.
"""

from __future__ import annotations

import contextlib
import tarfile
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Final

from ..backends.ipfs import car as car_mod
from ..backends.ipfs import dag as dag_mod
from ..backends.ipfs.add import Adder, AddEvent
from ..backends.ipfs.cid import CID, RAW
from ..backends.ipfs.importer import ImportParams, params_for, parse_chunker
from ..backends.ipfs.node import Repo
from ..backends.ipfs.reader import split_ipfs_path
from ..errors import InvalidInput, IsADirectory, NotFound

STREAM_PIECE: Final = 256 * 1024  # bytes per chunk of cat / get / export streams
MAX_PUT_BYTES: Final = 8 << 20  # block/dag put bodies read whole; larger is refused early


@dataclass(frozen=True)
class AddOptions:
    """``add``'s import flags, as the CLI got them (None = not given)."""

    cid_version: int | None = None
    raw_leaves: bool | None = None
    chunker: str | None = None
    trickle: bool = False
    profile: str | None = None

    def params(self) -> ImportParams:
        """The ImportParams; InvalidInput for a bad chunker or profile."""
        return params_for(self.profile, cid_version=self.cid_version,
                          raw_leaves=self.raw_leaves,
                          chunk_size=parse_chunker(self.chunker) if self.chunker else None,
                          layout="trickle" if self.trickle else None)

    def query(self) -> dict[str, str]:
        """The same flags as kubo's ``/api/v0/add`` query options."""
        out = {"cid-version": self.cid_version, "chunker": self.chunker,
               "profile": self.profile}
        query = {k: str(v) for k, v in out.items() if v is not None}
        if self.raw_leaves is not None:
            query["raw-leaves"] = "true" if self.raw_leaves else "false"
        if self.trickle:
            query["trickle"] = "true"
        return query


def add_line(event: AddEvent) -> dict[str, str]:
    """kubo's add output object (Size is a string, the cumulative size)."""
    return {"Name": event.name, "Hash": str(event.root.cid), "Size": str(event.root.tsize)}


def read_limited(fh: BinaryIO, limit: int = MAX_PUT_BYTES) -> bytes:
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(f"input larger than {limit} bytes")
    return data


def entry_name(path: str) -> str:
    """The name ``get`` gives the top entry: the last path segment (the CID for a bare CID)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


class RepoOps:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def resolve(self, path: str) -> CID:
        """``<cid>[/a/b]`` or ``/ipfs/<cid>/...`` -> the CID at that path."""
        root, segments = split_ipfs_path(path)
        return self.repo.reader.resolve(root, segments)

    # ---------------------------------------------------------------- add
    @contextlib.contextmanager
    def adding(self, only_hash: bool = False):
        """Hold the GC writer lock while an add writes blocks and pins (not for -n)."""
        with contextlib.nullcontext() if only_hash else self.repo.gc_lock.writing():
            yield

    def finish_add(self, root: CID | None, pin: bool) -> None:
        """Sync the blocks of a finished add and pin its root (caller holds ``adding``)."""
        self.repo.store.sync()
        if pin and root is not None:
            self.repo.pins.add(root, recursive=True)

    def add_paths(self, paths: list[str], params: ImportParams, *, recursive: bool,
                  wrap: bool, hidden: bool, pin: bool,
                  on_bytes: Callable[[int], None] | None = None) -> Iterator[dict[str, str]]:
        """Import local paths (the CLI's side of ``add``); yields kubo's lines as they come."""
        adder = Adder(self.repo.store, params, hidden=hidden, on_bytes=on_bytes)
        with self.adding():
            last = None
            for event in adder.add_many(paths, recursive=recursive, wrap=wrap):
                last = event
                yield add_line(event)
            self.finish_add(last.root.cid if last else None, pin)

    def add_stream(self, fh: BinaryIO, params: ImportParams, *, pin: bool,
                   on_bytes: Callable[[int], None] | None = None) -> dict[str, str]:
        """Import one unnamed stream (stdin); the line's Name is the CID, like kubo."""
        with self.adding():
            root = Adder(self.repo.store, params, on_bytes=on_bytes).stream(fh)
            self.finish_add(root.cid, pin)
        return {"Name": str(root.cid), "Hash": str(root.cid), "Size": str(root.tsize)}

    # ---------------------------------------------------------------- cat / get
    def cat(self, path: str, offset: int = 0, length: int | None = None
            ) -> tuple[int, Iterator[bytes]]:
        """(bytes that will follow, their iterator); a directory is kubo's error."""
        cid = self.resolve(path)
        info = self.repo.reader.stat(cid)
        if info.type == "directory":
            raise IsADirectory("this dag node is a directory")
        size = max(0, info.size - offset)
        if length is not None:
            size = min(size, length)
        return size, self._ranges(cid, offset, size)

    def _ranges(self, cid: CID, offset: int, size: int) -> Iterator[bytes]:
        end = offset + size
        while offset < end:
            chunk = self.repo.reader.read(cid, offset, min(STREAM_PIECE, end - offset))
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def get_tar(self, path: str) -> Iterator[bytes]:
        """A tar stream of ``path`` (PAX, byte-identical to ``tarfile`` mode "w");
        the top entry is named :func:`entry_name` (the CID for a bare CID)."""
        cid = self.resolve(path)
        name = entry_name(path) or str(cid)
        return iter_tar(self.repo, cid, name)

    # ---------------------------------------------------------------- pins
    def pin_add(self, path: str, recursive: bool = True, name: str | None = None) -> str:
        cid = self.resolve(path)
        self.repo.pins.add(cid, recursive=recursive, name=name)
        return str(cid)

    def pin_rm(self, path: str, recursive: bool = True) -> str:
        cid = self.resolve(path)
        self.repo.pins.rm(cid, recursive=recursive)
        return str(cid)

    def pin_ls(self, paths: Iterable[str] = (), kind: str = "all"
               ) -> Iterator[tuple[str, str, str | None]]:
        """(cid, type, name) per pin; with paths, only those, and kubo's error for one
        that is not pinned."""
        paths = list(paths)
        if not paths:
            for cid, pin_type, name in self.repo.pins.ls(kind):
                yield str(cid), pin_type, name
            return
        if kind not in ("all", "recursive", "direct", "indirect"):
            raise InvalidInput(f"invalid type '{kind}', must be one of "
                               "{direct, indirect, recursive, all}")
        for path in paths:
            cid = self.resolve(path)
            pin_type = self.repo.pins.is_pinned(cid)
            if not pin_type or kind not in ("all", pin_type):
                raise NotFound(f"path '{path}' is not pinned")
            yield str(cid), pin_type, None

    def gc(self) -> list[dict[str, Any]]:
        """kubo's ``repo gc`` lines: ``{"Key": {"/": cid}}`` per removed block."""
        return [{"Key": {"/": str(CID(1, RAW, mh))}} for mh in self.repo.gc()]

    # ---------------------------------------------------------------- blocks
    def block_put(self, fh: BinaryIO, codec: str = "raw", mhtype: str = "sha2-256",
                  pin: bool = False, allow_big_block: bool = False) -> dict[str, Any]:
        data = read_limited(fh)
        with self.repo.gc_lock.writing():
            cid = dag_mod.block_put(self.repo.store, data, codec, mhtype,
                                    allow_big_block=allow_big_block)
            self.finish_add(cid, pin)
        return {"Key": str(cid), "Size": len(data)}

    def block_get(self, cid: str) -> bytes:
        return dag_mod.block_get(self.repo.store, cid)

    def block_stat(self, cid: str) -> dict[str, Any]:
        return dag_mod.block_stat(self.repo.store, cid)

    def block_rm(self, cids: list[str], force: bool = False) -> list[dict[str, str]]:
        return dag_mod.block_rm(self.repo.store, cids, force=force,
                                is_pinned=self.repo.pins.is_pinned)

    # ---------------------------------------------------------------- dag
    def dag_put(self, fh: BinaryIO, store_codec: str = "dag-cbor",
                input_codec: str = "dag-json", hash_name: str = "sha2-256",
                pin: bool = False, allow_big_block: bool = False) -> str:
        data = read_limited(fh)
        with self.repo.gc_lock.writing():
            cid = dag_mod.dag_put(self.repo.store, data, input_codec, store_codec, hash_name,
                                  allow_big_block=allow_big_block)
            self.finish_add(cid, pin)
        return str(cid)

    def dag_get(self, path: str, output_codec: str = "dag-json") -> bytes:
        return dag_mod.dag_get(self.repo.store, path, output_codec)

    def dag_resolve(self, path: str) -> dict[str, str]:
        result = dag_mod.dag_resolve(self.repo.store, path)
        return {"Cid": str(result["Cid"]), "RemPath": result["RemPath"]}

    def dag_export(self, path: str) -> Iterator[bytes]:
        """The CARv1 of the DAG under ``path``, in pieces of about STREAM_PIECE bytes."""
        return iter_car(self.repo, self.resolve(path))

    def dag_import(self, fh: BinaryIO, pin_roots: bool = True) -> tuple[list[str], int, int]:
        """Import one CAR; pin its roots (kubo's default). Returns (roots, blocks, bytes)."""
        store = _CountingStore(self.repo.store)
        with self.repo.gc_lock.writing():
            roots, count = car_mod.import_car(store, fh)  # type: ignore[arg-type]
            if pin_roots:
                for root in roots:
                    self.repo.pins.add(root, recursive=True)
        return [str(r) for r in roots], count, store.bytes


class _CountingStore:
    """Counts the bytes put through it (``dag import --stats``)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.bytes = 0

    def put(self, cid: CID, data: bytes) -> None:
        self.bytes += len(data)
        self.inner.put(cid, data)

    def sync(self) -> None:
        self.inner.sync()


class _Sink:
    """A write-only file collecting bytes until :meth:`take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts, self.size = [], 0
        return out


def iter_car(repo: Repo, root: CID) -> Iterator[bytes]:
    sink = _Sink()
    writer = car_mod.CarWriter(sink, [root])  # type: ignore[arg-type]
    for cid, block in car_mod.iter_dag(repo.store, [root]):
        writer.put(cid, block)
        if sink.size >= STREAM_PIECE:
            yield sink.take()
    yield sink.take()


def _check_entry_name(name: str | None) -> str:
    if not name or name in (".", "..") or "/" in name:
        raise InvalidInput(f"refusing unsafe entry name {name!r}")
    return name


def iter_tar(repo: Repo, cid: CID, name: str) -> Iterator[bytes]:
    """A PAX tar of the DAG at ``cid``, streamed: headers and file pieces as they are read.
    The bytes equal what ``tarfile.open(mode="w", format=PAX_FORMAT)`` writes."""
    written = 0
    for chunk in _tar_entries(repo, cid, name):
        written += len(chunk)
        yield chunk
    end = b"\0" * (2 * tarfile.BLOCKSIZE)
    written += len(end)
    remainder = written % tarfile.RECORDSIZE
    yield end + (b"\0" * (tarfile.RECORDSIZE - remainder) if remainder else b"")


def _header(member: tarfile.TarInfo) -> bytes:
    return member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _tar_entries(repo: Repo, cid: CID, name: str) -> Iterator[bytes]:
    info = repo.reader.stat(cid)
    member = tarfile.TarInfo(name)
    member.mtime = info.mtime[0] if info.mtime else 0
    if info.type == "directory":
        member.type = tarfile.DIRTYPE
        member.mode = info.mode or 0o755
        yield _header(member)
        for link in repo.reader.list_dir(cid):
            child = _check_entry_name(link.name)
            yield from _tar_entries(repo, link.cid, f"{name}/{child}")
    elif info.type == "symlink":
        member.type = tarfile.SYMTYPE
        member.linkname = info.target or ""
        yield _header(member)
    else:
        member.size = info.size
        member.mode = info.mode or 0o644
        yield _header(member)
        offset = 0
        while offset < info.size:
            chunk = repo.reader.read(cid, offset, min(STREAM_PIECE, info.size - offset))
            if not chunk:
                raise InvalidInput(f"{cid}: file shorter than its recorded size")
            offset += len(chunk)
            yield chunk
        pad = info.size % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * (tarfile.BLOCKSIZE - pad)


__all__ = ["RepoOps", "AddOptions", "iter_tar", "iter_car", "add_line", "entry_name",
           "STREAM_PIECE"]
