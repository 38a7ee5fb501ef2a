"""The ``mcpfs`` command line: parse, call the repo (or the daemon), print.

Every failure ends as one line ``Error: ...`` on stderr and a non-zero exit (1 for a failed
operation, 2 for bad usage, 130 on Ctrl-C), never a traceback; ``MCPFS_DEBUG=1`` shows it.
"""

from __future__ import annotations

import os
import sys

import click

from ..errors import McpfsError
from .common import cli
# (importing them registers the commands)
from . import bridge, content, files, mount, repo_cmds, stats_cmd, status  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="mcpfs", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except McpfsError as exc:
        if os.environ.get("MCPFS_DEBUG"):
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        if os.environ.get("MCPFS_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"Error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
