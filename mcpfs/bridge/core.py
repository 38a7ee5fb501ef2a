"""The bridge inside the mount: content identities, and native routes for copies.

Every file read to its end through the mount (a :class:`~.identity.ReadTracker` per read
handle) and every file committed gets a *content identity*: its CID under the bridge's
import profile (``[bridge] profile``, default the MFS import params, i.e. kubo's
defaults), recorded in the provenance DB as identity -> location (db.py). A read of /ipfs or
/mfs whose DAG's CID has the profile's form is not hashed: a copy that needs its identity
compares that CID first, else hashes the DAG (``in_profile_form``).

When a write commits, :meth:`Bridge.before_commit` computes the identity of the written
bytes (from the streaming import or hash that ran while they were written, else by hashing
the spool in a worker thread) and looks for the same bytes somewhere mcpfs knows of: first
the *copy source* (the file the same process had open for reading when it opened this one,
read from offset 0: what ``cp``, ``shutil.copy`` and ``cat a > b`` do), then the DB. Found,
the commit takes the native route instead of moving the bytes again, by telling the Mount
through ``writer.extra``:

- to /mfs, from anything with a DAG of the same bytes in the blockstore (/ipfs, /mfs, an S3
  object whose ``x-amz-meta-ipfs-cid`` names such a DAG): ``link`` = (CID, tsize), nothing
  imported. While such a copy is written, the streaming import only hashes
  (``hash_only``): no block is written unless the bytes turn out to differ;
- to /s3, from an S3 object of the same bytes: ``copy_from`` = (bucket, key, ETag), a
  server-side CopyObject guarded by the ETag (a changed source falls back to the upload);
- to /s3 and /hf always ``ipfs_cid`` (the source's DAG when it has one, else the identity),
  stored as ``x-amz-meta-ipfs-cid`` / in the commit message, so a copy back is a link;
- ``source``: the source's location, shown as ``user.mcpfs.source``.

Errors: the bridge is advisory. A failed identity or lookup leaves the write to the Mount's
normal route; only the Mount's own commit errors reach ``close()``.

Concurrency: the tracker registry (``_readers``) is touched on the trio thread only; the DB
has its own locks (db.py). Hashing and DB reads run in worker threads under ``limiter``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import trio

from ..backends.ipfs.cid import CID, DAG_PB, RAW
from ..backends.ipfs.importer import ImportParams
from ..backends.ipfs.stream_import import StreamImport, hash_pieces
from ..errors import McpfsError
from .db import Location, ProvenanceDB
from .identity import INLINE_MAX, ReadTracker

log = logging.getLogger("mcpfs.bridge")

RECENT_READERS: Final = 10.0  # seconds a closed reader still counts as a copy's source
READERS_PER_PID: Final = 8  # trackers remembered per process
SOURCE_WAIT: Final = 60.0  # seconds a commit waits for its source's identity
HASH_PIECE: Final = 1 << 20  # bytes per read when hashing a spool file
THREADS: Final = 2  # concurrent hashing / DB lookups of the bridge

NATIVE_ROUTES: Final = frozenset({"mfs-link", "s3-copy"})
S3_COPY_MIN: Final = 1 << 20  # bytes below which same-content dedupe into /s3 just uploads


def location_of(mount: str, sub: str) -> str:
    return f"/{mount}/{sub}" if sub else f"/{mount}"


def ipfs_location(cid: str) -> str:
    return f"/ipfs/{cid}"


def in_profile_form(root: CID, size: int, params: ImportParams) -> bool:
    """Whether the DAG ``root`` of a ``size``-byte file has the CID the profile ``params``
    gives such a file (version, codec, hash function). Such a DAG is most likely the
    profile's import of its bytes (kubo's defaults), its CID their identity: its reads are
    not hashed again. Nothing takes that for granted: a copy that needs the identity first
    compares the CID with the written bytes' identity, and only if they differ hashes the
    DAG from the blockstore (``_match``: ``_dag_identity``, which records it)."""
    if root.version != params.cid_version or root.hash_code != params.hash_code:
        return False
    if size <= params.chunk_size and params.uses_raw_leaves:
        return root.codec == RAW
    return root.codec == DAG_PB


def plain_version(version: str | None) -> str | None:
    """A version as recorded: ETags without their quotes (servers differ in quoting the
    ETag of one object between CompleteMultipartUpload, CopyObject and HEAD)."""
    return version.strip('"') if version else version


def parent_pid(pid: int) -> int | None:
    """The parent of a live process (``/proc/<pid>/stat``; one small read), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def hash_file_sync(path: str, params: ImportParams) -> str:
    """The identity of a local file's bytes (blocking)."""
    def pieces():
        with open(path, "rb") as fh:
            while data := fh.read(HASH_PIECE):
                yield data
    return str(hash_pieces(pieces(), params).cid)


class Bridge:
    def __init__(self, db: ProvenanceDB, params: ImportParams, *, repo: Any = None,
                 mfs_params: ImportParams | None = None, stats: Any = None) -> None:
        """``repo``: the node's Repo (block presence, DAG sizes); ``mfs_params``: when they
        equal ``params``, an MFS import's CID is the identity (no second hash)."""
        self.db = db
        self.params = params
        self.repo = repo
        self.stats = stats
        self.identity_from_mfs = mfs_params == params
        self.limiter = trio.CapacityLimiter(THREADS)
        self._readers: dict[int, list[ReadTracker]] = {}
        self.transfers: Any = None  # the daemon's transfers.Transfers (mcpfs cp)
        self._later: deque[Callable[[], None]] = deque()  # identities to compute
        self._later_lock = threading.Lock()
        self._later_running = False

    # ---------------------------------------------------------------- reads
    def track_read(self, mount: str, sub: str, reader: Any, size: int | None,
                   pid: int | None) -> ReadTracker | None:
        """A tracker for a new read handle (trio thread, no I/O)."""
        if size is None:
            return None
        version = plain_version(getattr(reader, "identity", None))
        ipfs_cid = None
        if mount == "ipfs":
            cid = getattr(reader, "cid", None)
            if cid is None:
                return None
            location = ipfs_location(str(cid))
            version = ipfs_cid = str(cid)
        else:
            location = location_of(mount, sub)
            if mount == "mfs":
                ipfs_cid = version
            else:
                ipfs_cid = getattr(reader, "ipfs_cid", None)
        known = self.db.cached(location)
        identity = known.identity if known is not None and known.version == version else None
        if identity is None and ipfs_cid is not None:
            dag = self.db.cached(ipfs_location(ipfs_cid))
            identity = dag.identity if dag is not None else None
        hash_reads = True
        if identity is None and ipfs_cid is not None and ipfs_cid == version:
            dag = getattr(reader, "cid", None)  # /ipfs and /mfs serve this DAG's bytes
            hash_reads = not (isinstance(dag, CID) and in_profile_form(dag, size, self.params))
        tracker = ReadTracker(location, version, size, self.params, self._read_done,
                              pid=pid, ipfs_cid=ipfs_cid, identity=identity,
                              hash_reads=hash_reads)
        if pid is not None:
            now = trio.current_time()
            mine = [t for t in self._readers.get(pid, ())
                    if t.closed_at is None or now - t.closed_at < RECENT_READERS]
            mine.append(tracker)
            self._readers[pid] = mine[-READERS_PER_PID:]
        return tracker

    def closed_read(self, tracker: ReadTracker) -> None:
        tracker.close(trio.current_time())
        # keep the pid's trackers a while (a tool may close its source first), but never
        # let the registry grow with every process that ever read a file
        if len(self._readers) > 1024 and tracker.pid is not None and all(
                t.closed_at is not None for t in self._readers.get(tracker.pid, ())):
            self._readers.pop(tracker.pid, None)

    def _read_done(self, tracker: ReadTracker, identity: str) -> None:
        """A read reached the end (any thread): record the location's identity."""
        old = self.db.cached(tracker.location)
        source = old.source if old is not None and old.version == tracker.version else None
        self.db.record(Location(tracker.location, identity, tracker.version, tracker.size,
                                source))
        if tracker.ipfs_cid is not None and not tracker.location.startswith("/ipfs/") \
                and tracker.ipfs_cid == tracker.version:
            self.db.record(Location(ipfs_location(tracker.ipfs_cid), identity,
                                    tracker.ipfs_cid, tracker.size))

    def candidate(self, pid: int | None, dest: str) -> ReadTracker | None:
        """The copy source of a file ``pid`` opens for writing at ``dest``: its most
        recent reader that read from the start, else one of a child of ``pid`` (``sh -c
        'cat a > b'``: the shell opens b, its child cat reads a) (trio thread)."""
        if pid is None:
            return None
        found = self._recent(pid, dest)
        if found is None:
            for other in list(self._readers):
                if other != pid and parent_pid(other) == pid:
                    found = self._recent(other, dest)
                    if found is not None:
                        break
        return found

    def _recent(self, pid: int, dest: str) -> ReadTracker | None:
        now = trio.current_time()
        for tracker in reversed(self._readers.get(pid, ())):
            if tracker.location == dest or not tracker.read_from_start:
                continue
            if tracker.closed_at is None or now - tracker.closed_at < RECENT_READERS:
                return tracker
        return None

    # ---------------------------------------------------------------- writes
    def write_stream(self) -> StreamImport:
        """The identity hash of a file written sequentially to a subtree without a
        streaming import of its own (/s3, /hf)."""
        return StreamImport.hashing(self.params)

    async def _thread(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn, limiter=self.limiter)

    async def _identity_of_spool(self, spool: Any) -> str:
        data = spool.content()  # (a memory spool, or a small one's retained bytes)
        if data is not None:

            def identity() -> str:
                return str(hash_pieces([data], self.params).cid)
            if len(data) <= INLINE_MAX:  # small: hashed here, as a small read is (identity.py)
                return identity()
            return await self._thread(identity)
        return await self._thread(lambda: hash_file_sync(spool.path, self.params))

    async def before_commit(self, mount: str, sub: str, writer: Any,
                            source: ReadTracker | None, size: int | None = None) -> None:
        """Fill ``writer.extra`` with the identity and the route (module docstring).
        ``size``: the file's size, when known (a small file is uploaded, not copied from
        an object of the same bytes: ``S3_COPY_MIN``)."""
        extra = writer.extra
        if source is not None and size is not None and source.size is not None \
                and size != source.size:
            source = None  # not a copy of what this process read: no hashing to compare
        try:
            identity = await self._write_identity(mount, writer, source)
            if identity is None:
                return
            extra["identity"] = identity
            match = await self._match(identity, source)
            if match is not None:
                extra["source"] = match.location
            if mount == "mfs":
                await self._route_to_mfs(identity, match, extra)
            elif mount == "s3":
                await self._route_to_s3(identity, match, extra, size)
                extra["ipfs_cid"] = await self._dag_of(identity, match) or identity
            else:
                extra["ipfs_cid"] = await self._dag_of(identity, match) or identity
        except Exception as exc:  # noqa: BLE001 - advisory: the normal route still works
            log.warning("bridge: no identity for /%s/%s: %s", mount, sub, exc)
            log.debug("bridge failure", exc_info=True)
            for key in ("link", "copy_from", "route"):
                extra.pop(key, None)

    async def _write_identity(self, mount: str, writer: Any,
                              source: ReadTracker | None) -> str | None:
        extra = writer.extra
        if extra.get("identity"):  # the caller hashed the bytes as it wrote them
            return extra["identity"]
        stream: StreamImport | None = extra.pop("stream", None)
        if stream is not None:
            imported = await self._thread(stream.finish)
            if imported is not None:
                if not stream.only_hash:
                    extra["imported"] = imported  # /mfs links the DAG it built
                if mount != "mfs" or self.identity_from_mfs:
                    return str(imported.cid)
        if mount == "mfs" and source is None and self.identity_from_mfs:
            return None  # the import itself gives the identity (after_commit)
        return await self._identity_of_spool(writer.spool)

    async def _match(self, identity: str, source: ReadTracker | None) -> ReadTracker | None:
        """``source`` when it holds the same bytes (waiting for its hash if needed)."""
        if source is None:
            return None
        if source.ipfs_cid is not None and source.ipfs_cid == identity:
            return source
        got = source.identity
        if got is None and not source.settled:  # no thread hop when it never will be
            got = await self._thread(lambda: source.wait(SOURCE_WAIT))
        if got is None and source.ipfs_cid is not None and source.ipfs_cid == source.version:
            got = await self._dag_identity(source.ipfs_cid)  # a DAG read without hashing
        return source if got == identity else None

    async def _dag_identity(self, cid: str) -> str | None:
        """The identity of a local DAG: recorded, else computed from the blockstore."""
        known = self.db.cached(ipfs_location(cid))
        if known is not None:
            return known.identity
        if self.repo is None:
            return None
        try:
            return await self._thread(lambda: self._dag_identity_sync(cid))
        except McpfsError:
            return None

    def _dag_identity_sync(self, cid: str) -> str:
        """Hash the local DAG ``cid`` under the profile and record it (blocking)."""
        root = CID.decode(cid)
        identity = str(hash_pieces(self.repo.reader.iter_file(root), self.params).cid)
        self.db.record(Location(ipfs_location(cid), identity, cid,
                                self.repo.reader.stat(root).size))
        return identity

    async def _dag_of(self, identity: str, match: ReadTracker | None) -> str | None:
        """A CID of a DAG holding these bytes: the source's when it is known to be, else
        (for a verified copy) any DAG the DB records with this identity."""
        if match is None:
            return None
        if match.ipfs_cid is not None:
            if match.ipfs_cid == identity or match.version == match.ipfs_cid:
                return match.ipfs_cid  # the identity itself, or the DAG read (/ipfs, /mfs)
            dag = await self._thread(
                lambda: self.db.lookup_sync(ipfs_location(match.ipfs_cid)))
            if dag is not None and dag.identity == identity:
                return match.ipfs_cid
        rows = await self._thread(lambda: self.db.locations_sync(identity))
        for row in rows:  # e.g. a /hf file whose bytes came from /mfs
            if row.location.startswith("/ipfs/"):
                return row.location[len("/ipfs/"):]
        return None

    async def _route_to_mfs(self, identity: str, match: ReadTracker | None,
                            extra: dict) -> None:
        dag = await self._dag_of(identity, match)
        if dag is None or self.repo is None:
            extra["route"] = "stream" if match is not None else None
            return
        cid = CID.decode(dag)
        tsize = await self._local_tsize(cid)
        if tsize is None:
            extra["route"] = "stream"
            return
        extra.pop("imported", None)  # (a hash-only stream imported nothing anyway)
        extra["link"] = (cid, tsize)
        extra["route"] = "mfs-link"

    async def _route_to_s3(self, identity: str, match: ReadTracker | None,
                           extra: dict, size: int | None = None) -> None:
        candidates: list[tuple[str, str | None]] = []
        if match is not None and match.location.startswith("/s3/"):
            candidates.append((match.location, match.version))
        elif size is None or size >= S3_COPY_MIN:
            # same bytes elsewhere in S3: not for a small file, where a PUT is one request
            # and a copy a HEAD and a CopyObject
            rows = await self._thread(lambda: self.db.locations_sync(identity))
            candidates.extend((r.location, r.version) for r in rows
                              if r.location.startswith("/s3/"))
        for location, etag in candidates:
            parts = location.split("/", 3)  # "", "s3", bucket, key
            if len(parts) == 4 and parts[3] and etag:
                extra["copy_from"] = (parts[2], parts[3], etag)
                extra["route"] = "s3-copy"
                return
        extra["route"] = "stream" if match is not None else None

    async def native_extra(self, check: Any, size: int) -> dict | None:
        """The ``writer.extra`` of a checked copy's native commit (copycheck.py), or None
        when the route is not possible after all (the DAG's root is not local)."""
        extra = check.native_extra(size)
        if check.route == "mfs-link":
            cid = extra.pop("link_cid")
            tsize = await self._local_tsize(cid)
            if tsize is None:
                return None
            extra["link"] = (cid, tsize)
            known = self.db.cached(ipfs_location(str(cid)))
            if known is not None:
                extra["identity"] = known.identity
        elif "identity" not in extra:
            known = self.db.cached(check.source.location)
            if known is not None and known.version == check.source.version:
                extra["identity"] = known.identity
        return extra

    async def _local_tsize(self, cid: CID) -> int | None:
        """The DAG's cumulative size when its root block is in the blockstore."""
        if self.repo is None:
            return None

        def work() -> int | None:
            if not self.repo.store.has(cid):
                return None
            return self.repo.reader.stat(cid).cumulative_size
        try:
            return await self._thread(work)
        except McpfsError:
            return None

    def identify_later(self, location: str, cid: str, size: int,
                       source: str | None) -> None:
        """Compute the identity of the local DAG ``cid`` in a background thread (a link
        made without hashing) and record it for ``location`` and ``/ipfs/<cid>``."""
        if self.repo is None:
            return
        def work() -> None:
            try:
                identity = self._dag_identity_sync(cid)
            except Exception as exc:  # noqa: BLE001 - advisory; a later read retries
                log.info("identity of %s: %s", cid, exc)
                return
            current = self.db.cached(location)
            if current is None or current.version == cid:
                self.db.record(Location(location, identity, cid, size, source))
        with self._later_lock:
            self._later.append(work)
            if self._later_running:
                return
            self._later_running = True
        threading.Thread(target=self._run_later, name="bridge-identify", daemon=True).start()

    def _run_later(self) -> None:
        while True:
            with self._later_lock:
                if not self._later:
                    self._later_running = False
                    return
                work = self._later.popleft()
            work()

    def after_commit(self, mount: str, sub: str, writer: Any, attr: Any) -> None:
        """Record the committed file's identity and location; count the transfer."""
        extra = writer.extra
        identity = extra.get("identity")
        cid = attr.cid_text
        if identity is None and mount == "mfs" and extra.get("route") == "mfs-link" \
                and cid:  # linked without hashing: the DAG's CID until it is known
            location = location_of(mount, sub)
            self.db.record(Location(location, cid, cid, attr.size,
                                    extra.get("source")))
            self.identify_later(location, cid, attr.size, extra.get("source"))
            self._count(extra, attr)
            return
        if identity is None and mount == "mfs" and self.identity_from_mfs:
            identity = cid
        if identity is None:
            self._count(extra, attr)
            return
        version = plain_version(extra.get("version")) or cid
        location = location_of(mount, sub)
        self.db.record(Location(location, identity, version, attr.size, extra.get("source")))
        if mount == "mfs" and cid:
            self.db.record(Location(ipfs_location(cid), identity, cid, attr.size))
        self._count(extra, attr)

    def _count(self, extra: dict, attr: Any) -> None:
        route = extra.get("route")
        if route and self.stats is not None:
            self.stats.bridge(route, route in NATIVE_ROUTES, attr.size)

    # ---------------------------------------------------------------- namespace
    def removed(self, mount: str, sub: str) -> None:
        self.db.forget(location_of(mount, sub))

    def renamed(self, mount: str, old: str, new: str) -> None:
        self.db.rename(location_of(mount, old), location_of(mount, new))

    async def source_of(self, mount: str, sub: str) -> str | None:
        """``user.mcpfs.source`` of a location (cache, else the DB in a thread)."""
        location = location_of(mount, sub)
        loc = self.db.cached(location)
        if loc is None:
            loc = await self._thread(lambda: self.db.lookup_sync(location))
        return loc.source if loc is not None else None


__all__ = ["Bridge", "location_of", "ipfs_location", "hash_file_sync", "NATIVE_ROUTES"]
