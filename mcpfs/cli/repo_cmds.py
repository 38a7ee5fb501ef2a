"""``mcpfs pin``, ``repo gc``, ``block``, ``dag`` and ``car``: kubo's commands, through the
daemon when one runs, else on the local repo (``common.node()``); same output either way."""

from __future__ import annotations

import sys

import click

from .common import cli, node


@cli.group()
def pin() -> None:
    """Pin objects to local storage (kept by `repo gc`)."""


@pin.command("add")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r/--direct", "--recursive/--direct", "recursive", default=True)
@click.option("--name", default=None)
def pin_add(paths, recursive, name):
    """Pin PATHS (CIDs or /ipfs paths): kept by `repo gc`."""
    n = node()
    for path in paths:
        cid = n.pin_add(path, recursive, name)
        click.echo(f"pinned {cid} {'recursively' if recursive else 'directly'}")


@pin.command("rm")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r/--direct", "--recursive/--direct", "recursive", default=True)
def pin_rm(paths, recursive):
    """Unpin PATHS (their blocks go at the next `repo gc`)."""
    n = node()
    for path in paths:
        cid = n.pin_rm(path, recursive)
        click.echo(f"unpinned {cid}")


@pin.command("ls")
@click.argument("paths", nargs=-1)
@click.option("-t", "--type", "kind", default="all",
              type=click.Choice(["all", "recursive", "direct", "indirect"]))
@click.option("-q", "--quiet", is_flag=True)
@click.option("-n", "--names", is_flag=True)
def pin_ls(paths, kind, quiet, names):
    """List pins; with PATHS only those (an unpinned one is an error, like kubo)."""
    for cid, pin_type, name in node().pin_ls(paths, kind):
        if quiet:
            click.echo(str(cid))
        else:
            click.echo(f"{cid} {pin_type}" + (f" {name}" if names and name else ""))


@cli.group()
def repo() -> None:
    """The local repo."""


@repo.command("gc")
@click.option("-q", "--quiet", is_flag=True)
def repo_gc(quiet):
    """Remove every block not reachable from a pin, the MFS root or a pending write."""
    for line in node().gc():
        if not quiet:
            click.echo(f"removed {line['Key']['/']}")


@cli.group()
def block() -> None:
    """Raw blocks."""


@block.command("put")
@click.argument("source", required=False, type=click.File("rb"))
@click.option("--cid-codec", default="raw")
@click.option("--mhtype", default="sha2-256")
@click.option("--pin", is_flag=True)
@click.option("--allow-big-block", is_flag=True)
def block_put(source, cid_codec, mhtype, pin, allow_big_block):
    """Store the bytes of SOURCE (or stdin) as one block; print its CID."""
    result = node().block_put(source or sys.stdin.buffer, cid_codec, mhtype, pin,
                              allow_big_block)
    click.echo(result["Key"])


@block.command("get")
@click.argument("cid")
def block_get(cid):
    """Write the raw bytes of block CID to stdout."""
    sys.stdout.buffer.write(node().block_get(cid))


@block.command("stat")
@click.argument("cid")
def block_stat(cid):
    """Key and size of block CID."""
    st = node().block_stat(cid)
    click.echo(f"Key: {st['Key']}\nSize: {st['Size']}")


@block.command("rm")
@click.argument("cids", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def block_rm(cids, force, quiet):
    """Remove the blocks CIDS from the local repo."""
    failed = False
    for result in node().block_rm(list(cids), force):
        if result.get("Error"):
            failed = True
            click.echo(f"Error: {result['Error']}", err=True)
        elif not quiet:
            click.echo(f"removed {result['Hash']}")
    if failed:
        sys.exit(1)


@cli.group()
def dag() -> None:
    """IPLD DAG nodes (dag-cbor, dag-json, dag-pb, raw)."""


@dag.command("put")
@click.argument("source", required=False, type=click.File("rb"))
@click.option("--store-codec", default="dag-cbor")
@click.option("--input-codec", default="dag-json")
@click.option("--hash", "hash_name", default="sha2-256")
@click.option("--pin", is_flag=True)
@click.option("--allow-big-block", is_flag=True)
def dag_put(source, store_codec, input_codec, hash_name, pin, allow_big_block):
    """Store the node in SOURCE (or stdin); print its CID."""
    click.echo(node().dag_put(source or sys.stdin.buffer, store_codec, input_codec, hash_name,
                              pin, allow_big_block))


@dag.command("get")
@click.argument("path")
@click.option("--output-codec", default="dag-json")
def dag_get(path, output_codec):
    """Write the node at PATH (CID[/path]) to stdout, as dag-json by default."""
    sys.stdout.buffer.write(node().dag_get(path, output_codec))


@dag.command("resolve")
@click.argument("path")
def dag_resolve(path):
    """The CID (and remaining path) that PATH resolves to."""
    result = node().dag_resolve(path)
    cid, rest = result["Cid"], result["RemPath"]
    click.echo(f"{cid}/{rest}" if rest else str(cid))


def _car_export(root, output):
    chunks = node().dag_export(root)  # resolves first: a bad root fails before any output
    out = open(output, "wb") if output else sys.stdout.buffer
    try:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
    finally:
        if output:
            out.close()


def _car_import(paths, pin_roots):
    n = node()
    for path in paths:
        with (open(path, "rb") if path != "-" else sys.stdin.buffer) as fh:
            roots, count, _ = n.dag_import(fh, pin_roots)
        for root in roots:
            click.echo(f"Pinned root\t{root}\tsuccess" if pin_roots else f"Root\t{root}")
        click.echo(f"Imported {count} blocks", err=True)


@cli.group()
def car() -> None:
    """CAR archives: v1 export, v1/v2 import."""


@car.command("export")
@click.argument("root")
@click.option("-o", "--output", type=click.Path(), default=None)
def car_export(root, output):
    """Write the DAG under ROOT as a CARv1 (stdout by default)."""
    _car_export(root, output)


@car.command("import")
@click.argument("paths", nargs=-1, required=True)
@click.option("--pin-roots/--no-pin-roots", default=True)
def car_import(paths, pin_roots):
    """Import the blocks of CAR files (v1 or v2); pins their roots like kubo."""
    _car_import(paths, pin_roots)


# kubo's names for the same commands: `dag export` / `dag import`.
dag.add_command(car_export, "export")
dag.add_command(car_import, "import")
