"""``mcpfs add``, ``cat`` and ``get``: kubo's commands of the same names, locally."""

from __future__ import annotations

import contextlib
import os
import sys
import tarfile

import click

from ..backends.ipfs.add import Adder
from ..backends.ipfs.blockstore import NullBlockstore
from ..backends.ipfs.cid import CID
from ..backends.ipfs.importer import parse_chunker, params_for
from ..backends.ipfs.node import Repo
from ..errors import AlreadyExists, InvalidInput
from .common import cli, open_repo, resolve, write_stdout


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
    params = params_for(profile, cid_version=cid_version, raw_leaves=raw_leaves,
                        chunk_size=parse_chunker(chunker) if chunker else None,
                        layout="trickle" if trickle else None)
    repo = None if only_hash else open_repo()
    store = NullBlockstore() if only_hash else repo.store
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress(show and not quieter, None)
    adder = Adder(store, params, hidden=hidden, on_bytes=bar.update if bar else None)
    if not paths or paths == ("-",):
        events = [_stdin_event(adder)]
    else:
        events = adder.add_many(list(paths), recursive=recursive, wrap=wrap)
    last = None
    guard = repo.gc_lock.writing() if repo is not None else contextlib.nullcontext()
    with guard:
        last = _print_events(events, quiet, quieter, bar)
        if last is not None and repo is not None:
            repo.store.sync()
            if pin:
                repo.pins.add(last.root.cid, recursive=True)
    if last is not None and quieter:
        click.echo(str(last.root.cid))


def _print_events(events, quiet: bool, quieter: bool, bar):
    """Print kubo's `added` lines as events arrive; return the last event (the root)."""
    last = None
    try:
        for event in events:
            last = event
            if quieter:
                continue
            line = str(event.root.cid) if quiet else f"added {event.root.cid} {event.name}"
            if bar:
                bar.clear()
            click.echo(line)
    finally:
        if bar:
            bar.close()
    return last


def _stdin_event(adder: Adder):
    from ..backends.ipfs.add import AddEvent
    root = adder.stream(sys.stdin.buffer)
    return AddEvent(str(root.cid), root, False)


@cli.command()
@click.argument("path")
@click.option("-o", "--offset", type=click.IntRange(min=0), default=0)
@click.option("-l", "--length", type=click.IntRange(min=0), default=None)
def cat(path, offset, length):
    """Write a file's bytes to stdout."""
    repo = open_repo()
    cid = resolve(repo, path)
    if offset or length is not None:
        size = repo.reader.stat(cid).size
        count = size - offset if length is None else length
        write_stdout([repo.reader.read(cid, offset, max(0, count))])
    else:
        write_stdout(repo.reader.iter_file(cid))


@cli.command()
@click.argument("path")
@click.option("-o", "--output", type=click.Path(), default=None, help="Where to write.")
@click.option("-a", "--archive", is_flag=True, help="Write a tar archive.")
def get(path, output, archive):
    """Save a file or directory (or a tar of it) to the local disk."""
    repo = open_repo()
    cid = resolve(repo, path)
    name = path.rstrip("/").rsplit("/", 1)[-1] or str(cid)
    target = output or (name + ".tar" if archive else name)
    click.echo(f"Saving file(s) to {target}", err=True)
    if archive:
        with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
            _tar(repo, cid, name, tar)
    else:
        _save(repo, cid, target)


def _save(repo: Repo, cid: CID, target: str) -> None:
    info = repo.reader.stat(cid)
    if info.type == "directory":
        os.makedirs(target, exist_ok=True)
        for link in repo.reader.list_dir(cid):
            _check_entry_name(link.name)
            _save(repo, link.cid, os.path.join(target, link.name))
    elif info.type == "symlink":
        if os.path.lexists(target):
            raise AlreadyExists(f"{target} already exists")
        os.symlink(info.target, target)
    else:
        with open(target, "wb") as fh:
            for chunk in repo.reader.iter_file(cid):
                fh.write(chunk)


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


def _tar(repo: Repo, cid: CID, name: str, tar: tarfile.TarFile) -> None:
    info = repo.reader.stat(cid)
    member = tarfile.TarInfo(name)
    member.mtime = info.mtime[0] if info.mtime else 0
    if info.type == "directory":
        member.type = tarfile.DIRTYPE
        member.mode = info.mode or 0o755
        tar.addfile(member)
        for link in repo.reader.list_dir(cid):
            _check_entry_name(link.name)
            _tar(repo, link.cid, f"{name}/{link.name}", tar)
    elif info.type == "symlink":
        member.type = tarfile.SYMTYPE
        member.linkname = info.target or ""
        tar.addfile(member)
    else:
        member.size = info.size
        member.mode = info.mode or 0o644
        tar.addfile(member, _ChunkReader(repo.reader.iter_file(cid)))
