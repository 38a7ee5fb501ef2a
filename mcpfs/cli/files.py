"""``mcpfs files ...``: kubo's MFS commands, on the daemon's MFS when one runs, else on the
local repo's (``common.node()``); same output either way."""

from __future__ import annotations

import sys

import click

from .common import cli, node


@cli.group()
def files() -> None:
    """Mutable File System (like `ipfs files`)."""


@files.command("ls")
@click.argument("path", default="/")
@click.option("-l", "--long", is_flag=True, help="Name, hash and size.")
@click.option("-U", is_flag=True, hidden=True, help="Accepted for kubo compatibility.")
def files_ls(path, long, u):
    """List the directory PATH (default /)."""
    entries = node().files_ls(path, long=long)
    for entry in entries:
        if long:
            suffix = "/" if entry["Type"] == 1 else ""
            click.echo(f"{entry['Name']}{suffix}\t{entry['Hash']}\t{entry['Size']}")
        else:
            click.echo(entry["Name"])


@files.command("mkdir")
@click.argument("path")
@click.option("-p", "--parents", is_flag=True, help="Make parent directories as needed; "
              "no error if PATH exists.")
def files_mkdir(path, parents):
    """Make the directory PATH."""
    node().files_mkdir(path, parents=parents)


@files.command("write")
@click.argument("path")
@click.argument("source", required=False, type=click.File("rb"))
@click.option("-o", "--offset", type=click.IntRange(min=0), default=0,
              help="Byte offset to write at (past the end: zero-filled).")
@click.option("-e", "--create", is_flag=True, help="Create the file if it does not exist.")
@click.option("-p", "--parents", is_flag=True, help="Make parent directories as needed.")
@click.option("-t", "--truncate", is_flag=True, help="Empty the file before writing.")
@click.option("-n", "--count", type=click.IntRange(min=0), default=None,
              help="Write at most this many bytes.")
def files_write(path, source, offset, create, parents, truncate, count):
    """Write SOURCE (or stdin) into the MFS file PATH."""
    node().files_write(path, source or sys.stdin.buffer, offset=offset, create=create,
                       parents=parents, truncate=truncate, count=count)


@files.command("read")
@click.argument("path")
@click.option("-o", "--offset", type=click.IntRange(min=0), default=0,
              help="Byte offset to start at.")
@click.option("-n", "--count", type=click.IntRange(min=0), default=None,
              help="Read at most this many bytes.")
def files_read(path, offset, count):
    """Write the file PATH to stdout."""
    node().files_read(path, sys.stdout.buffer, offset, count)
    sys.stdout.buffer.flush()


@files.command("rm")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and their contents.")
@click.option("--force", is_flag=True, help="Remove even what cannot be read (implies -r).")
def files_rm(paths, recursive, force):
    """Remove the files or directories PATHS."""
    node().files_rm(list(paths), recursive=recursive, force=force)


@files.command("mv")
@click.argument("src")
@click.argument("dst")
def files_mv(src, dst):
    """Move (rename) SRC to DST."""
    node().files_mv(src, dst)


@files.command("cp")
@click.argument("src")
@click.argument("dst")
@click.option("-p", "--parents", is_flag=True, help="Make parent directories as needed.")
def files_cp(src, dst, parents):
    """Copy /ipfs/<cid>/... or an MFS path to DST (links the CID, copies no bytes)."""
    node().files_cp(src, dst, parents=parents)


@files.command("stat")
@click.argument("path", default="/")
@click.option("--hash", "only_hash", is_flag=True, help="Print only the hash.")
@click.option("--size", "only_size", is_flag=True, help="Print only the size.")
def files_stat(path, only_hash, only_size):
    """Hash, size and type of PATH (default /)."""
    st = node().files_stat(path)
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
    """Write the MFS to disk now (fsync); print the CID of PATH."""
    click.echo(node().files_flush(path))


@files.command("cat", hidden=True)
@click.argument("path")
def files_cat(path):
    node().files_read(path, sys.stdout.buffer)
    sys.stdout.buffer.flush()
