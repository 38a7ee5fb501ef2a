"""``mcpfs cp``, ``replicate``, ``transfers``, ``where``, ``verify``: the bridge, through
the running daemon.

Paths may be given as paths under the mount point (``~/mcp/s3/b/k``, resolved against the
mcpfs mounts of this host) or as paths inside the mount (``/s3/b/k``). Transfers run in
the daemon: ``cp`` shows a progress bar (bytes, rate, ETA; ``-q`` hides it) and waits; if
the daemon stops meanwhile, the transfer resumes when it starts again (``mcpfs
transfers`` shows it). Exit codes: 0 when every file arrived (or verified), 1 otherwise,
with one line per failure.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..control.client import connect
from ..errors import McpfsError
from .common import cli, print_json
from .status import mcpfs_mounts

DAEMON_GONE = ("the daemon stopped during the transfer; it resumes when the daemon starts "
               "again (see: mcpfs transfers)")


def _daemon():
    node = connect()
    if node is None:
        raise McpfsError("no daemon is running (start one with mcpfs mount)")
    return node


def in_mount(path: str) -> str:
    """The path inside the mount (``/s3/b/k``) of ``path``."""
    real = os.path.realpath(os.path.expanduser(path))
    for mnt in sorted(mcpfs_mounts(), key=len, reverse=True):
        if real == mnt or real.startswith(mnt.rstrip("/") + "/"):
            return "/" + real[len(mnt):].strip("/")
    if path.startswith("/") and not os.path.exists(real):
        return path  # already a path inside the mount; the daemon checks its subtree
    raise McpfsError(f"{path}: not inside an mcpfs mount")


def _follow(lines, quiet: bool) -> list[dict[str, Any]]:
    """Show the progress lines; the final results."""
    from tqdm import tqdm
    bar = None
    try:
        for value in lines:
            if "Results" in value:
                return value["Results"]
            if bar is None and not quiet:
                bar = tqdm(total=value["Total"], unit="B", unit_scale=True, unit_divisor=1024,
                           file=sys.stderr, dynamic_ncols=True, leave=True)
            if bar is not None:
                bar.total = value["Total"]
                bar.set_postfix_str(f"{value['Files']}/{value['FilesTotal']} files")
                bar.update(value["Bytes"] - bar.n)
    except McpfsError as exc:
        if "interrupted" in str(exc) or "control socket" in str(exc):
            raise McpfsError(DAEMON_GONE) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    raise McpfsError(DAEMON_GONE)


def _report(results: list[dict[str, Any]], quiet: bool) -> None:
    failed = [r for r in results if r["State"] != "done"]
    if not quiet:
        for r in results:
            if r["State"] == "done":
                click.echo(f"{r['Src']} -> {r['Dst']}  ({r['Route']})", err=True)
    for r in failed:
        click.echo(f"Error: {r['Src']} -> {r['Dst']}: {r['Error'] or r['State']}", err=True)
    if failed:
        sys.exit(1)


@cli.command("cp")
@click.argument("src")
@click.argument("dst")
@click.option("-r", "--recursive", is_flag=True, help="Copy a directory tree.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-file lines.")
def cp(src, dst, recursive, quiet):
    """Copy SRC to DST inside the daemon (both in the mount): native when the content is
    known (an MFS link, an S3 server-side copy), else streamed; resumable."""
    node = _daemon()
    try:
        lines = node._ndjson("mcpfs/cp", [("arg", in_mount(src)), ("arg", in_mount(dst)),
                                          ("recursive", "true" if recursive else "false")])
        _report(_follow(lines, quiet), quiet)
    finally:
        node.close()


@cli.command("replicate")
@click.argument("path")
@click.option("--to", "targets", required=True,
              help="Comma-separated destinations in the mount (/s3/b/k,/hf/o/r/f,...).")
@click.option("-r", "--recursive", is_flag=True, help="Replicate a directory tree.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-file lines.")
def replicate(path, targets, recursive, quiet):
    """Copy PATH to every destination of --to (same routes as mcpfs cp)."""
    node = _daemon()
    to = [in_mount(t) for t in targets.split(",") if t]
    try:
        lines = node._ndjson("mcpfs/replicate", [("arg", in_mount(path))] +
                             [("to", t) for t in to] +
                             [("recursive", "true" if recursive else "false")])
        _report(_follow(lines, quiet), quiet)
    finally:
        node.close()


@cli.command("transfers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def transfers(as_json):
    """Transfers of mcpfs cp: running ones (resumed after a restart), done, failed."""
    node = _daemon()
    try:
        rows = node._json("mcpfs/transfers")["Transfers"]
    finally:
        node.close()
    if as_json:
        print_json(rows)
        return
    for r in rows:
        pct = f"{100 * r['Done'] // r['Total']}%" if r["Total"] else "-"
        extra = f"  {r['Error']}" if r["Error"] else ""
        click.echo(f"{r['Id']:>5} {r['State']:<8} {pct:>4} {r['Route'] or '':<9} "
                   f"{r['Src']} -> {r['Dst']}{extra}")


@cli.command("where")
@click.argument("cid_or_path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def where(cid_or_path, as_json):
    """Every known location of a CID or of a file's content."""
    arg = cid_or_path if "/" not in cid_or_path.strip("/") else in_mount(cid_or_path)
    node = _daemon()
    try:
        info = node._json("mcpfs/where", {"arg": arg})
    finally:
        node.close()
    if as_json:
        print_json(info)
        return
    click.echo(f"identity {info['Identity']}")
    for loc in info["Locations"]:
        source = f"  (from {loc['Source']})" if loc.get("Source") else ""
        click.echo(f"{loc['Location']}  {loc['Version'] or '-'}{source}")


@cli.command("verify")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(path, as_json):
    """Re-read every known location of PATH's content and compare; exit 1 on a mismatch."""
    node = _daemon()
    try:
        info = node._json("mcpfs/verify", {"arg": in_mount(path)})
    finally:
        node.close()
    if as_json:
        print_json(info)
    else:
        for r in info["Results"]:
            detail = f"  ({r['Error']})" if r.get("Error") else (
                f"  (now {r['Found']})" if r["State"] == "changed" else "")
            click.echo(f"{r['State']:<8} {r['Location']}{detail}")
    if not info["Ok"]:
        sys.exit(1)
