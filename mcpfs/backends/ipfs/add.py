"""``ipfs add`` of local files and folders: the walk, the events, the wrapping.

``add_path`` yields an :class:`AddEvent` per file as soon as it is imported (streaming,
flat memory) and then one per directory in post-order with children sorted by name, the
order kubo's adder prints them (``outputDirs``). Hidden entries (names starting with ``.``)
are skipped inside folders unless ``hidden=True``, as kubo does; symlinks become UnixFS
symlink nodes, never followed. ``wrap=True`` adds a directory around the added items and
reports it with an empty name.

Errors: an unreadable file raises the OSError as :class:`McpfsError` naming the path; a
folder without ``recursive`` raises :class:`IsADirectory` as kubo's "use -r" error.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ...errors import IsADirectory, McpfsError, NotFound
from . import dagpb, unixfs
from .blockstore import Blockstore
from .directory import build_directory
from .hamt import hash_name
from .importer import Imported, ImportParams, import_stream


@dataclass(frozen=True, slots=True)
class AddEvent:
    name: str  # path as given on the command line (relative parts joined with "/")
    root: Imported
    is_dir: bool


class Adder:
    """Imports local paths into ``store`` with ``params``; see the module docstring."""

    def __init__(self, store: Blockstore, params: ImportParams, *, hidden: bool = False,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.params = params
        self.hidden = hidden
        self.on_bytes = on_bytes

    def put_node(self, block: bytes):
        cid = self.params.node_cid(block)
        self.store.put(cid, block)
        return cid

    def symlink(self, target: str) -> Imported:
        payload = unixfs.UnixFSData(unixfs.SYMLINK, data=os.fsencode(target))
        block = dagpb.PBNode(data=payload.encode()).encode()
        return Imported(self.put_node(block), len(os.fsencode(target)), len(block))

    def file(self, path: str) -> Imported:
        try:
            with open(path, "rb", buffering=0) as fh:
                return import_stream(self.store, fh, self.params, self.on_bytes)
        except OSError as exc:
            raise McpfsError(f"{path}: {exc.strerror}", errno=exc.errno) from None

    def stream(self, fh) -> Imported:
        return import_stream(self.store, fh, self.params, self.on_bytes)

    def add_path(self, path: str, name: str, recursive: bool) -> Iterator[AddEvent]:
        """Import ``path`` (shown as ``name``); the last event is its root."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            if exc.errno == 2:
                raise NotFound(f"{path}: no such file or directory") from None
            raise McpfsError(f"{path}: {exc.strerror}", errno=exc.errno) from None
        if stat_mod.S_ISLNK(st.st_mode):
            yield AddEvent(name, self.symlink(os.readlink(path)), False)
        elif stat_mod.S_ISDIR(st.st_mode):
            if not recursive:
                raise IsADirectory(f"{path} is a directory, use the '-r' flag to add directories")
            dirs: list[AddEvent] = []
            yield from self._dir(path, name, dirs)
            yield from dirs
        else:
            yield AddEvent(name, self.file(path), False)

    def _dir(self, path: str, name: str, dirs: list[AddEvent]) -> Iterator[AddEvent]:
        """Yield file events while walking; append directory events to ``dirs`` in kubo's
        ``outputDirs`` order: post-order, children in listing order (by name, or by hash
        for a HAMT directory)."""
        try:
            with os.scandir(path) as it:
                children = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise McpfsError(f"{path}: {exc.strerror}", errno=exc.errno) from None
        entries: list[tuple[str, object, int]] = []
        sub_dirs: dict[str, list[AddEvent]] = {}
        for child in children:
            if child.name.startswith(".") and not self.hidden:
                continue
            child_name = f"{name}/{child.name}" if name else child.name
            if child.is_dir(follow_symlinks=False):
                sub_dirs[child.name] = []
                sub = yield from self._dir(child.path, child_name, sub_dirs[child.name])
            else:
                sub = None
                for event in self.add_path(child.path, child_name, True):
                    yield event
                    sub = event.root
            entries.append((child.name, sub.cid, sub.tsize))
        root = build_directory(entries, self.params, self.put_node)
        order = sorted(sub_dirs, key=hash_name) if root.sharded else sub_dirs
        for child_name in order:
            dirs.extend(sub_dirs[child_name])
        dirs.append(AddEvent(name, root, True))
        return root

    def add_many(self, paths: list[str], *, recursive: bool, wrap: bool) -> Iterator[AddEvent]:
        """Import each path; with ``wrap`` also a directory holding them (name "")."""
        tops: list[tuple[str, Imported]] = []
        for path in paths:
            name = os.path.basename(os.path.normpath(path))
            last = None
            for event in self.add_path(path, name, recursive):
                yield event
                last = event
            assert last is not None
            tops.append((name, last.root))
        if wrap:
            root = build_directory([(n, r.cid, r.tsize) for n, r in tops], self.params,
                                   self.put_node)
            yield AddEvent("", root, True)
