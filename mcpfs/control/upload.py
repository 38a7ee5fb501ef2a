"""``add`` of a kubo multipart upload: parts -> UnixFS DAGs, kubo's output lines.

Each file part is imported as it streams in (chunked and hashed by the same importer as
the CLI's local add, so the CIDs are identical); directory parts and the parent folders
of nested names become directories, built once the body has ended, children sorted by
name. Output order equals the CLI's local ``add``: for each top-level entry in order of
arrival, its files as they arrived, then its directories in post-order; with
``wrap`` a final wrapper directory with an empty Name. A part without a filename (stdin)
is named by its CID, as kubo prints it.

Resources and errors: runs in one worker thread, holding the GC writer lock from the first
block written until the root is pinned (unless ``only_hash``, which writes nothing). A
malformed body, an unsafe name (``.``, ``..``) or a name given twice raises
:class:`InvalidInput`; blocks already written stay for GC.
"""

from __future__ import annotations

from typing import Any

from ..backends.ipfs.add import Adder, AddEvent
from ..backends.ipfs.blockstore import NullBlockstore
from ..backends.ipfs.directory import build_directory
from ..backends.ipfs.importer import Imported, ImportParams
from ..errors import InvalidInput
from .multipart import MultipartStream
from .ops import RepoOps, add_line

Tree = dict[str, Any]  # name -> Tree (directory) or Imported


def _segments(name: str) -> list[str]:
    segments = [s for s in name.split("/") if s]
    for segment in segments:
        if segment in (".", ".."):
            raise InvalidInput(f"refusing unsafe path {name!r}")
    return segments


def _name_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class _Upload:
    def __init__(self, adder: Adder) -> None:
        self.adder = adder
        self.tops: Tree = {}  # insertion order = arrival order of top-level entries
        self.lines: dict[str, list[dict[str, str]]] = {}

    def _parent(self, segments: list[str]) -> Tree:
        node = self.tops
        for segment in segments[:-1]:
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise InvalidInput(f"{segment!r} is both a file and a directory")
            node = child
        return node

    def part(self, kind: str, name: str, body) -> None:
        segments = _segments(name)
        if not segments:  # an unnamed stream (stdin): named by its CID
            if kind != "file":
                raise InvalidInput("a directory or symlink part needs a name")
            root = self.adder.stream(body)
            segments = [str(root.cid)]
            self.tops[segments[0]] = root
            self.lines.setdefault(segments[0], []).append(add_line(AddEvent(
                segments[0], root, False)))
            return
        parent = self._parent(segments)
        leaf = segments[-1]
        if kind == "directory":
            if not isinstance(parent.setdefault(leaf, {}), dict):
                raise InvalidInput(f"{name!r} given twice")
            return
        if leaf in parent:
            raise InvalidInput(f"{name!r} given twice")
        if kind == "symlink":
            target = body.read().decode("utf-8", "surrogateescape")
            parent[leaf] = self.adder.symlink(target)
        else:
            parent[leaf] = self.adder.stream(body)
        path = "/".join(segments)
        self.lines.setdefault(segments[0], []).append(add_line(AddEvent(
            path, parent[leaf], False)))

    def _build(self, tree: Tree, name: str, out: list[dict[str, str]]) -> Imported:
        entries = []
        for child in sorted(tree, key=_name_key):
            sub = tree[child]
            if isinstance(sub, dict):
                sub = self._build(sub, f"{name}/{child}", out)
            entries.append((child, sub.cid, sub.tsize))
        root = build_directory(entries, self.adder.params, self.adder.put_node)
        out.append(add_line(AddEvent(name, root, True)))
        return root

    def finish(self, wrap: bool) -> tuple[list[dict[str, str]], Imported | None]:
        out: list[dict[str, str]] = []
        roots: list[tuple[str, Imported]] = []
        for top, value in self.tops.items():
            out.extend(self.lines.get(top, []))
            if isinstance(value, dict):
                value = self._build(value, top, out)
            roots.append((top, value))
        last = roots[-1][1] if roots else None
        if wrap and roots:
            last = build_directory([(n, r.cid, r.tsize) for n, r in roots], self.adder.params,
                                   self.adder.put_node)
            out.append(add_line(AddEvent("", last, True)))
        return out, last


def add_parts(ops: RepoOps, stream: MultipartStream, params: ImportParams, *,
              only_hash: bool = False, wrap: bool = False, pin: bool = True
              ) -> list[dict[str, str]]:
    """Import every part of ``stream``; return kubo's add lines (see the module docstring)."""
    store = NullBlockstore() if only_hash else ops.repo.store
    upload = _Upload(Adder(store, params))
    with ops.adding(only_hash):
        for part in stream.parts():
            upload.part(part.kind, part.name, part)
        lines, root = upload.finish(wrap)
        if not only_hash:
            ops.finish_add(root.cid if root else None, pin)
    if not lines:
        raise InvalidInput("no files were given to add")
    return lines


__all__ = ["add_parts"]
