"""``mcpfs stats``: the running daemon's counters per backend, per mount and for the bridge.

Asks the daemon (``POST /api/v0/mcpfs/stats`` on the control socket, the snapshot of
:class:`mcpfs.stats.Stats`) and prints three tables: one row per backend (requests, errors,
bytes in and out, p50/p99 latency, cache hit rate), one row per mount (FUSE operations),
and the bridge's transfers, native against streamed. ``--json`` prints the snapshot as it
came. Reads only; the connection is closed before printing.

Errors: no daemon answering on the socket is one line ``Error: no daemon is running (start
one with mcpfs mount)`` and exit 1 (:class:`McpfsError`, printed by ``cli.main``); an error
answer of the daemon likewise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import click

from ..control.client import connect
from ..errors import McpfsError
from .common import cli

NO_DAEMON: Final = "no daemon is running (start one with mcpfs mount)"
UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")  # human sizes, 1024 apart
NONE: Final = "-"  # a cell with nothing to show (no latency, no cache lookups)


def fetch_stats() -> dict[str, Any]:
    """The daemon's stats snapshot; McpfsError when no daemon answers."""
    node = connect()
    if node is None:
        raise McpfsError(NO_DAEMON)
    try:
        return node._json("mcpfs/stats")
    finally:
        node.close()


def human_bytes(n: int) -> str:
    """``0 B``, ``512 B``, ``1.5 KiB``, ``3.0 MiB``... (powers of 1024)."""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def millis(latency: dict[str, float], pct: str) -> str:
    """A percentile (seconds in the snapshot) in milliseconds, 3 significant-ish digits."""
    seconds = latency.get(pct)
    if seconds is None:
        return NONE
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def hit_rate(cache: dict[str, int]) -> str:
    hits, misses = cache.get("Hits", 0), cache.get("Misses", 0)
    return f"{100 * hits / (hits + misses):.1f}%" if hits + misses else NONE


def table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    """Lines of an aligned table: the first column left-aligned, the others right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()
    return [line(header), *map(line, rows)]


def backend_rows(backends: dict[str, dict], per_op: bool) -> list[list[str]]:
    rows = []
    for name, b in sorted(backends.items()):
        ops = b.get("Ops", {})
        count = b.get("Count", sum(o.get("Count", 0) for o in ops.values()))
        rows.append([name, str(count), str(b.get("Errors", 0)),
                     human_bytes(b.get("BytesIn", 0)), human_bytes(b.get("BytesOut", 0)),
                     millis(b.get("Latency", {}), "p50"), millis(b.get("Latency", {}), "p99"),
                     hit_rate(b.get("Cache", {}))])
        if per_op:
            rows += [[f"  {op}", str(o["Count"]), str(o["Errors"]), human_bytes(o["BytesIn"]),
                      human_bytes(o["BytesOut"]), millis(o["Latency"], "p50"),
                      millis(o["Latency"], "p99"), ""] for op, o in sorted(ops.items())]
    return rows


def mount_rows(mounts: dict[str, dict], per_op: bool) -> list[list[str]]:
    rows = []
    for name, m in sorted(mounts.items()):
        ops = m.get("Ops", {})
        rows.append([f"/{name}", str(sum(o.get("Count", 0) for o in ops.values())),
                     str(sum(o.get("Errors", 0) for o in ops.values())),
                     human_bytes(sum(o.get("Bytes", 0) for o in ops.values())),
                     hit_rate(m.get("Cache", {}))])
        if per_op:
            rows += [[f"  {op}", str(o["Count"]), str(o["Errors"]), human_bytes(o["Bytes"]), ""]
                     for op, o in sorted(ops.items())]
    return rows


def bridge_rows(bridge: dict[str, Any]) -> list[list[str]]:
    rows = []
    for kind in ("Native", "Streamed"):
        total = bridge.get(kind, {})
        rows.append([kind.lower(), str(total.get("Count", 0)),
                     human_bytes(total.get("Bytes", 0))])
    for route, r in sorted(bridge.get("Routes", {}).items()):
        kind = "native" if r.get("Native") else "streamed"
        rows.append([f"  {route} ({kind})", str(r.get("Count", 0)),
                     human_bytes(r.get("Bytes", 0))])
    return rows


def render(snapshot: dict[str, Any], per_op: bool = False) -> list[str]:
    """The human-readable report of a stats snapshot, as lines."""
    lines = [f"uptime: {snapshot.get('Uptime', 0):.0f} s", ""]
    backends = snapshot.get("Backends") or {}
    lines += table(["backend", "ops", "errors", "in", "out", "p50", "p99", "cache hits"],
                   backend_rows(backends, per_op)) if backends else ["backends: no requests yet"]
    lines.append("")
    mounts = snapshot.get("Mounts") or {}
    lines += table(["mount", "ops", "errors", "bytes", "cache hits"],
                   mount_rows(mounts, per_op)) if mounts else ["mounts: no operations yet"]
    lines.append("")
    lines += table(["bridge", "transfers", "bytes"], bridge_rows(snapshot.get("Bridge") or {}))
    return lines


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's snapshot as JSON.")
@click.option("--ops", "per_op", is_flag=True, help="One more row per operation.")
def stats(as_json: bool, per_op: bool) -> None:
    """Per-backend requests, bytes, errors, latency and cache hits; mounts; bridge."""
    snapshot = fetch_stats()
    if as_json:
        click.echo(json.dumps(snapshot, indent=1))
        return
    for line in render(snapshot, per_op):
        click.echo(line)
