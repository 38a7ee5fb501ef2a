"""``mcpfs cp``: transfers between subtrees, run inside the daemon, resumable.

:meth:`Transfers.submit` plans a copy (one file, or a tree with ``recursive``: destination
directories are made as in ``cp -r``, except on /s3 where prefixes need no marker), stores
one row per file in the provenance DB (``running``) and starts it; the caller follows the
jobs' progress (:meth:`progress`). Jobs run in the service's own nursery, not in the
request: a client that goes away does not stop them. A daemon stopped or killed
mid-transfer leaves ``running`` rows, which :meth:`serve` resumes at the next start.

Routes, per file, the first that applies (see bridge/core.py for why they are safe):

- ``mfs-link``: to /mfs from a DAG in the blockstore (/ipfs, /mfs, or an S3 object whose
  ``ipfs-cid`` metadata names a DAG recorded with the same identity): no byte read;
- ``s3-copy``: to /s3 from an S3 object (the source itself, or one recorded with the same
  identity): a server-side CopyObject guarded by the ETag; no byte through mcpfs;
- ``stream``: to /mfs, a streaming import fed by the source's reads (the prefetcher keeps
  several ranged GETs in flight); elsewhere, the source is copied into a part file in
  ``<cache>/transfers/`` and committed by the destination Mount (S3: multipart upload,
  parts in parallel). A resumed job continues its part file where it stopped when the
  source still has the same version (ETag/CID), and an S3 multipart upload resumes its
  parts (backends/s3_upload.py). Nothing partial is ever visible at the destination.

Errors: a job that fails is ``failed`` with its one-line error; other jobs go on.

Concurrency: jobs and their counters are touched on the trio thread only; at most
``PARALLEL_FILES`` files move at once. DB writes run in worker threads.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from ..backends.ipfs.cid import CID
from ..backends.ipfs.stream_import import StreamImport
from ..errors import McpfsError
from ..mounts.base import child_path
from .core import Bridge, ipfs_location, location_of, plain_version
from .db import DONE, FAILED, RUNNING, Location, Transfer
from .identity import ReadTracker

log = logging.getLogger("mcpfs.bridge.transfers")

PIECE: Final = 1 << 20  # bytes per read from a transfer's source
PARALLEL_FILES: Final = 4  # files copied at once
SAVE_EVERY: Final = 1.0  # seconds between progress rows written to the DB


@dataclass
class Job:
    id: int
    src: str  # "/<subtree>/<path>"
    dst: str
    total: int
    done: int = 0
    state: str = RUNNING
    route: str | None = None
    error: str | None = None
    finished: trio.Event = field(default_factory=trio.Event)

    def as_json(self) -> dict[str, Any]:
        return Transfer(self.id, self.src, self.dst, self.state, self.route, self.total,
                        self.done, self.error).as_json()


class FileSpool:
    """A part file in the shape a Mount's ``commit`` reads (``path``, ``size()``)."""

    in_memory = False

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    async def size(self) -> int:
        return await trio.to_thread.run_sync(os.path.getsize, self.path)

    def content(self) -> bytes | None:
        """Never at hand: a part file is read from its path."""
        return None


@dataclass
class _Writer:
    """What Mount.commit and Bridge.after_commit need of a write (mounts.base.Writer's
    fields; built here so the bridge needs no import of mounts/)."""

    path: str
    spool: Any
    existed: bool
    extra: dict = field(default_factory=dict)
    mtime_ns: int | None = None  # the commit's time
    perm: int | None = None  # the mount's default


class Transfers:
    def __init__(self, bridge: Bridge, vfs: Any, cache_dir: str | Path) -> None:
        self.bridge = bridge
        self.db = bridge.db
        self.vfs = vfs
        self.parts = Path(cache_dir) / "transfers"
        self.jobs: dict[int, Job] = {}
        self._limit = trio.CapacityLimiter(PARALLEL_FILES)
        self._nursery: trio.Nursery | None = None
        # set once serve runs: the control socket is up before the mount is live (and serve
        # starts only then), so a cp sent meanwhile waits for it
        self._serving = trio.Event()

    # ---------------------------------------------------------------- service
    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run jobs until cancelled (their rows stay ``running``: resumed next start);
        resumes the ``running`` rows of a previous run first."""
        await trio.to_thread.run_sync(lambda: self.parts.mkdir(parents=True, exist_ok=True))
        rows = await trio.to_thread.run_sync(self.db.transfers_sync, RUNNING)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for row in rows:
                log.info("resuming transfer %d: %s -> %s (%d of %d bytes before)", row.id,
                         row.src, row.dst, row.done, row.total)
                self._launch(Job(row.id, row.src, row.dst, row.total))
            task_status.started()
            self._serving.set()
            await trio.sleep_forever()

    def _launch(self, job: Job) -> None:
        assert self._nursery is not None, "Transfers.serve is not running"
        self.jobs[job.id] = job
        self._nursery.start_soon(self._run, job)

    async def submit(self, src: str, dst: str, recursive: bool = False) -> list[int]:
        """Plan and start the copy of ``src`` to ``dst`` (paths in the mount, "/s3/b/k");
        the job ids, one per file. Bad paths raise McpfsError (ENOENT, EISDIR...). Sent
        while the daemon starts, before serve runs, it waits for serve."""
        await self._serving.wait()
        src, dst = norm(src), norm(dst)
        write_back = self.vfs.write_back  # what is queued lands before the plan looks
        await write_back.outside_read(src.strip("/"), below=True)
        await write_back.settle(dst.strip("/"))
        pairs = await self._plan(src, dst, recursive)
        ids = []
        for s, d, size in pairs:
            tid = await trio.to_thread.run_sync(self.db.add_transfer_sync, s, d, size)
            self._launch(Job(tid, s, d, size))
            ids.append(tid)
        return ids

    def progress(self, ids: list[int]) -> dict[str, Any]:
        jobs = [self.jobs[i] for i in ids if i in self.jobs]
        return {"Bytes": sum(j.done for j in jobs), "Total": sum(j.total for j in jobs),
                "Files": sum(j.state != RUNNING for j in jobs), "FilesTotal": len(jobs),
                "Done": all(j.state != RUNNING for j in jobs)}

    async def wait(self, ids: list[int]) -> None:
        for i in ids:
            if i in self.jobs:
                await self.jobs[i].finished.wait()

    # ---------------------------------------------------------------- planning
    async def _plan(self, src: str, dst: str, recursive: bool) -> list[tuple[str, str, int]]:
        sm, ss = self.vfs.route(src.strip("/"))
        attr = await sm.lookup(ss)
        dm, ds = self.vfs.route(dst.strip("/"))
        if not ds:
            raise McpfsError(f"{dst}: not a path inside a subtree", errno=errno.EISDIR)
        try:
            if (await dm.lookup(ds)).is_dir:
                dst = posixpath.join(dst, posixpath.basename(src.rstrip("/")))
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
        if not attr.is_dir:
            return [(src, dst, attr.size)]
        if not recursive:
            raise McpfsError(f"{src}: is a directory (use -r)", errno=errno.EISDIR)
        out: list[tuple[str, str, int]] = []
        await self._walk(sm, ss, src, dst, out)
        return out

    async def _walk(self, sm: Any, ss: str, src: str, dst: str,
                    out: list[tuple[str, str, int]]) -> None:
        dm, ds = self.vfs.route(dst.strip("/"))
        if dm.name != "s3":  # S3 prefixes exist through their keys; elsewhere mkdir
            try:
                await dm.mkdir(ds)
            except McpfsError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        entries = [(name, attr) async for name, attr in sm.listdir(ss)]
        for name, attr in entries:
            sub = child_path(ss, name)
            if attr.is_dir:
                await self._walk(sm, sub, f"{src}/{name}", f"{dst}/{name}", out)
            elif attr.kind == "file":
                out.append((f"{src}/{name}", f"{dst}/{name}", attr.size))
            else:
                log.info("cp: %s/%s is a symlink: skipped", src, name)

    # ---------------------------------------------------------------- one job
    async def _run(self, job: Job) -> None:
        async with self._limit:
            saver = trio.CancelScope()

            async def save_progress() -> None:
                with saver:
                    while True:
                        await trio.sleep(SAVE_EVERY)
                        await trio.to_thread.run_sync(
                            lambda: self.db.update_transfer_sync(job.id, done=job.done))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(save_progress)
                    try:
                        job.route = await self._copy(job)
                        job.state = DONE
                    except McpfsError as exc:
                        job.state, job.error = FAILED, str(exc)
                        log.error("transfer %d %s -> %s failed: %s", job.id, job.src,
                                  job.dst, exc)
                    saver.cancel()
            finally:
                if job.state != RUNNING:  # cancelled: stays running, resumed next start
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(lambda: self.db.update_transfer_sync(
                            job.id, state=job.state, route=job.route, done=job.done,
                            error=job.error))
                    await trio.to_thread.run_sync(self._remove_part, job.id)
                job.finished.set()

    def _part(self, tid: int) -> Path:
        return self.parts / f"{tid}.part"

    def _remove_part(self, tid: int) -> None:
        for path in (self._part(tid), Path(f"{self._part(tid)}.s3upload")):
            path.unlink(missing_ok=True)

    async def _copy(self, job: Job) -> str:
        sm, ss = self.vfs.route(job.src.strip("/"))
        dm, ds = self.vfs.route(job.dst.strip("/"))
        # writes of either path still queued for upload (write-back, or adopted from the
        # last run) land first: landing after this copy, they would replace its bytes
        await self.vfs.write_back.outside_read(job.src.strip("/"))
        await self.vfs.write_back.outside_write(job.dst.strip("/"))
        reader = await sm.open_read(ss)
        try:
            source = self._source(sm.name, ss, reader, job.total)
            if dm.name == "mfs":
                route = await self._to_mfs(job, dm, ds, reader, source)
            else:
                route = await self._native_s3(job, dm, ds, source) if dm.name == "s3" \
                    else None
                if route is None:
                    route = await self._through_part(job, dm, ds, reader, source)
        finally:
            await reader.close()
        await self.vfs.write_back.superseded(dm.name, ds)  # a kept failed write of the path
        stats = self.bridge.stats
        if stats is not None and hasattr(stats, "bridge"):
            stats.bridge(route, route != "stream", job.total)
        log.info("transfer %d %s -> %s: %s, %d bytes", job.id, job.src, job.dst, route,
                 job.total)
        return route

    def _source(self, mount: str, sub: str, reader: Any, size: int) -> ReadTracker:
        """What the bridge knows of the source (identity from the DB cache if recorded)."""
        tracker = self.bridge.track_read(mount, sub, reader, size, None)
        assert tracker is not None
        return tracker

    async def _known_identity(self, source: ReadTracker) -> str | None:
        if source.identity is not None:
            return source.identity
        loc = await trio.to_thread.run_sync(self.db.lookup_sync, source.location)
        if loc is not None and loc.version == source.version:
            return loc.identity
        return None

    async def _pieces(self, job: Job, reader: Any, offset: int = 0,
                      hasher: StreamImport | None = None) -> AsyncIterator[bytes]:
        job.done = offset
        while True:
            data = await reader.read(offset, PIECE)
            if not data:
                break
            offset += len(data)
            job.done = offset
            if hasher is not None:
                await trio.to_thread.run_sync(hasher.feed, data)
            yield data
        if offset < job.total:
            raise McpfsError(f"{job.src}: shorter than expected ({offset} of {job.total} "
                             "bytes; changed while copied?)", errno=errno.EIO)

    async def _to_mfs(self, job: Job, dm: Any, ds: str, reader: Any,
                      source: ReadTracker) -> str:
        identity = await self._known_identity(source)
        dag = await self.bridge._dag_of(identity, source) if identity is not None else None
        if dag is None and source.ipfs_cid is not None and source.ipfs_cid == source.version:
            dag = source.ipfs_cid  # /ipfs or /mfs: the DAG read is the content
        if dag is not None:
            cid = CID.decode(dag)
            size = await self.bridge._local_tsize(cid)
            if size is not None:
                await dm.link_dag(ds, cid, size)
                job.done = job.total
                self._record(job, "mfs", ds, identity, dag, source)
                return "mfs-link"
        attr = await dm.import_from(ds, self._pieces(job, reader))
        ident = attr.cid_text if self.bridge.identity_from_mfs else None
        self._record(job, "mfs", ds, ident, attr.cid_text, source)
        if ident is not None and identity is None:
            self.db.record(Location(source.location, ident, source.version, job.total))
        return "stream"

    async def _native_s3(self, job: Job, dm: Any, ds: str, source: ReadTracker) -> str | None:
        """A server-side copy when an S3 object holds the bytes; None otherwise."""
        copy_from = None
        if source.location.startswith("/s3/") and source.version:
            parts = source.location.split("/", 3)
            copy_from = (parts[2], parts[3], source.version)
        else:
            identity = await self._known_identity(source)
            if identity is not None:
                rows = await trio.to_thread.run_sync(self.db.locations_sync, identity)
                for row in rows:
                    parts = row.location.split("/", 3)
                    if parts[1] == "s3" and len(parts) == 4 and row.version:
                        copy_from = (parts[2], parts[3], row.version)
                        break
        if copy_from is None:
            return None
        meta = {"mcpfs-source": job.src}
        if source.ipfs_cid:
            meta["ipfs-cid"] = source.ipfs_cid
        info = await dm.copy_in(ds, copy_from, job.total, meta)
        if info is None:
            return None
        job.done = job.total
        identity = await self._known_identity(source)
        if identity is not None:
            self.db.record(Location(job.dst, identity, plain_version(info.etag), job.total,
                                    job.src))
        return "s3-copy"

    async def _through_part(self, job: Job, dm: Any, ds: str, reader: Any,
                            source: ReadTracker) -> str:
        """Copy into the job's part file (continuing a resumed one), then commit it."""
        part = self._part(job.id)

        def prepare() -> int:
            have = part.stat().st_size if part.exists() else 0
            if have > job.total:
                part.unlink()
                return 0
            return have
        offset = await trio.to_thread.run_sync(prepare)
        hasher = StreamImport.hashing(self.bridge.params) if offset == 0 else None
        fh = await trio.to_thread.run_sync(lambda: open(part, "r+b" if offset else "wb"))
        try:
            async for data in self._pieces(job, reader, offset, hasher):
                await trio.to_thread.run_sync(os.pwrite, fh.fileno(), data,
                                              job.done - len(data))
            await trio.to_thread.run_sync(os.fsync, fh.fileno())
        except BaseException:
            if hasher is not None:
                hasher.abandon()
            raise
        finally:
            await trio.to_thread.run_sync(fh.close)
        spool = FileSpool(part)
        if hasher is not None:
            imported = await trio.to_thread.run_sync(hasher.finish)
            identity = str(imported.cid) if imported is not None else None
        else:
            identity = None
        if identity is None:
            from .core import hash_file_sync
            identity = await trio.to_thread.run_sync(hash_file_sync, spool.path,
                                                     self.bridge.params)
        if await self._known_identity(source) is None:
            self.db.record(Location(source.location, identity, source.version, job.total))
        matched = ReadTracker(source.location, source.version, job.total, self.bridge.params,
                              lambda *_: None, ipfs_cid=source.ipfs_cid, identity=identity)
        try:
            existed = not (await dm.lookup(ds)).is_dir
        except McpfsError:
            existed = False
        writer = _Writer(ds, spool, existed, {"identity": identity})
        await self.bridge.before_commit(dm.name, ds, writer, matched)
        attr = await dm.commit(writer)
        route = writer.extra.pop("route", None) or "stream"  # counted by _copy
        self.bridge.after_commit(dm.name, ds, writer, attr)
        return route

    def _record(self, job: Job, mount: str, sub: str, identity: str | None,
                cid: str | None, source: ReadTracker) -> None:
        if identity is None:
            return
        self.db.record(Location(location_of(mount, sub), identity, cid, job.total, job.src))
        if cid is not None:
            self.db.record(Location(ipfs_location(cid), identity, cid, job.total))


def norm(path: str) -> str:
    """"/s3/b//k/" -> "/s3/b/k" (paths inside the mount)."""
    return "/" + "/".join(p for p in path.split("/") if p and p != ".")


__all__ = ["Transfers", "Job", "norm"]
