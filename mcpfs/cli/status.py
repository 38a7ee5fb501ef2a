"""``mcpfs status``: mounts, backends, pending writes and cache use, in one screen.

Reads only: /proc/self/mountinfo for live mounts, the control socket (when a daemon answers)
for per-subtree operation counts, the write-back journal (SQLite, opened read-only) for
pending writes, and the sizes of the repo and spool folders.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import click

from ..config import paths
from ..control.client import connect
from ..vfs.journal import JOURNAL_FILE
from .common import cli
from .mount import FSTYPE, _unescape


def mcpfs_mounts() -> list[str]:
    """Mount points of every mcpfs file system visible to this process."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == [FSTYPE] and len(fields) >= 5:
                found.append(_unescape(fields[4]))
    return found


def pending_writes(state_dir: Path) -> list[dict]:
    """Rows of the write-back journal (empty when there is none yet)."""
    file = state_dir / JOURNAL_FILE
    if not file.exists():
        return []
    db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT mount, path, state, attempts FROM writes ORDER BY id").fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    return [{"Path": f"/{m}/{p}", "State": s, "Attempts": a} for m, p, s, a in rows]


def folder_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``; (0, 0) when it does not exist."""
    files = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except FileNotFoundError:
                continue
    return files, size


def collect_status() -> dict:
    where = paths()
    node = connect()
    stats = None
    if node is not None:
        try:
            stats = node._json("mcpfs/stats")
        finally:
            node.close()
    holder = None
    if node is None:  # a daemon may still be finishing its uploads after an unmount
        from ..process_lock import ProcessLock
        holder = ProcessLock(where.state_dir / "daemon.lock").holder()
    blocks, block_bytes = folder_usage(where.repo_dir / "blocks")
    spools, spool_bytes = folder_usage(where.cache_dir / "spool")
    return {
        "Mounts": mcpfs_mounts(),
        "Daemon": {"Socket": str(where.socket_path), "Running": node is not None,
                   "Finishing": holder},  # the pid of a daemon not answering: busy, or
        # unmounted and still uploading
        "Backends": sorted((stats or {}).get("Mounts", {})),
        "Stats": stats,
        "PendingWrites": pending_writes(where.state_dir),
        "Repo": {"Path": str(where.repo_dir), "Blocks": blocks, "Bytes": block_bytes},
        "Spool": {"Path": str(where.cache_dir / "spool"), "Files": spools, "Bytes": spool_bytes},
    }


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json):
    """Mounts, backends, pending writes and cache use."""
    info = collect_status()
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo("mounts:  " + (", ".join(info["Mounts"]) or "none"))
    daemon = info["Daemon"]
    state = "running" if daemon["Running"] else (
        f"pid {daemon['Finishing']} does not answer: busy, or unmounted and still "
        "finishing its uploads"
        if daemon["Finishing"] else "not running")
    click.echo(f"daemon:  {state} ({daemon['Socket']})")
    for mount, data in sorted(((info["Stats"] or {}).get("Mounts") or {}).items()):
        ops = data.get("Ops", {})
        total = sum(o.get("Count", 0) for o in ops.values())
        errors = sum(o.get("Errors", 0) for o in ops.values())
        moved = sum(o.get("Bytes", 0) for o in ops.values())
        click.echo(f"  /{mount}: {total} ops, {errors} errors, {_mib(moved)} moved")
    click.echo(f"pending writes: {len(info['PendingWrites'])}")
    for row in info["PendingWrites"]:
        click.echo(f"  {row['Path']}  {row['State']}  attempts={row['Attempts']}")
    repo, spool = info["Repo"], info["Spool"]
    click.echo(f"repo:    {repo['Blocks']} blocks, {_mib(repo['Bytes'])} ({repo['Path']})")
    click.echo(f"spool:   {spool['Files']} files, {_mib(spool['Bytes'])} ({spool['Path']})")
