"""``mcpfs files ...``: kubo's MFS commands over the local repo's MFS."""

from __future__ import annotations

import sys

import click
import trio

from .common import cli, open_repo, write_stdout


def _mfs_call(fn):
    """Run ``await fn(mfs)`` on a fresh trio loop with the local repo's MFS."""
    repo = open_repo()
    return trio.run(fn, repo.mfs)


@cli.group()
def files() -> None:
    """Mutable File System (like `ipfs files`)."""


@files.command("ls")
@click.argument("path", default="/")
@click.option("-l", "--long", is_flag=True, help="Name, hash and size.")
@click.option("-U", is_flag=True, hidden=True, help="Accepted for kubo compatibility.")
def files_ls(path, long, u):
    entries = _mfs_call(lambda mfs: mfs.ls(path, long=long))
    for entry in entries:
        if long:
            suffix = "/" if entry["Type"] == 1 else ""
            click.echo(f"{entry['Name']}{suffix}\t{entry['Hash']}\t{entry['Size']}")
        else:
            click.echo(entry["Name"])


@files.command("mkdir")
@click.argument("path")
@click.option("-p", "--parents", is_flag=True)
def files_mkdir(path, parents):
    _mfs_call(lambda mfs: mfs.mkdir(path, parents=parents))


@files.command("write")
@click.argument("path")
@click.argument("source", required=False, type=click.File("rb"))
@click.option("-o", "--offset", type=click.IntRange(min=0), default=0)
@click.option("-e", "--create", is_flag=True)
@click.option("-p", "--parents", is_flag=True)
@click.option("-t", "--truncate", is_flag=True)
@click.option("-n", "--count", type=click.IntRange(min=0), default=None)
def files_write(path, source, offset, create, parents, truncate, count):
    """Write SOURCE (or stdin) into the MFS file PATH."""
    stream = source or sys.stdin.buffer
    _mfs_call(lambda mfs: mfs.write(path, stream, offset=offset, create=create,
                                    truncate=truncate, parents=parents, count=count))


@files.command("read")
@click.argument("path")
@click.option("-o", "--offset", type=click.IntRange(min=0), default=0)
@click.option("-n", "--count", type=click.IntRange(min=0), default=None)
def files_read(path, offset, count):
    async def run(mfs):
        out = sys.stdout.buffer
        async for chunk in mfs.iter_read(path, offset, count):
            out.write(chunk)
        out.flush()
    _mfs_call(run)


@files.command("rm")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True)
@click.option("--force", is_flag=True)
def files_rm(paths, recursive, force):
    async def run(mfs):
        for path in paths:
            await mfs.rm(path, recursive=recursive, force=force)
    _mfs_call(run)


@files.command("mv")
@click.argument("src")
@click.argument("dst")
def files_mv(src, dst):
    _mfs_call(lambda mfs: mfs.mv(src, dst))


@files.command("cp")
@click.argument("src")
@click.argument("dst")
@click.option("-p", "--parents", is_flag=True)
def files_cp(src, dst, parents):
    """Copy /ipfs/<cid>/... or an MFS path to DST (links the CID, copies no bytes)."""
    _mfs_call(lambda mfs: mfs.cp(src, dst, parents=parents))


@files.command("stat")
@click.argument("path", default="/")
@click.option("--hash", "only_hash", is_flag=True, help="Print only the hash.")
@click.option("--size", "only_size", is_flag=True, help="Print only the size.")
def files_stat(path, only_hash, only_size):
    st = _mfs_call(lambda mfs: mfs.stat(path))
    if only_hash:
        click.echo(st["Hash"])
    elif only_size:
        click.echo(st["Size"])
    else:
        click.echo(f"{st['Hash']}\nSize: {st['Size']}\nCumulativeSize: {st['CumulativeSize']}"
                   f"\nChildBlocks: {st['Blocks']}\nType: {st['Type']}")


@files.command("flush")
@click.argument("path", default="/")
def files_flush(path):
    click.echo(str(_mfs_call(lambda mfs: mfs.flush(path))))


@files.command("cat", hidden=True)
@click.argument("path")
def files_cat(path):
    write_stdout([_mfs_call(lambda mfs: mfs.read(path))])
