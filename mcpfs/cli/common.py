"""The click group and the helpers every command module shares, among them :func:`node`."""

from __future__ import annotations

import json
import sys

import click

from ..backends.ipfs.cid import CID
from ..backends.ipfs.node import Repo
from ..backends.ipfs.reader import split_ipfs_path
from ..config import paths


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcpfs")
def cli() -> None:
    """mcpfs: IPFS, MFS, S3 and Hugging Face as one mounted tree."""


def open_repo() -> Repo:
    """The local repo under MCPFS_HOME or the XDG state dir (created on first use)."""
    return Repo(paths().repo_dir)


def node():
    """The one place that decides "daemon or local", like kubo: the daemon when its control
    socket answers (:class:`RemoteNode`), else the local repo (:class:`LocalNode`). Both
    have the same methods and results, so every command prints the same either way."""
    from ..control.client import connect
    remote = connect()
    if remote is not None:
        return remote
    from ..control.local import LocalNode
    return LocalNode(open_repo())


def resolve(repo: Repo, path: str) -> CID:
    """``<cid>[/a/b]`` or ``/ipfs/<cid>/...`` -> the CID at that path."""
    root, segments = split_ipfs_path(path)
    return repo.reader.resolve(root, segments)


def print_json(value) -> None:
    click.echo(json.dumps(value, separators=(",", ":")))


def write_stdout(chunks) -> None:
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
    out.flush()
