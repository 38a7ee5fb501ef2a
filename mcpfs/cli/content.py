"""``mcpfs add``, ``cat`` and ``get``: kubo's commands of the same names.

Through the daemon when one runs, else on the local repo (``common.node()``); the output
is the same either way. ``add -n`` never needs either: it only hashes, in this process.
"""

from __future__ import annotations

import os
import sys
import tarfile

import click

from ..backends.ipfs.add import Adder
from ..backends.ipfs.blockstore import NullBlockstore
from ..control.ops import AddOptions, add_line, entry_name
from ..errors import AlreadyExists, InvalidInput
from .common import cli, node, write_stdout


def _progress(enabled: bool, total: int | None):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                leave=False)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-r", "--recursive", is_flag=True, help="Add directory paths recursively.")
@click.option("-w", "--wrap-with-directory", "wrap", is_flag=True,
              help="Wrap files with a directory object.")
@click.option("-n", "--only-hash", is_flag=True, help="Only chunk and hash; write nothing.")
@click.option("-Q", "--quieter", is_flag=True, help="Write only the final hash.")
@click.option("-q", "--quiet", is_flag=True, help="Write only hashes.")
@click.option("-H", "--hidden", is_flag=True, help="Include files whose names start with '.'.")
@click.option("--cid-version", type=click.IntRange(0, 1), default=None)
@click.option("--raw-leaves/--no-raw-leaves", default=None,
              help="Leaves as raw blocks (default: on for CIDv1).")
@click.option("-s", "--chunker", default=None, help="size-N (bytes per chunk).")
@click.option("-t", "--trickle", is_flag=True, help="Trickle-dag layout.")
@click.option("--profile", default=None, help="unixfs-v1-2025 or legacy-cid-v0.")
@click.option("--pin/--no-pin", default=True, help="Pin the added root (default: yes).")
@click.option("-p/-P", "--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
def add(paths, recursive, wrap, only_hash, quieter, quiet, hidden, cid_version, raw_leaves,
        chunker, trickle, profile, pin, progress):
    """Add files or directories; prints `added <cid> <name>` like `ipfs add`."""
    opts = AddOptions(cid_version, raw_leaves, chunker, trickle, profile)
    params = opts.params()
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress(show and not quieter, None)
    on_bytes = bar.update if bar else None
    stdin = not paths or paths == ("-",)
    if only_hash:
        adder = Adder(NullBlockstore(), params, hidden=hidden, on_bytes=on_bytes)
        if stdin:
            root = adder.stream(sys.stdin.buffer)
            lines = [{"Name": str(root.cid), "Hash": str(root.cid), "Size": str(root.tsize)}]
        else:
            lines = map(add_line, adder.add_many(list(paths), recursive=recursive, wrap=wrap))
    elif stdin:
        lines = [node().add_stdin(sys.stdin.buffer, opts, pin=pin, on_bytes=on_bytes)]
    else:
        lines = node().add_files(list(paths), opts, recursive=recursive, wrap=wrap,
                                 hidden=hidden, pin=pin, on_bytes=on_bytes)
    last = _print_lines(lines, quiet, quieter, bar)
    if last is not None and quieter:
        click.echo(last["Hash"])


def _print_lines(lines, quiet: bool, quieter: bool, bar):
    """Print kubo's `added` lines as they arrive; return the last one (the root)."""
    last = None
    try:
        for line in lines:
            last = line
            if quieter:
                continue
            if bar:
                bar.clear()
            click.echo(line["Hash"] if quiet else f"added {line['Hash']} {line['Name']}")
    finally:
        if bar:
            bar.close()
    return last


@cli.command()
@click.argument("path")
@click.option("-o", "--offset", type=click.IntRange(min=0), default=0)
@click.option("-l", "--length", type=click.IntRange(min=0), default=None)
def cat(path, offset, length):
    """Write a file's bytes to stdout."""
    _, chunks = node().cat(path, offset, length)
    write_stdout(chunks)


@cli.command()
@click.argument("path")
@click.option("-o", "--output", type=click.Path(), default=None, help="Where to write.")
@click.option("-a", "--archive", is_flag=True, help="Write a tar archive.")
def get(path, output, archive):
    """Save a file or directory (or a tar of it) to the local disk."""
    chunks = node().get_tar(path)  # resolves first: a bad path fails before any output
    name = entry_name(path)
    target = output or (name + ".tar" if archive else name)
    click.echo(f"Saving file(s) to {target}", err=True)
    if archive:
        with open(target, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
    else:
        _extract(chunks, os.path.normpath(target))


def _check_entry_name(name: str | None) -> None:
    if not name or name in (".", "..") or "/" in name:
        raise InvalidInput(f"refusing unsafe entry name {name!r}")


class _ChunkReader:
    """A file-like view of an iterator of chunks (tarfile reads from it)."""

    def __init__(self, chunks) -> None:
        self._chunks = iter(chunks)
        self._buf = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out


def _extract(chunks, target: str) -> None:
    """Unpack the tar stream of ``get`` so that its top entry becomes ``target``.

    Only entries under directories this extraction created are written (no path in the
    archive can reach outside ``target`` or through a symlink); names are checked as
    UnixFS entry names.
    """
    made: set[str] = set()
    with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
        for member in tar:
            rel = member.name.split("/")[1:]
            for part in rel:
                _check_entry_name(part)
            dest = os.path.join(target, *rel)
            if rel and os.path.dirname(dest) not in made:
                raise InvalidInput(f"refusing archive entry {member.name!r}")
            if member.isdir():
                os.makedirs(dest, exist_ok=True)
                made.add(dest)
            elif member.issym():
                if os.path.lexists(dest):
                    raise AlreadyExists(f"{dest} already exists")
                os.symlink(member.linkname, dest)
            else:
                source = tar.extractfile(member)
                with open(dest, "wb") as fh:
                    while chunk := source.read(1 << 20):
                        fh.write(chunk)
