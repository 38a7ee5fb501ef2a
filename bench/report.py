"""Print the results as a table and save them as JSON."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
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


def run_group(group: str, args, stamp: str, json_path: Path,
              measure: Callable[[Path, Callable[[str], None]], tuple[dict, list, dict]],
              render: Callable[[list], str], header: Callable[[dict], str],
              shown_checks: Callable[[dict], dict] = lambda checks: checks) -> int:
    """One bench group: a temporary folder (removed unless ``args.keep``), progress lines on
    stderr, ``measure(work, step) -> (meta, rows, checks)``, then the table, the checks and
    the JSON. Exit status 1 when a check says NO."""
    work = Path(tempfile.mkdtemp(prefix=f"mcpfs-bench-{group}-", dir=args.tmp))
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        print(f"[{group} {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        meta, rows, checks = measure(work, step)
        step("done")
        meta.update({"timestamp": stamp, "group": group, "statistic": "median",
                     "mb": "10^6 bytes", "python": sys.version.split()[0],
                     "platform": platform.platform(), "cpus": os.cpu_count(),
                     "loadavg_at_end": os.getloadavg(),
                     "wall_s": round(time.perf_counter() - t0, 1)})
        save(json_path, meta, rows, checks)
        print()
        print(header(meta))
        print(render(rows))
        print()
        print(summary(shown_checks(checks)))
        print(f"\nJSON: {json_path}   (total {meta['wall_s']} s)")
        return 0 if not any(str(v).startswith("NO") for v in checks.values()) else 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            for _ in range(3):  # a child may still be finishing its last writes
                shutil.rmtree(work, ignore_errors=True)
                if not work.exists():
                    break
                time.sleep(2)
