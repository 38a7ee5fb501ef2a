"""Pins with kubo's semantics: recursive and direct, optionally named, indirect by walking.

State lives in one JSON file (``<repo>/pins.json``: ``{"version": 1, "recursive":
{cid: name}, "direct": {cid: name}}``), rewritten whole on every change: temporary file,
fsync, rename, fsync of the folder. A crash leaves the previous or the new pin set, never a
mix. Before a recursive pin is recorded the blockstore is synced, so a recorded pin never
points at blocks lost in the same crash.

Rules (kubo's ``pin add`` / ``pin rm``):

- ``add(cid, recursive=True)`` needs the whole DAG locally (walked with ``links_of``); a
  missing block raises :class:`BlockNotFound` naming it. It replaces a direct pin of the same
  CID. A name given to an already pinned CID replaces its name.
- ``add(cid, recursive=False)`` needs the root block; on a recursively pinned CID it raises
  ``"<cid> already pinned recursively"`` (InvalidInput).
- ``rm(cid, recursive=True)`` removes a recursive or direct pin; ``recursive=False`` on a
  recursive pin raises ``"<cid> is pinned recursively"``; anything else not pinned raises
  NotFound ``"not pinned or pinned indirectly"``.

Pins are keyed by CID as kubo does (a CIDv0 and its CIDv1 are different pins).

Concurrency: safe from several threads. ``_lock`` (a threading.Lock) guards the two dicts
and the file write; DAG walks and block reads happen outside it. Lock order: GCLock (held by
the caller, see gc.py) -> ``Pinner._lock`` -> blockstore's internal lock. Blocking: call
from a worker thread, not the trio loop.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ...errors import BlockNotFound, InvalidInput, McpfsError, NotFound
from .blockstore import Blockstore
from .cid import CID
from .links import iter_dag

PINS_FILE: Final = "pins.json"
FORMAT_VERSION: Final = 1
RECURSIVE: Final = "recursive"
DIRECT: Final = "direct"
INDIRECT: Final = "indirect"
PIN_TYPES: Final = ("all", RECURSIVE, DIRECT, INDIRECT)
ERR_NOT_PINNED: Final = "not pinned or pinned indirectly"  # kubo's ErrNotPinned


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: temp file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise McpfsError(f"cannot write {path}: {exc.strerror}") from None
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def walk_dag(store: Blockstore, root: CID, missing_ok: bool = False) -> Iterator[CID]:
    """Every distinct CID of the DAG under ``root`` (root first, depth-first).

    A missing block raises BlockNotFound naming it (or is skipped with ``missing_ok``).
    """
    try:
        for cid, _block in iter_dag(store, [root], skip_missing=missing_ok):
            yield cid
    except BlockNotFound as exc:
        raise BlockNotFound(f"block not found locally, cannot pin: {exc}") from None


class Pinner:
    """The pin set of one repo; see the module docstring for rules, storage and locking."""

    def __init__(self, repo_dir: str | os.PathLike[str], store: Blockstore) -> None:
        self.path = Path(repo_dir) / PINS_FILE
        self.store = store
        self._lock = threading.Lock()
        self._recursive: dict[CID, str | None] = {}
        self._direct: dict[CID, str | None] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            state = json.loads(self.path.read_text())
            if state.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {state.get('version')!r}")
            self._recursive = {CID.decode(k): v for k, v in state[RECURSIVE].items()}
            self._direct = {CID.decode(k): v for k, v in state[DIRECT].items()}
        except (ValueError, KeyError, AttributeError, InvalidInput) as exc:
            raise McpfsError(f"{self.path}: unreadable pin state: {exc}") from None

    def _save(self) -> None:
        """Write the state file; caller holds ``_lock``."""
        state = {"version": FORMAT_VERSION,
                 RECURSIVE: {str(c): n for c, n in sorted(self._recursive.items())},
                 DIRECT: {str(c): n for c, n in sorted(self._direct.items())}}
        atomic_write(self.path, json.dumps(state, indent=1).encode())

    # ---------------------------------------------------------------- changes
    def add(self, cid: CID, recursive: bool = True, name: str | None = None) -> None:
        """Pin ``cid``; see the module docstring. Errors leave the pin set unchanged."""
        with self._lock:
            if recursive and name is None and cid in self._recursive:
                return  # already pinned: kubo does not walk again either
        if recursive:
            for _ in walk_dag(self.store, cid):
                pass
        elif not self.store.has(cid):
            raise BlockNotFound(f"block not found locally, cannot pin: {cid}")
        self.store.sync()
        with self._lock:
            if recursive:
                if cid in self._recursive and name is None:
                    return
                self._direct.pop(cid, None)
                self._recursive[cid] = name if name is not None else self._recursive.get(cid)
            else:
                if cid in self._recursive:
                    raise InvalidInput(f"{cid} already pinned recursively")
                if cid in self._direct and name is None:
                    return
                self._direct[cid] = name if name is not None else self._direct.get(cid)
            self._save()

    def rm(self, cid: CID, recursive: bool = True) -> None:
        """Unpin ``cid``; NotFound "not pinned or pinned indirectly" when it has no pin."""
        with self._lock:
            if cid in self._recursive:
                if not recursive:
                    raise InvalidInput(f"{cid} is pinned recursively")
                del self._recursive[cid]
            elif cid in self._direct:
                del self._direct[cid]
            else:
                raise NotFound(ERR_NOT_PINNED)
            self._save()

    # ---------------------------------------------------------------- queries
    def recursive_roots(self) -> list[CID]:
        with self._lock:
            return list(self._recursive)

    def direct_roots(self) -> list[CID]:
        with self._lock:
            return list(self._direct)

    def ls(self, type: str = "all") -> Iterator[tuple[CID, str, str | None]]:  # noqa: A002
        """(cid, type, name) for each pin of ``type`` ("all", "recursive", "direct",
        "indirect"). Indirect pins are the blocks under recursive pins that are not pinned
        themselves; missing blocks under a root are skipped. The sets are snapshotted first:
        changes during iteration are not seen."""
        if type not in PIN_TYPES:
            raise InvalidInput(f"invalid pin type {type!r}; must be one of {', '.join(PIN_TYPES)}")
        with self._lock:
            rec, direct = dict(self._recursive), dict(self._direct)
        if type in ("all", RECURSIVE):
            for cid, name in sorted(rec.items()):
                yield cid, RECURSIVE, name
        if type in ("all", DIRECT):
            for cid, name in sorted(direct.items()):
                yield cid, DIRECT, name
        if type in ("all", INDIRECT):
            done: set[CID] = set(rec) | set(direct)
            for root in sorted(rec):
                for cid in walk_dag(self.store, root, missing_ok=True):
                    if cid not in done:
                        done.add(cid)
                        yield cid, INDIRECT, None

    def is_pinned(self, cid: CID) -> str | None:
        """"recursive", "direct" or "indirect" (truthy) when ``cid`` is pinned, else None.

        Indirect lookups walk every recursive DAG (missing blocks skipped): O(pinned blocks).
        """
        with self._lock:
            if cid in self._recursive:
                return RECURSIVE
            if cid in self._direct:
                return DIRECT
            roots = list(self._recursive)
        for root in roots:
            for found in walk_dag(self.store, root, missing_ok=True):
                if found == cid:
                    return INDIRECT
        return None


__all__ = ["Pinner", "atomic_write", "walk_dag", "RECURSIVE", "DIRECT", "INDIRECT"]
