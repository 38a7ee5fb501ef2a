"""Replaying the write-back journal of a previous run (see journal.py for the row states).

A ``committing`` or ``failed`` row whose spool still exists is committed again (its spool is
complete: a commit only starts after the writer's last close); an ``open`` row, a row whose
spool is gone or whose subtree is no longer configured is discarded with its spool (and the
spool's sidecars, ``<spool>.*``).

Where the retry runs depends on the Mount. A ``local_commit`` one (/mfs: the repo is on this
machine) is committed here, before the mount is live. Any other (/s3, /hf: a server that may
be slow, down or hanging) is handed to ``adopt`` (the VFS's ``_adopt``): the file becomes a
pending write of the mount, shown with its local size and served from its spool, and its
upload runs in the background once the mount is live (vfs/write_back.py), so a hung server
can no longer stop the mount from starting. Without ``adopt`` it is committed here too.

The retry is a commit with ``existed=True``: the first attempt may have completed on the
backend before the process died (the row is removed only afterwards), so a conditional
create (S3's ``If-None-Match: *`` for new files) would fail against our own object. The
retry writes the same bytes again; a Mount may resume the interrupted transfer instead
(S3 resumes its multipart upload from the sidecar, backends/s3.py). The file's mtime is the
spool's: the time of its last write, or the one utimes set on it before close (the spool is
stamped when it is kept: handles.py), not the time of this retry. A /mfs row that failed
in ``MAX_ATTEMPTS`` runs (one count per run that tried it: handles.py; a local commit that
fails, fails again) is given up: its spool is left in place (named in the log) and the row
removed. A row of a subtree behind a server is never given up: a server down for days
(an offline laptop restarted often) must not cost the write; its retries wait for no one.

Runs before the mount is live, on the trio thread; file and journal work in worker threads.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from ..errors import McpfsError
from ..mounts.base import Mount, Writer
from .journal import COMMITTING, FAILED, OPEN, Journal, Row
from .spool import Spool

log = logging.getLogger("mcpfs.vfs")

MAX_ATTEMPTS = 5  # failed commits of one spool before recovery gives up on it


def remove_spool(spool: str) -> None:
    """The spool and its sidecars (``<spool>.<suffix>``: a backend's resume state, e.g. the
    S3 multipart upload id)."""
    for path in [spool, *glob.glob(glob.escape(spool) + ".*")]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _stat(path: str) -> os.stat_result | None:
    """The kept spool's size and mtime (the file's last write, or what utimes set on it:
    ``Spool.stamp_sync``); None when it is gone."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


# (row, mount, spool size, spool mtime in ns): the VFS makes the row a pending write
Adopt = Callable[[Row, Mount, int, int], Awaitable[None]]
Kept = Callable[[Row], Awaitable[None]]  # a row left for the next start (failed again)
Done = Callable[[str, str], Awaitable[None]]  # (mount, path) committed by recovery


async def recover(mounts: dict[str, Mount], journal: Journal | None,
                  adopt: Adopt | None = None, kept: Kept | None = None,
                  done_hook: Done | None = None) -> list[tuple[str, str, str]]:
    """(mount, path, outcome) per row; outcome "committed", "queued" (adopted: uploaded
    in the background), "discarded", "failed" (left for the next start, and handed to
    ``kept``: a later write of the path supersedes it, and so does a later row of it that
    commits here: ``done_hook(mount, path)``) or "abandoned"."""
    if journal is None:
        return []
    done = []
    for row in await trio.to_thread.run_sync(journal.pending):
        mount = mounts.get(row.mount)
        info = await trio.to_thread.run_sync(_stat, row.spool)
        if row.state == OPEN or mount is None or info is None:
            await trio.to_thread.run_sync(remove_spool, row.spool)
            await journal.remove(row.id)
            log.warning("journal: discarded the unfinished write of /%s/%s",
                        row.mount, row.path)
            done.append((row.mount, row.path, "discarded"))
            continue
        assert row.state in (COMMITTING, FAILED)
        if row.attempts >= MAX_ATTEMPTS and mount.local_commit:
            await journal.remove(row.id)
            log.error("journal: gave up on /%s/%s after %d failed commits; its data is in %s",
                      row.mount, row.path, row.attempts, row.spool)
            done.append((row.mount, row.path, "abandoned"))
            continue
        if adopt is not None and not mount.local_commit:
            await adopt(row, mount, info.st_size, info.st_mtime_ns)
            done.append((row.mount, row.path, "queued"))
            continue
        spool = await trio.to_thread.run_sync(Spool.open_sync, row.spool)
        try:
            await mount.commit(Writer(row.path, spool, existed=True,
                                      mtime_ns=info.st_mtime_ns))
        except McpfsError as exc:
            await spool.close(delete=False)
            await journal.set(row.id, FAILED)
            log.error("journal: commit of /%s/%s failed again: %s", row.mount, row.path, exc)
            if kept is not None:
                await kept(row)
            done.append((row.mount, row.path, "failed"))
            continue
        await spool.close(delete=True)
        await journal.remove(row.id)
        log.info("journal: completed the interrupted write of /%s/%s", row.mount, row.path)
        if done_hook is not None:  # an earlier row of the path that failed again is older
            await done_hook(row.mount, row.path)
        done.append((row.mount, row.path, "committed"))
    return done


__all__ = ["recover", "remove_spool", "Adopt", "Kept", "MAX_ATTEMPTS"]
