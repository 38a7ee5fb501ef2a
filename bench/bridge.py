"""``python -m bench bridge``: native copies between subtrees (mcpfs/bridge/) against the
copies they replace, on one real mount and one SeaweedFS.

One ``mcpfs mount`` (background daemon, its own ``MCPFS_HOME`` in the work folder, boto3's
``AWS_*`` environment pointing at a ``weed mini`` started by ``tests/s3_server.py``'s
launcher, as in the s3 group) serves ``mnt/ipfs``, ``mnt/mfs`` and ``mnt/s3/bench``. Three
groups of rows (see README.md for the details), each the median of ``runs`` runs, the page
cache emptied before every timed copy (``drop_caches`` as root, else ``posix_fadvise``):

1. ``cp mnt/ipfs/CID mnt/mfs/x`` of a file added with ``mcpfs add`` (default profile, and
   ``--profile unixfs-v1-2025``) vs the first import of the same bytes (``cp`` of the local
   file into ``mnt/mfs``, done before the add, so nothing deduplicates). Goal: >= 3 x. The
   blockstore's files are counted before and after each copy (a link adds ~1: the new root).
2. ``mcpfs cp /s3/bench/src /s3/bench/dst`` (server-side CopyObject) for 1 MiB and
   ``file_mib`` objects, with the daemon's S3 bytes in/out (``mcpfs stats --json``) before
   and after; the same with a plain ``cp`` through the mount, and boto3's own CopyObject as
   the server's reference. Goal: 0 bytes through mcpfs, time flat in the size.
3. ``mcpfs cp /s3/bench/obj /mfs/obj`` of an object put with boto3 (no CID known: the
   ``stream`` route) vs reading an object through the mount (``cat``) and importing a local
   file into ``mnt/mfs`` (``cp``). Goal: >= 80% of the slower side's MB/s.

Everything (mount, server) is stopped at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .common import MiB, make_source
from .mount import McpfsMount, Row, drop_caches, run_cmd
from .s3 import BUCKET, aws_env, delete_prefix, label_of, raw_client, seaweed

COPY_GOAL = 3.0  # cp /ipfs -> /mfs over the first import, MB/s ratio
STREAM_GOAL = 0.80  # mcpfs cp /s3 -> /mfs over the slower of read /s3 and import into /mfs
FLAT_GOAL = 2.0  # mcpfs cp /s3 -> /s3: big object's time <= this x the 1 MiB one's
SMALL_MIB = 1
SMALL_RUNS = 5  # runs of the cheap 1 MiB rows (at least --runs)
CMD_TIMEOUT = 900  # seconds for one command against the mount
PROFILES = (("default", []), ("unixfs-v1-2025", ["--profile", "unixfs-v1-2025"]))
ROUTE_LINE = re.compile(r" -> .*\((?P<route>[\w-]+)\)\s*$")


@dataclass
class Sizes:
    file_mib: int = 1024

    @classmethod
    def quick(cls) -> Sizes:
        return cls(file_mib=64)


# ---------------------------------------------------------------- helpers
class Daemon:
    """The mcpfs CLI against the bench's daemon (its MCPFS_HOME)."""

    def __init__(self, m: McpfsMount) -> None:
        self.m = m

    def run(self, *args: str, timeout: float = CMD_TIMEOUT) -> tuple[float, str, str]:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mcpfs", *args], env=self.m.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
        secs = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"mcpfs {' '.join(args)}: exit {done.returncode}: "
                               f"{done.stderr.strip()[-800:]}")
        return secs, done.stdout, done.stderr

    def stats(self) -> dict:
        return json.loads(self.run("stats", "--json")[1])

    def cp(self, src: str, dst: str) -> tuple[float, str]:
        """``mcpfs cp SRC DST``: seconds, the route it printed."""
        secs, _, err = self.run("cp", src, dst)
        routes = [m["route"] for line in err.splitlines() if (m := ROUTE_LINE.search(line))]
        if len(routes) != 1:
            raise RuntimeError(f"mcpfs cp {src} {dst}: no route line in {err[-500:]!r}")
        return secs, routes[0]


def s3_bytes(snap: dict) -> tuple[int, int]:
    """(BytesIn, BytesOut) of the daemon's S3 backend."""
    s3 = snap.get("Backends", {}).get("s3", {})
    return s3.get("BytesIn", 0), s3.get("BytesOut", 0)


def routes(snap: dict) -> dict[str, int]:
    return {r: v.get("Count", 0) for r, v in snap.get("Bridge", {}).get("Routes", {}).items()}


def route_delta(before: dict, after: dict) -> dict[str, int]:
    a, b = routes(before), routes(after)
    return {r: b[r] - a.get(r, 0) for r in b if b[r] != a.get(r, 0)}


def fuse_ops(snap: dict, mount: str, op: str) -> int:
    """How many FUSE ``op`` requests the daemon served on ``mount`` (its stats)."""
    return snap.get("Mounts", {}).get(mount, {}).get("Ops", {}).get(op, {}).get("Count", 0)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_blocks(blocks: Path) -> int:
    n = 0
    for shard in os.scandir(blocks):
        if shard.is_dir():
            n += sum(1 for e in os.scandir(shard.path)
                     if e.name.endswith(".data") and not e.name.startswith("."))
    return n


def cid_of(path: Path) -> str:
    return os.getxattr(path, "user.mcpfs.cid").decode()


def source_of(path: Path) -> str:
    try:
        return os.getxattr(path, "user.mcpfs.source").decode()
    except OSError:
        return ""


def sha_object(raw, key: str) -> str:
    body = raw.get_object(Bucket=BUCKET, Key=key)["Body"]
    h = hashlib.sha256()
    for chunk in iter(lambda: body.read(MiB), b""):
        h.update(chunk)
    return h.hexdigest()


def upload(raw, path: Path, key: str) -> None:
    from boto3.s3.transfer import TransferConfig
    raw.upload_file(str(path), BUCKET, key,
                    Config=TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=8))


def human(n: int) -> str:
    return f"{n} B" if n < 1024 * 10 else f"{n / MiB:.1f} MiB"


def table(rows: list[Row]) -> str:
    head = ("bench", "params", "median", "MB/s", "goal", "pass", "runs", "note")
    lines = [head]
    for r in rows:
        if not r.samples:
            med = mbps = "-"
        else:
            med = f"{r.median:.3f} s"
            mbps = "-" if r.mbps is None else f"{r.mbps:,.0f}" if r.mbps >= 100 \
                else f"{r.mbps:.1f}"
        lines.append((r.bench, r.params, med, mbps, r.goal, r.verdict, str(len(r.samples)),
                      r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in (2, 3, 6) else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells + [line[-1]]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 10)
    return "\n".join(out)


# ---------------------------------------------------------------- the run
def run(work: Path, runs: int, sizes: Sizes,
        step: Callable[[str], None]) -> tuple[dict, list[Row], dict]:
    size = sizes.file_mib * MiB
    label = label_of(sizes.file_mib)
    small_runs = max(SMALL_RUNS, runs)
    home, mnt, srcdir = work / "home", work / "mnt", work / "src"
    for folder in (home, mnt, srcdir):
        folder.mkdir()
    blocks = home / "state" / "ipfs" / "blocks"
    meta: dict = {"sizes": sizes.__dict__, "runs": runs, "small_runs": small_runs}
    checks: dict[str, str] = {}
    seeds = itertools.count(1000)

    def source(name: str, mib: int = sizes.file_mib) -> tuple[Path, str]:
        path = srcdir / name
        return path, make_source(path, mib, seed=next(seeds))

    def row(bench: str, params: str, unit: str = "MB/s", goal: str = "", **kw) -> Row:
        return Row(bench, "mcpfs", params, unit=unit, goal=goal, **kw)

    def check(name: str, ok: bool, detail: str = "") -> None:
        if ok and name not in checks:
            checks[name] = "yes"
        elif not ok:
            checks[name] = f"NO ({detail})" if detail else "NO"

    with contextlib.ExitStack() as stack:
        step("starting SeaweedFS (weed mini)")
        server = stack.enter_context(seaweed(work))
        raw = raw_client(server["endpoint"])
        raw.create_bucket(Bucket=BUCKET)
        data_dir = server["data_dir"]

        def backing() -> Iterator[Path]:  # what drop_caches evicts when it cannot drop all
            for folder in (data_dir, blocks, srcdir):
                for dirpath, _, files in os.walk(folder):
                    for f in files:
                        p = Path(dirpath) / f
                        if p.is_file() and not p.is_symlink():
                            yield p

        def cold() -> None:
            meta["cold_method"] = drop_caches(backing)

        step("mounting mcpfs (S3 by boto3's AWS_* environment)")
        with aws_env(server):
            m = stack.enter_context(McpfsMount(home, mnt))
        meta["daemon_pid"] = m.pid
        d = Daemon(m)
        mfs, ipfs, bucket = mnt / "mfs", mnt / "ipfs", mnt / "s3" / BUCKET

        # ---- CLI start-up: what every `mcpfs cp` pays before its request
        cli = row("mcpfs stats --json", "CLI start-up + one daemon request (reference)", "s")
        for _ in range(small_runs):
            cli.add(d.run("stats", "--json")[0], 0)

        # ---- 1. cp /ipfs -> /mfs through the mount vs the first import
        first_rows: list[Row] = []
        for tag, flags in PROFILES:
            imp = row(f"import {label} into /mfs, cold", "cp LOCAL mnt/mfs/ (first import of "
                      "these bytes)", nbytes=size)
            added = " ".join(flags) or "(default)"
            cp = row(f"cp /ipfs -> /mfs {label}, cold",
                     f"mcpfs add {added}; cp mnt/ipfs/CID mnt/mfs/",
                     goal=f">= {COPY_GOAL:.0f} x import", nbytes=size)
            imp.extra.update(blocks_added=[], daemon_cpu_s=[], fuse_writes=[])
            cp.extra.update(blocks_added=[], daemon_cpu_s=[], fuse_writes=[], routes=[])
            for i in range(runs):
                step(f"1. {tag}: run {i + 1}/{runs}: import, mcpfs add, cp /ipfs -> /mfs")
                src, sha = source(f"r1-{tag}-{i}.bin")
                cold()
                s0, n0, c0 = d.stats(), count_blocks(blocks), cpu_s(m.pid)
                imp.add(run_cmd(["cp", str(src), str(mfs / f"import-{tag}-{i}.bin")],
                                CMD_TIMEOUT), 0)
                c1, n1, s1 = cpu_s(m.pid), count_blocks(blocks), d.stats()
                imp.extra["blocks_added"].append(n1 - n0)
                imp.extra["daemon_cpu_s"].append(round(c1 - c0, 2))
                imp.extra["fuse_writes"].append(fuse_ops(s1, "mfs", "write") -
                                                fuse_ops(s0, "mfs", "write"))
                cid = d.run("add", "-Q", *flags, str(src))[1].strip()
                cold()
                s0, n0, c0 = d.stats(), count_blocks(blocks), cpu_s(m.pid)
                dst = mfs / f"copy-{tag}-{i}.bin"
                cp.add(run_cmd(["cp", str(ipfs / cid), str(dst)], CMD_TIMEOUT), 0)
                c1, n1, s1 = cpu_s(m.pid), count_blocks(blocks), d.stats()
                cp.extra.setdefault("cids", []).append(cid)
                cp.extra["blocks_added"].append(n1 - n0)
                cp.extra["daemon_cpu_s"].append(round(c1 - c0, 2))
                cp.extra["fuse_writes"].append(fuse_ops(s1, "mfs", "write") -
                                               fuse_ops(s0, "mfs", "write"))
                cp.extra["routes"].append(route_delta(s0, s1))
                got = cid_of(dst)
                check(f"1. {tag}: copy's user.mcpfs.cid == the added CID", got == cid,
                      f"run {i}: {got} != {cid}")
                check(f"1. {tag}: copy's user.mcpfs.source == /ipfs/CID",
                      source_of(dst) == f"/ipfs/{cid}", f"run {i}: {source_of(dst)!r}")
                if i == 0:
                    digest = hashlib.sha256()
                    with open(dst, "rb") as fh:
                        while piece := fh.read(MiB):
                            digest.update(piece)
                    check(f"1. {tag}: copy reads back as the source (sha256)",
                          digest.hexdigest() == sha)
                src.unlink()
            ratio = cp.mbps / imp.mbps
            blocks_note = ", ".join(map(str, cp.extra["blocks_added"]))
            cp.judge(ratio >= COPY_GOAL,
                     f"{ratio:.2f} x import; blockstore +{blocks_note} file(s); "
                     f"routes {cp.extra['routes'][-1] or 'none counted'}; {_work(cp)}")
            imp.note = (f"blockstore +{', '.join(map(str, imp.extra['blocks_added']))} "
                        f"file(s); {_work(imp)}")
            checks[f"ratio 1. {tag}: cp /ipfs -> /mfs over import"] = f"{ratio:.2f}"
            first_rows += [cp, imp]

        # ---- 2. S3 -> S3 on one server
        step(f"2. putting {BUCKET}/src/{SMALL_MIB} MiB and {BUCKET}/src/{label} with boto3")
        objs = {}
        for mib in (SMALL_MIB, sizes.file_mib):
            path, sha = source(f"s3src-{mib}.bin", mib)
            key = f"src/{label_of(mib).replace(' ', '')}.bin"
            upload(raw, path, key)
            objs[mib] = (key, sha)
            path.unlink()
        s3_rows: dict[tuple[str, int], Row] = {}
        for mib in (SMALL_MIB, sizes.file_mib):
            n_runs = small_runs if mib == SMALL_MIB else runs
            key, sha = objs[mib]
            lab = label_of(mib)
            nb = mib * MiB
            mc = row(f"mcpfs cp /s3 -> /s3 {lab}", f"mcpfs cp /s3/{BUCKET}/{key} /s3/{BUCKET}/"
                     "copy/...", "s", nbytes=nb)
            pc = row(f"cp /s3 -> /s3 {lab}", "cp mnt/s3/... mnt/s3/... (plain cp, through "
                     "the mount)", "s", nbytes=nb)
            bc = row(f"CopyObject {lab}", "boto3 copy_object, no mcpfs (server reference)",
                     "s", nbytes=nb)
            for r in (mc, pc):
                r.extra.update(s3_bytes_in=[], s3_bytes_out=[], routes=[])
            for i in range(n_runs):
                step(f"2. {lab}: run {i + 1}/{n_runs}: mcpfs cp, cp, boto3 copy_object")
                for r, how in ((mc, "mcpfs"), (pc, "cp")):
                    dkey = f"copy/{how}-{mib}-{i}.bin"
                    cold()
                    s0 = d.stats()
                    if how == "mcpfs":
                        secs, route = d.cp(f"/s3/{BUCKET}/{key}", f"/s3/{BUCKET}/{dkey}")
                        r.extra.setdefault("cli_routes", []).append(route)
                    else:
                        secs = run_cmd(["cp", str(bucket / key), str(bucket / dkey)],
                                       CMD_TIMEOUT)
                    s1 = d.stats()
                    r.add(secs, 0)
                    (i0, o0), (i1, o1) = s3_bytes(s0), s3_bytes(s1)
                    r.extra["s3_bytes_in"].append(i1 - i0)
                    r.extra["s3_bytes_out"].append(o1 - o0)
                    r.extra["routes"].append(route_delta(s0, s1))
                    head = raw.head_object(Bucket=BUCKET, Key=dkey)
                    check(f"2. {how} {lab}: copy has the source's size",
                          head["ContentLength"] == nb, f"{head['ContentLength']} bytes")
                    if i == 0:
                        check(f"2. {how} {lab}: copy's bytes == source (sha256)",
                              sha_object(raw, dkey) == sha)
                    raw.delete_object(Bucket=BUCKET, Key=dkey)
                cold()
                start = time.perf_counter()
                raw.copy_object(Bucket=BUCKET, Key=f"copy/boto3-{mib}-{i}.bin",
                                CopySource={"Bucket": BUCKET, "Key": key})
                bc.add(time.perf_counter() - start, 0)
                raw.delete_object(Bucket=BUCKET, Key=f"copy/boto3-{mib}-{i}.bin")
            for r in (mc, pc):
                r.note = (f"S3 in {'/'.join(human(x) for x in r.extra['s3_bytes_in'])}, "
                          f"out {'/'.join(human(x) for x in r.extra['s3_bytes_out'])}; "
                          f"routes {r.extra['routes'][-1] or 'none counted'}")
            cli_routes = set(mc.extra["cli_routes"])
            check(f"2. mcpfs cp {lab}: route s3-copy", cli_routes == {"s3-copy"},
                  f"printed {sorted(cli_routes)}")
            s3_rows.update({("mcpfs", mib): mc, ("cp", mib): pc, ("boto3", mib): bc})
        big, little = s3_rows[("mcpfs", sizes.file_mib)], s3_rows[("mcpfs", SMALL_MIB)]
        own = {mib: s3_rows[("mcpfs", mib)].median - s3_rows[("boto3", mib)].median
               for mib in (SMALL_MIB, sizes.file_mib)}
        meta["mcpfs_cp_s3_own_s"] = {label_of(k): round(v, 3) for k, v in own.items()}
        for mib in (SMALL_MIB, sizes.file_mib):
            s3_rows[("mcpfs", mib)].note += (f"; minus the server's CopyObject: "
                                             f"{own[mib]:.3f} s")
        through = sum(big.extra["s3_bytes_in"] + big.extra["s3_bytes_out"] +
                      little.extra["s3_bytes_in"] + little.extra["s3_bytes_out"])
        flat = big.median / little.median
        big.goal = f"0 B via mcpfs, <= {FLAT_GOAL:.0f} x the {SMALL_MIB} MiB time"
        big.judge(through == 0 and flat <= FLAT_GOAL,
                  f"{flat:.2f} x the {SMALL_MIB} MiB time")
        checks[f"ratio 2. mcpfs cp time {label} / {SMALL_MIB} MiB"] = f"{flat:.2f}"
        checks[f"ratio 2. mcpfs cp time minus CopyObject's, {label} / {SMALL_MIB} MiB"] = (
            f"{own[sizes.file_mib] / own[SMALL_MIB]:.2f}")
        checks["2. mcpfs cp: S3 bytes through mcpfs (in + out, all runs)"] = str(through)
        for lab_mib in (SMALL_MIB, sizes.file_mib):
            pc = s3_rows[("cp", lab_mib)]
            check(f"2. cp {label_of(lab_mib)} through the mount: uploads nothing",
                  sum(pc.extra["s3_bytes_out"]) == 0,
                  f"S3 bytes out {pc.extra['s3_bytes_out']}")
        order = [(k, mib) for mib in (SMALL_MIB, sizes.file_mib)
                 for k in ("mcpfs", "cp", "boto3")]
        second_rows = [s3_rows[k] for k in order]

        # ---- 3. S3 -> /mfs, stream route
        st = row(f"mcpfs cp /s3 -> /mfs {label}, cold", "mcpfs cp /s3/bench/OBJ /mfs/OBJ "
                 "(boto3-put object, no CID: stream)",
                 goal=f">= {STREAM_GOAL:.0%} of the slower side", nbytes=size)
        rd = row(f"read /s3 {label}, cold", "cat mnt/s3/bench/OBJ2 > /dev/null", nbytes=size)
        im = row(f"import {label} into /mfs, cold", "cp LOCAL mnt/mfs/ (OBJ2's bytes)",
                 nbytes=size)
        st.extra.update(routes=[], s3_bytes_in=[], cli_routes=[], daemon_cpu_s=[])
        rd.extra.update(daemon_cpu_s=[])
        im.extra.update(daemon_cpu_s=[], fuse_writes=[])
        for i in range(runs):
            step(f"3. run {i + 1}/{runs}: mcpfs cp /s3 -> /mfs, cat /s3, cp local -> /mfs")
            a, sha_a = source(f"r3-obj-{i}.bin")
            b, _ = source(f"r3-local-{i}.bin")
            upload(raw, a, f"stream/obj-{i}.bin")
            upload(raw, b, f"stream/read-{i}.bin")
            cold()
            s0, c0 = d.stats(), cpu_s(m.pid)
            secs, route = d.cp(f"/s3/{BUCKET}/stream/obj-{i}.bin", f"/mfs/stream-{i}.bin")
            c1, s1 = cpu_s(m.pid), d.stats()
            st.extra["daemon_cpu_s"].append(round(c1 - c0, 2))
            st.add(secs, 0)
            st.extra["cli_routes"].append(route)
            st.extra["routes"].append(route_delta(s0, s1))
            st.extra["s3_bytes_in"].append(s3_bytes(s1)[0] - s3_bytes(s0)[0])
            if i == 0:
                from .mount import add_n
                from mcpfs.backends.ipfs.importer import ImportParams
                want = add_n(a, ImportParams())
                got = cid_of(mfs / f"stream-{i}.bin")
                check("3. streamed file's CID == add -n of its bytes (MFS params)",
                      got == want, f"{got} != {want}")
            cold()
            c0 = cpu_s(m.pid)
            rd.add(run_cmd(["cat", str(bucket / "stream" / f"read-{i}.bin")], CMD_TIMEOUT), 0)
            rd.extra["daemon_cpu_s"].append(round(cpu_s(m.pid) - c0, 2))
            cold()
            s0, c0 = d.stats(), cpu_s(m.pid)
            im.add(run_cmd(["cp", str(b), str(mfs / f"import3-{i}.bin")], CMD_TIMEOUT), 0)
            c1, s1 = cpu_s(m.pid), d.stats()
            im.extra["daemon_cpu_s"].append(round(c1 - c0, 2))
            im.extra["fuse_writes"].append(fuse_ops(s1, "mfs", "write") -
                                           fuse_ops(s0, "mfs", "write"))
            delete_prefix(raw, "stream/")
            a.unlink()
            b.unlink()
        slower = min(rd.mbps, im.mbps)
        ratio = st.mbps / slower
        st.judge(ratio >= STREAM_GOAL,
                 f"{ratio:.2f} x the slower side ({'read' if rd.mbps <= im.mbps else 'import'}"
                 f" {slower:.0f} MB/s); S3 in "
                 f"{'/'.join(human(x) for x in st.extra['s3_bytes_in'])}; {_work(st)}")
        rd.note, im.note = _work(rd), _work(im)
        check("3. mcpfs cp /s3 -> /mfs: route stream", set(st.extra["cli_routes"]) == {"stream"},
              f"printed {sorted(set(st.extra['cli_routes']))}")
        checks["ratio 3. mcpfs cp /s3 -> /mfs over the slower side"] = f"{ratio:.2f}"
        third_rows = [st, rd, im]

        meta["daemon_rss_kib"] = {k: _status(m.pid, k) for k in ("VmRSS", "VmHWM")}
        meta["daemon_log"] = str(m.log)
        meta["final_stats"] = d.stats()
        step("unmounting, stopping SeaweedFS")

    cli.note = "part of every mcpfs cp row"
    meta["cli_overhead_s"] = cli.median
    return meta, first_rows + second_rows + third_rows + [cli], checks


def _work(r: Row) -> str:
    """The daemon's CPU seconds (and FUSE write requests) per run, for a note."""
    out = f"daemon CPU {'/'.join(f'{x:.1f}' for x in r.extra['daemon_cpu_s'])} s"
    if r.extra.get("fuse_writes"):
        out += f", {'/'.join(map(str, r.extra['fuse_writes']))} FUSE writes"
    return out


def _status(pid: int, name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
