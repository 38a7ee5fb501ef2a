"""Print the results as a table and save them as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .common import Result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Result]) -> str:
    head = ("bench", "impl", "params", "median s", "MB/s", "ops/s", "peak dRSS MiB", "runs",
            "cid / note")
    lines = [head]
    for r in rows:
        tail = " ".join(x for x in (r.cid or "", r.note) if x)
        lines.append((r.bench, r.impl, r.params, _fmt(r.median, ".3f"), _fmt(r.mbps, ".1f"),
                      _fmt(r.ops_per_s, ".0f"), _fmt(r.rss_mib, ".1f"), str(len(r.samples)),
                      tail))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    right = {3, 4, 5, 6, 7}
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells + [line[-1]]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 10)
    return "\n".join(out)


def summary(checks: dict) -> str:
    width = max(len(k) for k in checks)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in checks.items())


def save(path: Path, meta: dict, rows: list[Result], checks: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "checks": checks, "results": [r.to_json() for r in rows]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
