"""Modes and modification times set through the mount, kept beside a backend's data.

Why: ``chmod``, ``touch -d``, ``cp -p``, ``tar x`` and ``rsync -a`` set a file's mode and
mtime. rsync's quick check (size and mtime) skips unchanged files only when they stick; a
script needs its x bit; a file just written should not show the daemon's start time.

/mfs (mounts/mfs.py): UnixFS can carry both in a file's root node, but then the same bytes
would no longer have the CID ``mcpfs add`` (and ``ipfs add``) gives them, and /mfs links,
copies across subtrees and dedup all work by CID. /s3 (mounts/s3_times.py): an object's
``x-amz-meta-mtime`` (rclone's convention, which we also write) is not in listings, so
showing it would cost a HEAD per entry of every ``ls -l``.

So they are kept here, per path, each tied to the identity the file had when they were
set (an /mfs file's CID, an S3 object's ETag): a row applies only while the file at that
path still has that identity. A file changed through the mount gets a new row on commit
(mtime: the last write, or the time a writer set; the mode carried over). A file changed
any other way (``mcpfs files``, another S3 client) no longer matches its row and shows the
defaults again, as before this existed.

Rows: path -> (identity, mtime_ns or None, permission bits or None); paths as vfs gives
them (no leading slash). Only regular files have rows. Renames through the mount move rows
(a directory's: all beneath it), unlink drops them.

Persistence: one SQLite file per subtree (``<repo>/mfs-attrs.sqlite``,
``<state>/s3-attrs.sqlite``). Changes are kept in memory and written in one transaction by
:meth:`KeptAttrs.save` (a worker thread), every ``SAVE_INTERVAL`` seconds while
:meth:`KeptAttrs.run` runs and at unmount. A crash loses at most the last interval's
changes: those files show the defaults; no byte of any file depends on this. A failed save
(disk full) keeps the changes for the next one and logs a warning.

Concurrency: the rows are read and changed on the trio thread only; ``save`` takes the
pending changes there and hands them to one worker thread at a time (``_save_lock``), the
only user of the SQLite connection.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path
from typing import Final

import trio

from .base import FILE, Attr

log = logging.getLogger("mcpfs.mounts")

SAVE_INTERVAL: Final = 2.0  # seconds between saves of pending changes
Row = tuple[str, "int | None", "int | None"]  # (identity, mtime_ns, permission bits)


class KeptAttrs:
    """The rows, loaded at construction (blocking: call from a worker thread or at
    startup); see the module docstring."""

    def __init__(self, db_path: Path | str) -> None:
        """``db_path``: the SQLite file (its folder made), or ":memory:" (nothing kept
        past the process: tests, and S3 mounts built outside the daemon)."""
        self._what = Path(db_path).name
        try:
            self._db, self._rows = _open(db_path)
        except (sqlite3.Error, OSError) as exc:  # the mount works on: defaults shown
            log.warning("%s unusable (%s): modes and mtimes set through the mount are "
                        "kept in memory only until it is fixed or removed", db_path, exc)
            self._db, self._rows = _open(":memory:")
        self._pending: dict[str, Row | None] = {}  # changed since the last save (None: gone)
        self._save_lock = trio.Lock()  # one save (one thread on the connection) at a time

    # ---------------------------------------------------------------- reading
    def __bool__(self) -> bool:
        """Whether any mode or mtime is kept (else :meth:`overlay` changes nothing)."""
        return bool(self._rows)

    def overlay(self, path: str, attr: Attr, identity: str | None = None) -> Attr:
        """``attr`` with the mode and mtime kept for ``path``, when its row is for the
        identity the file has now (``identity``, else ``attr.cid``)."""
        row = self._rows.get(path) if self._rows else None
        if row is None or attr.kind != FILE or (identity or attr.cid_text) != row[0]:
            return attr
        return dataclasses.replace(
            attr, mtime_ns=attr.mtime_ns if row[1] is None else row[1],
            perm=attr.perm if row[2] is None else row[2])

    def mtime(self, path: str, identity: str | None) -> int | None:
        """The mtime kept for ``path`` while it has ``identity``."""
        row = self._matching(path, identity)
        return None if row is None else row[1]

    def perm(self, path: str, identity: str | None) -> int | None:
        """The mode kept for ``path`` while it has ``identity``."""
        row = self._matching(path, identity)
        return None if row is None else row[2]

    def _matching(self, path: str, identity: str | None) -> Row | None:
        row = self._rows.get(path)
        return row if row is not None and row[0] == identity else None

    # ---------------------------------------------------------------- changes
    def set(self, path: str, identity: str, mtime_ns: int | None = None,
            perm: int | None = None) -> None:
        """The file at ``path`` (now ``identity``) has this mtime and mode; a None keeps
        what its row said for the same identity."""
        old = self._rows.get(path)
        if old is not None and old[0] == identity:
            mtime_ns = old[1] if mtime_ns is None else mtime_ns
            perm = old[2] if perm is None else perm
        self._put(path, (identity, mtime_ns, None if perm is None else perm & 0o777))

    def moved(self, src: str, dst: str, is_dir: bool, identity: str | None = None,
              was: str | None = None) -> None:
        """``src`` was renamed to ``dst`` (what ``dst`` held is gone). A file's row goes
        with it; with ``identity`` (an S3 copy's ETag) it is kept for that one, and only
        if it was for ``was``, the identity the source had (else it was stale: dropped)."""
        self.removed(dst, is_dir)
        if not is_dir:
            row = self._rows.get(src)
            if row is not None:
                self._put(src, None)
                if identity is None:
                    self._put(dst, row)
                elif row[0] == was:
                    self._put(dst, (identity, *row[1:]))
            return
        for path in self._below(src):
            row = self._rows[path]
            self._put(path, None)
            self._put(dst + path[len(src):], row)

    def removed(self, path: str, is_dir: bool = False) -> None:
        """``path`` (a directory: everything beneath it) no longer exists."""
        if path in self._rows:
            self._put(path, None)
        if is_dir:
            for gone in self._below(path):
                self._put(gone, None)

    def _below(self, folder: str) -> list[str]:
        """The paths with rows under ``folder`` (a scan of every row: directories only)."""
        prefix = folder + "/"
        return [p for p in self._rows if p.startswith(prefix)]

    def _put(self, path: str, row: Row | None) -> None:
        if row is None:
            self._rows.pop(path, None)
        else:
            self._rows[path] = row
        self._pending[path] = row

    # ---------------------------------------------------------------- persistence
    async def save(self) -> None:
        """Write the pending changes (one transaction, a worker thread). On failure they
        stay pending (unless changed again since) and a warning is logged."""
        async with self._save_lock:
            if not self._pending:
                return
            changes, self._pending = self._pending, {}
            try:
                await trio.to_thread.run_sync(self._write, changes)
            except BaseException as exc:
                for path, row in changes.items():  # newer changes win
                    self._pending.setdefault(path, row)
                if not isinstance(exc, (sqlite3.Error, OSError)):
                    raise  # (cancelled before the thread ran: saved at close)
                log.warning("%s: file modes and times not saved (%s); retried later",
                            self._what, exc)

    def _write(self, changes: dict[str, Row | None]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM attrs WHERE path = ?",
                                 [(p,) for p, row in changes.items() if row is None])
            self._db.executemany(
                "INSERT OR REPLACE INTO attrs (path, cid, mtime_ns, perm) VALUES (?, ?, ?, ?)",
                [(p, *row) for p, row in changes.items() if row is not None])

    async def run(self) -> None:
        """Save every ``SAVE_INTERVAL`` seconds until cancelled (then :meth:`close`)."""
        while True:
            await trio.sleep(SAVE_INTERVAL)
            await self.save()

    async def close(self) -> None:
        """Save what is pending and close the database."""
        with trio.CancelScope(shield=True):
            await self.save()
            async with self._save_lock:  # (no save is running on the connection)
                self._db.close()


def _open(db_path: Path | str) -> tuple[sqlite3.Connection, dict[str, Row]]:
    """The database (its folder made, its table created) and its rows."""
    if db_path != ":memory:":
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(db_path, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS attrs (path TEXT PRIMARY KEY, "
                   "cid TEXT NOT NULL, mtime_ns INTEGER, perm INTEGER)")
        rows = {path: (cid, mtime, perm) for path, cid, mtime, perm
                in db.execute("SELECT path, cid, mtime_ns, perm FROM attrs")}
    except BaseException:
        db.close()
        raise
    return db, rows


__all__ = ["KeptAttrs", "SAVE_INTERVAL"]
