"""The provenance DB: content identity <-> locations, and the transfers of ``mcpfs cp``.

One SQLite file in the state dir (``bridge.sqlite``, WAL). A *location* is a path inside
the mount (``/mfs/a/b``, ``/s3/bucket/key``, ``/hf/owner/repo/file``, ``/ipfs/<cid>``) with
the *version* it had when its identity was learnt (the CID for /mfs and /ipfs, the ETag for
/s3, the commit for /hf). The *identity* is the content's CID under the bridge's import
profile (see core.py). ``source`` is where a copied file came from (``user.mcpfs.source``).

Rows of ``transfers`` are the jobs of ``mcpfs cp``: created ``running``, ``done`` or
``failed`` at the end; a daemon killed mid-transfer finds its ``running`` rows at the next
start and resumes them (transfers.py).

Writes are queued (:meth:`ProvenanceDB.record` never blocks: it updates the in-memory
cache and hands the row to the writer thread, which waits ``COALESCE`` seconds after the
first row of a batch and commits all that came meanwhile in one transaction: a stream of
small files written through the mount costs a transaction per ``COALESCE``, not per file),
so a FUSE commit does not wait for SQLite (the rows are advisory: a crash loses at most
that much). Reads of locations go to the cache first, then to
SQLite in a worker thread. Transfer rows are written synchronously (in worker threads): a
job must be on disk before ``mcpfs cp`` is told it started.

Concurrency: one write connection owned by the writer thread; one read connection guarded by
``_read_lock`` (used from worker threads); ``_cache`` (an LRU) guarded by ``_cache_lock``,
taken from any thread for O(1) work. :meth:`flush` waits until every queued write is
committed (tests, shutdown).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cachetools import LRUCache

log = logging.getLogger("mcpfs.bridge")

DB_FILE: Final = "bridge.sqlite"
CACHE_ENTRIES: Final = 100_000  # locations kept in memory
BATCH: Final = 256  # queued writes committed in one transaction
COALESCE: Final = 0.02  # seconds the writer waits for more rows after the first of a batch
RUNNING, DONE, FAILED = "running", "done", "failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS locations (
    location TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    version TEXT,
    size INTEGER NOT NULL,
    source TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS locations_identity ON locations(identity);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    state TEXT NOT NULL,
    route TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Location:
    location: str
    identity: str
    version: str | None
    size: int
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    id: int
    src: str
    dst: str
    state: str
    route: str | None
    total: int
    done: int
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {"Id": self.id, "Src": self.src, "Dst": self.dst, "State": self.state,
                "Route": self.route, "Total": self.total, "Done": self.done,
                "Error": self.error}


_FORGET = object()


class ProvenanceDB:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._write.execute("PRAGMA journal_mode=WAL")
        self._write.execute("PRAGMA synchronous=NORMAL")
        self._write.executescript(SCHEMA)
        self._read = sqlite3.connect(self.path, check_same_thread=False)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()  # the writer thread vs synchronous transfer rows
        self._cache: LRUCache[str, Location | None] = LRUCache(CACHE_ENTRIES)
        self._cache_lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="bridge-db", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- locations
    def record(self, loc: Location) -> None:
        """Remember ``loc`` (replacing what its location held); never blocks."""
        with self._cache_lock:
            self._cache[loc.location] = loc
        self._queue.put(loc)

    def forget(self, location: str) -> None:
        """The location no longer holds what was recorded (deleted, changed)."""
        with self._cache_lock:
            self._cache[location] = None
        self._queue.put((_FORGET, location))

    def rename(self, old: str, new: str) -> None:
        """A file moved within its subtree: its row follows it (queued)."""
        with self._cache_lock:
            loc = self._cache.get(old)
            self._cache[old] = None
            if loc is not None:
                self._cache[new] = Location(new, loc.identity, loc.version, loc.size,
                                            loc.source)
            else:
                self._cache.pop(new, None)
        self._queue.put((self._rename_sync, old, new))

    def cached(self, location: str) -> Location | None:
        """The location's row if the cache holds it (no I/O: safe on the trio thread)."""
        with self._cache_lock:
            return self._cache.get(location)

    def lookup_sync(self, location: str) -> Location | None:
        """The location's row (cache, then SQLite; blocking)."""
        with self._cache_lock:
            if location in self._cache:
                return self._cache[location]
        with self._read_lock:
            row = self._read.execute(
                "SELECT location, identity, version, size, source FROM locations "
                "WHERE location = ?", (location,)).fetchone()
        loc = Location(*row) if row else None
        with self._cache_lock:
            self._cache.setdefault(location, loc)
        return loc

    def locations_sync(self, identity: str) -> list[Location]:
        """Every location recorded for ``identity`` (blocking; queued writes first)."""
        self.flush()
        with self._read_lock:
            rows = self._read.execute(
                "SELECT location, identity, version, size, source FROM locations "
                "WHERE identity = ? ORDER BY location", (identity,)).fetchall()
        return [Location(*r) for r in rows]

    # ---------------------------------------------------------------- transfers
    def _sync_write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._write_lock:
            return fn(self._write)

    def add_transfer_sync(self, src: str, dst: str, total: int = 0) -> int:
        now = time.time()
        return self._sync_write(lambda db: db.execute(
            "INSERT INTO transfers (src, dst, state, total, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?)", (src, dst, RUNNING, total, now, now)).lastrowid)

    def update_transfer_sync(self, tid: int, **fields: Any) -> None:
        if not fields:
            return
        names = ", ".join(f"{k} = ?" for k in fields)
        values = [*fields.values(), time.time(), tid]
        self._sync_write(lambda db: db.execute(
            f"UPDATE transfers SET {names}, updated = ? WHERE id = ?", values))

    def transfers_sync(self, state: str | None = None, tid: int | None = None
                       ) -> list[Transfer]:
        query = "SELECT id, src, dst, state, route, total, done, error FROM transfers"
        args: list[Any] = []
        if tid is not None:
            query += " WHERE id = ?"
            args.append(tid)
        elif state is not None:
            query += " WHERE state = ?"
            args.append(state)
        with self._read_lock:
            rows = self._read.execute(query + " ORDER BY id", args).fetchall()
        return [Transfer(*r) for r in rows]

    # ---------------------------------------------------------------- writer thread
    def _rename_sync(self, db: sqlite3.Connection, old: str, new: str) -> None:
        db.execute("UPDATE OR REPLACE locations SET location = ? WHERE location = ?",
                   (new, old))

    def _apply(self, db: sqlite3.Connection, item: Any) -> None:
        if isinstance(item, Location):
            db.execute("INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?, ?, ?)",
                       (item.location, item.identity, item.version, item.size, item.source,
                        time.time()))
        elif item[0] is _FORGET:
            db.execute("DELETE FROM locations WHERE location = ?", (item[1],))
        else:
            item[0](db, *item[1:])

    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            if not isinstance(item, threading.Event) and self._queue.qsize() < BATCH:
                time.sleep(COALESCE)  # let the rows of the next files join this batch
            while len(batch) < BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._commit(batch)
                    return
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[Any]) -> None:
        markers = [item for item in batch if isinstance(item, threading.Event)]
        batch = [item for item in batch if not isinstance(item, threading.Event)]
        if batch:
            self._commit_rows(batch)
        for marker in markers:
            marker.set()

    def _commit_rows(self, batch: list[Any]) -> None:
        with self._write_lock:
            try:
                self._write.execute("BEGIN")
                for item in batch:
                    self._apply(self._write, item)
                self._write.execute("COMMIT")
            except sqlite3.Error as exc:  # provenance is advisory: log, never crash
                log.error("provenance DB write failed: %s", exc)
                try:
                    self._write.execute("ROLLBACK")
                except sqlite3.Error:
                    pass

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (blocking) until every queued write is committed."""
        if not self._thread.is_alive():
            return
        marker = threading.Event()
        self._queue.put(marker)  # set by the writer once the batch before it is committed
        marker.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(10)
        self._write.close()
        self._read.close()


__all__ = ["ProvenanceDB", "Location", "Transfer", "RUNNING", "DONE", "FAILED"]
