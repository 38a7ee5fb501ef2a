"""The synchronous core of MFS: path operations as pure functions of a root CID.

Every operation takes the current root CID and returns the new one; nothing is mutated in
place, so a failing operation leaves no trace except unreferenced blocks (which the next GC
removes). A change to ``/a/b/c`` edits the entries of ``/a/b`` and encodes it again (plain
or HAMT, switching both ways as boxo does), then ``/a`` and ``/`` with the new child
link. Directories are kept decoded in a
:class:`mfs_dirs.DirCache` by CID (each change publishes the new versions), and only the
changed entries are encoded again (a HAMT only along the changed shard path), so a change
costs one C-level copy of each directory's entry dict on the path and no decoding; the
resulting CIDs are those of :func:`directory.build_directory` on the same entries.

Files written through MFS are re-imported with the MFS params (a file of one chunk without
the importer's write-behind threads): old prefix + zero fill + new
data + old suffix are streamed as fixed-size chunks into the importer, so a file's CID equals
``ipfs add`` of the same bytes with the same params, and memory stays at about one chunk.

Errors (all :class:`McpfsError` subclasses): NotFound (ENOENT) "<path>: file does not exist",
AlreadyExists (EEXIST), NotADirectory (ENOTDIR), IsADirectory (EISDIR), DirectoryNotEmpty
(ENOTEMPTY), InvalidInput for bad paths; BlockNotFound/CorruptBlock from the store.

Concurrency: no state besides the store, the reader and the directory cache (all
thread-safe; cached states are immutable); the caller (mfs.py) serializes mutations.
Blocking: runs in worker threads only.
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from ...errors import (AlreadyExists, DirectoryNotEmpty, InvalidInput, IsADirectory,
                       NotADirectory, NotFound)
from . import dagpb, unixfs
from .blockstore import Blockstore, StoreWrapper
from .cid import CID, DAG_PB, RAW
from .directory import check_name
from . import importer
from .importer import Imported, ImportParams, import_chunks
from .mfs_dirs import DirCache, DirState
from .reader import UnixFSReader, split_ipfs_path

READ_PIECE: Final = 1 << 20  # bytes read from the old file per step when re-importing
ZERO_PIECE: Final = 1 << 20  # bytes of zero fill yielded per step (write past the end)
DIR_TYPE: Final = 1  # kubo's `files ls` Entries Type for a directory (0 for anything else)
FILE_TYPE: Final = 0

Entries = dict[str, tuple[CID, int]]  # name -> (cid, cumulative size)


def split_path(path: str) -> list[str]:
    """``/a/b`` -> ["a", "b"]; ``/`` -> []. Paths must be absolute; ``.``/``..`` resolved."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInput(f"paths must start with a leading slash: {path!r}")
    segs = [s for s in posixpath.normpath(path).split("/") if s]
    for seg in segs:
        check_name(seg)
    return segs


def join(segs: list[str]) -> str:
    return "/" + "/".join(segs)


def rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Cut a stream of pieces of any length into ``size``-byte chunks (last one shorter)."""
    buf = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        pos = 0
        if buf:
            pos = size - len(buf)
            buf += view[:pos]
            if len(buf) < size:
                continue
            yield bytes(buf)
            buf = bytearray()
        while len(view) - pos >= size:
            yield bytes(view[pos:pos + size])
            pos += size
        buf += view[pos:]
    if buf:
        yield bytes(buf)


class _Edit:
    """The mapping a ``mutate`` callback edits: reads see the directory plus the changes
    made so far; ``changes`` is name -> (cid, tsize), or None for a removed entry."""

    def __init__(self, state: DirState) -> None:
        self.state = state
        self.changes: dict[str, tuple[CID, int] | None] = {}

    def get(self, name: str) -> tuple[CID, int] | None:
        if name in self.changes:
            return self.changes[name]
        return self.state.get(name)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __setitem__(self, name: str, value: tuple[CID, int]) -> None:
        self.changes[name] = value

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.changes[name] = None


class _Deferring(StoreWrapper):
    """The store for a one-block file written inside a mutation: puts go to MFS's
    ``defer`` hook (mfs_pending), everything else to the store."""

    def __init__(self, store: Blockstore, defer: Callable[[CID, bytes], None]) -> None:
        super().__init__(store)
        self._defer = defer

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        self._defer(cid, bytes(data))


class Tree:
    """Path operations over one store; see the module docstring."""

    def __init__(self, store: Blockstore, reader: UnixFSReader, params: ImportParams,
                 dirs: DirCache | None = None) -> None:
        self.store = store
        self.reader = reader
        self.params = params
        self.dirs = dirs or DirCache()
        # set by MFS while its flusher runs: nodes go there instead of the store
        self.defer: Callable[[CID, bytes], None] | None = None

    # ---------------------------------------------------------------- nodes
    def put_node(self, block: bytes) -> CID:
        cid = self.params.node_cid(block)
        defer = self.defer
        if defer is not None:
            defer(cid, block)
        else:
            self.store.put(cid, block)
        return cid

    def empty_dir(self) -> Imported:
        """Store an empty directory node; its state is cached (entries added to it next
        need no decoding, and can be quick: mfs.py)."""
        state = DirState.of(())
        made = state.encode(self.params, self.put_node)
        self.dirs.put(made.cid, state)
        return made

    def kind(self, cid: CID) -> str:
        """"directory", "file" or "symlink" (raw blocks and other codecs count as files)."""
        if cid.codec != DAG_PB:
            return "file"
        if cid in self.dirs:
            return "directory"
        _, fsdata = self.reader.unixfs_node(cid)
        if fsdata.is_dir:
            return "directory"
        return "symlink" if fsdata.type == unixfs.SYMLINK else "file"

    def dir_state(self, cid: CID, where: str) -> DirState:
        """The decoded directory ``cid`` (from the cache, else decoded once and cached);
        NotADirectory when it is not a directory."""
        state = self.dirs.get(cid)
        if state is not None:
            return state
        if self.kind(cid) != "directory":
            raise NotADirectory(f"{where}: not a directory")
        _, fsdata = self.reader.unixfs_node(cid)
        state = DirState.of(((link.name or "", link.cid, link.tsize or 0)
                             for link in self.reader.list_dir(cid)), fsdata.mode, fsdata.mtime)
        self.dirs.put(cid, state)
        return state

    def read_dir(self, cid: CID, where: str) -> tuple[Entries, int | None, tuple | None]:
        """(entries, mode, mtime) of the directory ``cid``; NotADirectory when it is not."""
        state = self.dir_state(cid, where)
        return ({name: (item[0], item[1]) for name, item in state.entries.items()},
                state.mode, state.mtime)

    def child(self, cid: CID, name: str) -> CID | None:
        """The CID named ``name`` in directory ``cid`` (cached state, else the reader)."""
        state = self.dirs.get(cid)
        if state is not None:
            entry = state.entries.get(name)
            return entry[0] if entry is not None else None
        link = self.reader.find(cid, name)
        return link.cid if link is not None else None

    def lookup(self, root: CID, segs: list[str], missing_ok: bool = False) -> CID | None:
        """The CID at ``segs``; NotFound (or None with ``missing_ok``) when a segment is
        missing, NotADirectory when a segment on the way is not a directory."""
        cid = root
        for i, name in enumerate(segs):
            if self.kind(cid) != "directory":
                raise NotADirectory(f"{join(segs[:i])}: not a directory")
            child = self.child(cid, name)
            if child is None:
                if missing_ok:
                    return None
                raise NotFound(f"{join(segs[:i + 1])}: file does not exist")
            cid = child
        return cid

    def resolve(self, root: CID, path: str) -> CID:
        cid = self.lookup(root, split_path(path))
        assert cid is not None
        return cid

    def update(self, root: CID, dir_segs: list[str], mutate: Callable[[_Edit], bool],
               parents: bool = False) -> CID:
        """Apply ``mutate`` to the entries of directory ``dir_segs`` and rebuild up to the root.

        ``mutate`` edits the mapping it is given and returns False for "no change" (root
        returned as is). Missing directories on the way raise NotFound, or are created
        empty with ``parents``. Only the changed entries are encoded; each directory on the
        path is published in the directory cache under its new CID.
        """
        chain: list[tuple[CID | None, DirState]] = []
        cur: CID | None = root
        for depth in range(len(dir_segs) + 1):
            where = join(dir_segs[:depth])
            chain.append((cur, DirState.of(()) if cur is None else self.dir_state(cur, where)))
            if depth == len(dir_segs):
                break
            entry = chain[-1][1].get(dir_segs[depth])
            if entry is None and not parents:
                raise NotFound(f"{join(dir_segs[:depth + 1])}: file does not exist")
            cur = entry[0] if entry is not None else None
        edit = _Edit(chain[-1][1])
        if not mutate(edit):
            return root
        changes = edit.changes
        built: list[tuple[CID, DirState, CID | None]] = []
        for depth in range(len(dir_segs), -1, -1):
            old_cid, state = chain[depth]
            new_state = state.apply(changes, self.params)
            child = new_state.encode(self.params, self.put_node)
            built.append((child.cid, new_state, old_cid))
            if depth:
                changes = {dir_segs[depth - 1]: (child.cid, child.tsize)}
        for cid, state, old_cid in built:  # published only once every block is written
            self.dirs.put(cid, state, replaces=old_cid)
        return built[-1][0]

    def _add(self, root: CID, segs: list[str], cid: CID, tsize: int, parents: bool = False,
             replace: bool = False) -> CID:
        def mutate(entries: _Edit) -> bool:
            if segs[-1] in entries and not replace:
                raise AlreadyExists(f"{join(segs)}: file already exists")
            entries[segs[-1]] = (cid, tsize)
            return True
        return self.update(root, segs[:-1], mutate, parents)

    # ---------------------------------------------------------------- queries
    def stat(self, root: CID, path: str) -> dict:
        """kubo's ``files stat`` JSON: Hash, Size, CumulativeSize, Blocks, Type."""
        info = self.reader.stat(self.resolve(root, path))
        kind = info.type if info.type in ("directory", "symlink") else "file"
        return {"Hash": str(info.cid), "Size": info.size,
                "CumulativeSize": info.cumulative_size, "Blocks": info.blocks, "Type": kind}

    def ls(self, root: CID, path: str, long: bool = False) -> list[dict]:
        """kubo's ``files ls`` Entries (sorted by name); a file lists as itself."""
        segs = split_path(path)
        cid = self.lookup(root, segs)
        assert cid is not None
        if self.kind(cid) != "directory":
            links = [(segs[-1] if segs else "", cid)]
        else:
            links = sorted((link.name or "", link.cid) for link in self.reader.list_dir(cid))
        out = []
        for name, child in links:
            if not long:
                out.append({"Name": name, "Type": FILE_TYPE, "Size": 0, "Hash": ""})
                continue
            info = self.reader.stat(child)
            is_dir = info.type == "directory"
            out.append({"Name": name, "Type": DIR_TYPE if is_dir else FILE_TYPE,
                        "Size": 0 if is_dir else info.size, "Hash": str(child)})
        return out

    def file_cid(self, root: CID, path: str) -> CID:
        """The CID of the regular file at ``path``; IsADirectory / InvalidInput otherwise."""
        cid = self.resolve(root, path)
        kind = self.kind(cid)
        if kind == "directory":
            raise IsADirectory(f"{path}: is a directory")
        if kind != "file":
            raise InvalidInput(f"{path}: not a regular file")
        return cid

    def read_range(self, cid: CID, offset: int, count: int | None,
                   piece: int = READ_PIECE) -> Iterator[bytes]:
        """The file's bytes from ``offset``, ``count`` of them (None: to the end), in pieces."""
        if offset < 0 or (count is not None and count < 0):
            raise InvalidInput("offset and count must not be negative")
        end = self.reader.stat(cid).size
        if count is not None:
            end = min(end, offset + count)
        pos = offset
        while pos < end:
            data = self.reader.read(cid, pos, min(piece, end - pos))
            if not data:
                return
            yield data
            pos += len(data)

    # ---------------------------------------------------------------- changes
    def mkdir(self, root: CID, path: str, parents: bool = False) -> CID:
        segs = split_path(path)
        if not segs:
            if parents:
                return root
            raise AlreadyExists("cannot create directory '/': Already exists")
        if parents:
            existing = self.lookup(root, segs, missing_ok=True)
            if existing is not None:
                if self.kind(existing) == "directory":
                    return root
                raise AlreadyExists(f"{path}: file already exists")
        empty = self.empty_dir()
        return self._add(root, segs, empty.cid, empty.tsize, parents)

    def _file_target(self, root: CID, segs: list[str], path: str, parents: bool
                     ) -> CID | None:
        """The current file at ``segs`` (None if absent); errors for a bad target/parent."""
        if not segs:
            raise IsADirectory("/: is a directory")
        if parents:
            old = self.lookup(root, segs, missing_ok=True)
        else:
            parent = self.lookup(root, segs[:-1])
            assert parent is not None
            if self.kind(parent) != "directory":
                raise NotADirectory(f"{join(segs[:-1])}: not a directory")
            old = self.child(parent, segs[-1])
        if old is not None:
            kind = self.kind(old)
            if kind == "directory":
                raise IsADirectory(f"{path}: is a directory")
            if kind != "file":
                raise InvalidInput(f"{path}: not a regular file")
        return old

    def link(self, root: CID, path: str, cid: CID, tsize: int, parents: bool = False) -> CID:
        """Put the imported file DAG ``cid`` at ``path`` (replacing a file); new root."""
        segs = split_path(path)
        self._file_target(root, segs, path, parents)
        return self._add(root, segs, cid, tsize, parents, replace=True)

    def write(self, root: CID, path: str, source: Iterable[bytes], offset: int = 0,
              create: bool = False, truncate: bool = False, parents: bool = False,
              count: int | None = None) -> CID:
        """Write ``source`` at ``offset`` of the file (see module docstring); new root."""
        segs = split_path(path)
        if offset < 0 or (count is not None and count < 0):
            raise InvalidInput("offset and count must not be negative")
        old = self._file_target(root, segs, path, parents)
        if old is None and not create:
            raise NotFound(f"{path}: file does not exist")
        if old is not None and truncate:
            old = None
        pieces = self._compose(old, offset, source, count)
        new = self.import_pieces(pieces, in_mutation=True)
        return self._add(root, segs, new.cid, new.tsize, parents, replace=True)

    def import_pieces(self, pieces: Iterable[bytes], in_mutation: bool = False) -> Imported:
        """Import a file's bytes with the MFS params; a file of at most one chunk is
        written here, without the importer's write-behind threads (same DAG). Inside a
        mutation (``in_mutation``) that one block goes where ``defer`` says, like the
        directory nodes: a small file then costs no flatfs file until the sync. Outside
        one (a streaming import, linked later) blocks always go to the store."""
        chunks = rechunk(pieces, self.params.chunk_size)
        first = next(chunks, None)
        second = next(chunks, None) if first is not None else None
        if second is None:  # one leaf (or the empty file): the layout's one-node DAG
            defer = self.defer if in_mutation else None
            store = self.store if defer is None else _Deferring(self.store, defer)
            db = importer.DagBuilder(store, self.params, iter([first] if first else []))
            layout = importer._trickle if self.params.layout == "trickle" else importer._balanced
            return layout(db)
        return import_chunks(self.store, itertools.chain([first, second], chunks), self.params)

    def _compose(self, old: CID | None, offset: int, source: Iterable[bytes],
                 count: int | None) -> Iterator[bytes]:
        """Old bytes before ``offset``, zeros up to it, the new data, old bytes after it."""
        old_size = self.reader.stat(old).size if old is not None else 0
        if old is not None:
            yield from self.read_range(old, 0, min(offset, old_size))
        gap = offset - old_size
        while gap > 0:
            n = min(gap, ZERO_PIECE)
            yield bytes(n)
            gap -= n
        written = 0
        for piece in source:
            if count is not None and written + len(piece) > count:
                piece = piece[:count - written]
            written += len(piece)
            yield piece
            if count is not None and written >= count:
                break
        end = offset + written
        if old is not None and end < old_size:
            yield from self.read_range(old, end, None)

    def rm(self, root: CID, path: str, recursive: bool = False, force: bool = False) -> CID:
        """Unlink ``path``. A directory needs ``recursive`` (or ``force``, which implies it
        and does not look at the target's blocks, so a missing or corrupt node goes too)."""
        def check(cid: CID) -> None:
            if not (force or recursive) and self.kind(cid) == "directory":
                raise IsADirectory(f"{path} is a directory, use -r to remove directories")
        return self._remove(root, path, check)

    def rmdir(self, root: CID, path: str) -> CID:
        """Remove an empty directory (POSIX rmdir): ENOTEMPTY, ENOTDIR otherwise."""
        def check(cid: CID) -> None:
            if self.kind(cid) != "directory":
                raise NotADirectory(f"{path}: not a directory")
            if len(self.dir_state(cid, path)):
                raise DirectoryNotEmpty(f"{path}: directory not empty")
        return self._remove(root, path, check)

    def _remove(self, root: CID, path: str, check: Callable[[CID], None]) -> CID:
        """Drop the entry ``path`` once ``check(its CID)`` has not raised; ENOENT when it
        does not exist, InvalidInput for the root."""
        segs = split_path(path)
        if not segs:
            raise InvalidInput("cannot delete root")

        def mutate(entries: _Edit) -> bool:
            entry = entries.get(segs[-1])
            if entry is None:
                raise NotFound(f"{path}: file does not exist")
            check(entry[0])
            del entries[segs[-1]]
            return True
        return self.update(root, segs[:-1], mutate)

    def mv(self, root: CID, src: str, dst: str) -> tuple[CID, str]:
        """Move ``src`` to ``dst``; into ``dst`` when it is a directory (kubo); an existing
        file at the target is replaced; a directory there raises AlreadyExists. The new
        root, and the path ``src`` is at now."""
        s, d = split_path(src), split_path(dst)
        if not s:
            raise InvalidInput("cannot move root")
        parent = self.lookup(root, s[:-1])
        assert parent is not None
        entry = self.dir_state(parent, join(s[:-1])).get(s[-1])
        if entry is None:
            raise NotFound(f"{src}: file does not exist")
        cid, tsize = entry
        if d == s:
            return root, join(s)
        existing = self.lookup(root, d, missing_ok=True)
        target = d + [s[-1]] if existing is not None and self.kind(existing) == "directory" else d
        if target == s:
            return root, join(s)
        if target[:len(s)] == s:
            raise InvalidInput(f"cannot move {src} into itself ({dst})")
        at_target = self.lookup(root, target, missing_ok=True) if target != d else existing
        if at_target is not None and self.kind(at_target) == "directory":
            raise AlreadyExists(f"{join(target)}: directory already has entry by that name")
        self.lookup(root, target[:-1])  # the target's parent must exist: NotFound otherwise
        root = self.rm(root, src, force=True)
        return self._add(root, target, cid, tsize, replace=True), join(target)

    def source_cid(self, root: CID, src: str) -> CID:
        """``/ipfs/<cid>/...`` (resolved through the store) or an MFS path -> CID."""
        if src.startswith(("/ipfs/", "ipfs://")):
            cid, segs = split_ipfs_path(src)
            return self.reader.resolve(cid, segs)
        if src.startswith("/ipns/"):
            raise InvalidInput(f"{src}: resolve IPNS names before copying")
        return self.resolve(root, src)

    def cp(self, root: CID, src: str, dst: str, parents: bool = False) -> CID:
        """Link ``src``'s CID at ``dst`` (no bytes copied); AlreadyExists when dst exists."""
        cid = self.source_cid(root, src)
        if cid.codec not in (DAG_PB, RAW):
            raise InvalidInput(f"{src}: cannot add a {cid.codec_name} node to MFS")
        tsize = self.reader.stat(cid).cumulative_size
        d = split_path(dst)
        if not d:
            raise AlreadyExists("/: directory already has entry by that name")
        return self._add(root, d, cid, tsize, parents)

    def symlink(self, root: CID, path: str, target: str) -> CID:
        """Create a UnixFS symlink node at ``path`` pointing to ``target`` (not checked)."""
        segs = split_path(path)
        if not segs:
            raise AlreadyExists("/: file already exists")
        payload = unixfs.UnixFSData(unixfs.SYMLINK, data=dagpb.name_bytes(target))
        block = dagpb.PBNode(data=payload.encode()).encode()
        return self._add(root, segs, self.put_node(block), len(block))


__all__ = ["Tree", "split_path", "rechunk", "READ_PIECE"]
