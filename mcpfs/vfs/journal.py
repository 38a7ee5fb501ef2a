"""The write-back journal: one SQLite table in the state dir, one row per pending write.

Row life: ``open`` when a file gets a spool (writes in progress), ``committing`` just before
the spool is imported into its backend, deleted once the commit succeeded, ``failed`` (with
``attempts`` counted) when it did not. At the next start, :meth:`Journal.pending` tells the
daemon what to recover: a ``committing`` or ``failed`` row whose spool still exists is
committed again (its spool is complete: a commit only starts after the writer's last
close), an ``open`` row is discarded with its spool (its writer never closed the file, so
the content was never promised). A commit is all-or-nothing on the backend (MFS links a new
root only after every block is written), so re-running it is safe.

Concurrency: one connection (``check_same_thread=False``) used only from worker threads
through a CapacityLimiter of 1, so exactly one thread touches it at a time; ``_lock`` also
guards synchronous callers (recovery at startup, tests).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import trio

JOURNAL_FILE = "journal.sqlite"
OPEN, COMMITTING, FAILED = "open", "committing", "failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    id INTEGER PRIMARY KEY,
    mount TEXT NOT NULL,
    path TEXT NOT NULL,
    spool TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Row:
    id: int
    mount: str
    path: str
    spool: str
    state: str
    attempts: int


class Journal:
    def __init__(self, state_dir: str | Path) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.file = Path(state_dir) / JOURNAL_FILE
        self._db = sqlite3.connect(self.file, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)

    # ---------------------------------------------------------------- sync API
    def add_sync(self, mount: str, path: str, spool: str) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO writes (mount, path, spool, state, updated) VALUES (?,?,?,?,?)",
                (mount, path, spool, OPEN, time.time()))
            return int(cur.lastrowid)

    def set_sync(self, row_id: int, state: str, path: str | None = None) -> None:
        with self._lock:
            bump = 1 if state == FAILED else 0
            self._db.execute(
                "UPDATE writes SET state=?, path=COALESCE(?, path), attempts=attempts+?, "
                "updated=? WHERE id=?", (state, path, bump, time.time(), row_id))

    def move_sync(self, moves: list[tuple[int, str]]) -> None:
        """Rows whose file was renamed: (row, new path) each, state and attempts kept."""
        with self._lock:
            self._db.executemany("UPDATE writes SET path=? WHERE id=?",
                                 [(path, row_id) for row_id, path in moves])

    def remove_sync(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM writes WHERE id=?", (row_id,))

    def pending(self) -> list[Row]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, mount, path, spool, state, attempts FROM writes ORDER BY id")
            return [Row(*r) for r in rows.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- async API
    async def add(self, mount: str, path: str, spool: str) -> int:
        return await trio.to_thread.run_sync(self.add_sync, mount, path, spool,
                                             limiter=self._limiter)

    async def set(self, row_id: int, state: str, path: str | None = None) -> None:
        await trio.to_thread.run_sync(self.set_sync, row_id, state, path,
                                      limiter=self._limiter)

    async def move(self, moves: list[tuple[int, str]]) -> None:
        await trio.to_thread.run_sync(self.move_sync, moves, limiter=self._limiter)

    async def remove(self, row_id: int) -> None:
        await trio.to_thread.run_sync(self.remove_sync, row_id, limiter=self._limiter)


__all__ = ["Journal", "Row", "OPEN", "COMMITTING", "FAILED"]
