"""``python -m bench.hf``: /hf of the mcpfs mount vs huggingface_hub, on one local hub, in one run.

The hub is tests/hub_server.py (the Hub's HTTP API, with an LFS CDN origin on a second port)
in a child process (``python -m tests.hub_server``), so neither side shares a GIL with it.
It is filled through huggingface_hub's own client before anything is measured: a repo
``bench/model`` with ``weights.bin`` (``file_mib``, LFS: the ``make_source`` bytes) and
``runs`` repos ``bench/files-<i>`` of ``files`` small regular files in ``files_dirs``
folders. The mount is ``mcpfs mount`` (background daemon, its own ``MCPFS_HOME``),
configured as a user would: ``HF_ENDPOINT``, ``HF_TOKEN`` and its own, empty
``HF_HUB_CACHE`` (so reads go to the hub, not to the cache ``hf_hub_download`` fills).

Rows (each the median of ``runs`` runs; goals of issue 5):

- sequential read of weights.bin through the mount (1 MiB ``read()``\\ s, the file's page
  cache dropped before each run) vs ``hf_hub_download`` of it (a fresh cache folder per
  run, in this process): goal mount >= 0.8 x hf_hub_download;
- time to first byte through the mount: open + read 4 KiB of weights.bin, page cache
  dropped (every open resolves the file on the hub and follows the redirect to the CDN):
  goal <= 50 ms; also a path never looked up before (lookup + open + read of a small file);
- ``ls -R`` of a repo of ``files`` files, cold (a repo the daemon has not seen): goal <= 1 s.

Everything is unmounted, and the hub process ended by its pid, also on failure.
``python -m bench.hf [--quick] [--runs N] [--size MiB] [--json PATH] [--keep]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import report
from .common import MiB, evict, make_source
from .mount import McpfsMount, Row, drop_caches, env_var, read_file, run_cmd, status_kib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MCPFS = "mcpfs mount"
HFHUB = "hf_hub_download"
USER, TOKEN = "bench", "hf_bench_token_0123456789"
READ_RATIO_GOAL = 0.8
TTFB_GOAL_MS = 50.0
LS_GOAL_S = 1.0
TTFB_SAMPLES = 20  # opens per run for the time to first byte
TTFB_READ = 4096
HUB_START_TIMEOUT = 30.0


@dataclass
class Sizes:
    file_mib: int = 512
    files: int = 5000
    files_dirs: int = 10  # the files are spread over this many folders (+ 20 at the root)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(file_mib=128)


class HfRow(Row):
    """A Row whose unit may also be milliseconds (time to first byte)."""

    @property
    def value(self) -> float | None:
        if self.samples and self.unit == "ms":
            return self.median * 1e3
        return super().value


# ---------------------------------------------------------------- the hub
@contextlib.contextmanager
def hub_process(root: Path, log: Path) -> Iterator[str]:
    """``python -m tests.hub_server ROOT`` with the bench user; yields the endpoint."""
    env = dict(os.environ, MCPFS_HUB_USERS=f"{USER}:{TOKEN}", PYTHONPATH=str(ROOT))
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.hub_server", str(root)],
                                stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT,
                                stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # one JSON line once both origins listen
        if not line:
            raise RuntimeError(f"hub server did not start: {log.read_text()[-2000:]}")
        yield json.loads(line)["endpoint"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def populate(api, src: Path, sizes: Sizes, runs: int) -> dict:
    """bench/model (weights.bin, LFS) and bench/files-<i>, with huggingface_hub's client."""
    from huggingface_hub import CommitOperationAdd
    api.create_repo(f"{USER}/model")
    api.upload_file(path_or_fileobj=str(src), path_in_repo="weights.bin",
                    repo_id=f"{USER}/model")
    per_dir = (sizes.files - 20) // sizes.files_dirs
    names = [f"top-{i:02d}.txt" for i in range(sizes.files - per_dir * sizes.files_dirs)]
    names += [f"shard-{d:02d}/part-{i:05d}.json" for d in range(sizes.files_dirs)
              for i in range(per_dir)]
    for run in range(runs):
        repo = f"{USER}/files-{run}"
        api.create_repo(repo)
        api.create_commit(repo, [CommitOperationAdd(n, f'{{"n": "{n}", "run": {run}}}\n'.encode())
                                 for n in names], commit_message=f"{len(names)} files")
    return {"files": len(names) + 1}  # + .gitattributes


# ---------------------------------------------------------------- measurements
def ttfb(path: Path, size: int = TTFB_READ) -> float:
    """open + read ``size`` bytes + close, the file's page cache dropped first; seconds."""
    evict([path])
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.read(fd, size)
    finally:
        os.close(fd)
    secs = time.perf_counter() - start
    if not got:
        raise AssertionError(f"{path}: no first byte")
    return secs


def first_byte_new_path(path: Path) -> float:
    """lookup + open + read of a path the daemon has not seen; seconds."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        got = fh.read(TTFB_READ)
    secs = time.perf_counter() - start
    if not got:
        raise AssertionError(f"{path}: no first byte")
    return secs


def hf_download(endpoint: str, cache: Path) -> tuple[float, Path]:
    from huggingface_hub import hf_hub_download
    start = time.perf_counter()
    got = hf_hub_download(f"{USER}/model", "weights.bin", endpoint=endpoint, token=TOKEN,
                          cache_dir=str(cache))
    return time.perf_counter() - start, Path(got)


# ---------------------------------------------------------------- the run
def run(work: Path, runs: int, sizes: Sizes,
        step: Callable[[str], None]) -> tuple[dict, list[HfRow], dict]:
    # huggingface_hub reads these at import: basic LFS transfers (what the local hub speaks)
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from huggingface_hub import HfApi, __version__ as hfh_version

    size = sizes.file_mib * MiB
    label = f"{sizes.file_mib} MiB" if sizes.file_mib % 1024 else f"{sizes.file_mib // 1024} GiB"
    home, mnt, dl = work / "home", work / "mnt", work / "downloads"
    for folder in (home, mnt, dl):
        folder.mkdir()
    meta: dict = {"sizes": sizes.__dict__, "runs": runs, "huggingface_hub": hfh_version}
    checks: dict[str, str] = {}
    step(f"writing the {sizes.file_mib} MiB source")
    src = work / "weights.bin"
    sha = make_source(src, sizes.file_mib, seed=0)

    def row(bench: str, impl: str, params: str, unit: str, goal: str = "", **kw) -> HfRow:
        return HfRow(bench, impl, params, unit=unit, goal=goal, **kw)

    read_m = row(f"read seq {label} (LFS)", MCPFS, "1 MiB read()s, page cache dropped",
                 "MB/s", f">= {READ_RATIO_GOAL} x {HFHUB}", nbytes=size)
    read_h = row(f"read seq {label} (LFS)", HFHUB, "fresh cache folder per run", "MB/s",
                 nbytes=size)
    tt = row("time to first byte", MCPFS, f"open + read {TTFB_READ // 1024} KiB of "
             f"weights.bin, median of {TTFB_SAMPLES} opens", "ms", f"<= {TTFB_GOAL_MS:.0f} ms")
    tt_new = row("time to first byte, new path", MCPFS, "lookup + open + read of a file "
                 "not seen before", "ms")
    ls = row(f"ls -R {sizes.files:,} files, cold", MCPFS, "a repo the daemon has not "
             f"seen ({sizes.files_dirs} folders)", "s", f"<= {LS_GOAL_S:.0f} s")
    ls_warm = row(f"ls -R {sizes.files:,} files, warm", MCPFS, "the same again", "s")

    with contextlib.ExitStack() as stack:
        step("starting the local hub")
        endpoint = stack.enter_context(hub_process(work / "hub", work / "hub.log"))
        api = HfApi(endpoint=endpoint, token=TOKEN)
        step(f"filling it with huggingface_hub: {sizes.file_mib} MiB LFS file, "
             f"{runs} x {sizes.files:,} files")
        info = populate(api, src, sizes, runs)
        env = {"HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN,
               "HF_HOME": str(work / "hf-home"), "HF_HUB_CACHE": str(work / "hf-home/hub")}
        for name, value in env.items():
            stack.enter_context(env_var(name, value))
        step("mounting mcpfs")
        m = stack.enter_context(McpfsMount(home, mnt))
        stack.callback(lambda: meta.setdefault("daemon_rss_kib", {
            "end": status_kib(m.pid, "VmRSS"), "peak": status_kib(m.pid, "VmHWM")}))
        repo = mnt / "hf" / USER
        weights = repo / "model" / "weights.bin"

        step(f"ls -R of {sizes.files:,} files, cold and warm, {runs} run(s)")
        for i in range(runs):
            ls.add(run_cmd(["ls", "-R", str(repo / f"files-{i}")]), 0)
            ls_warm.add(run_cmd(["ls", "-R", str(repo / f"files-{i}")]), 0)
        listed = sum(len(f) for _, _, f in os.walk(repo / "files-0"))
        checks["ls -R lists every file"] = "yes" if listed == info["files"] else \
            f"NO ({listed} of {info['files']})"

        step(f"time to first byte, {runs} x {TTFB_SAMPLES} opens")
        os.stat(weights)
        for i in range(runs):
            tt.add(statistics.median(ttfb(weights) for _ in range(TTFB_SAMPLES)), 0)
            tt_new.add(first_byte_new_path(repo / f"files-{i}" / "shard-03" / "part-00007.json"),
                       0)

        step(f"sequential read of {label}: mount vs hf_hub_download, {runs} run(s)")
        hub_lfs = work / "hub" / "lfs" / sha

        def backing() -> Iterator[Path]:
            yield weights
        for i in range(runs):
            drop_caches(backing)
            read_m.add(read_file(weights, size), 0)
            secs, got = hf_download(endpoint, dl / f"run-{i}")
            read_h.add(secs, 0)
            if got.stat().st_size != size:
                raise AssertionError(f"hf_hub_download: {got.stat().st_size} bytes")
            shutil.rmtree(dl / f"run-{i}")
        digest = hashlib.sha256()
        evict([weights])
        read_file(weights, size, digest)
        checks["mount read sha256 == source"] = "yes" if digest.hexdigest() == sha else "NO"
        checks["hub stored weights.bin as LFS (oid = sha256)"] = \
            "yes" if hub_lfs.exists() else "NO"
        ratio = read_m.mbps / read_h.mbps
        read_m.judge(ratio >= READ_RATIO_GOAL, f"{ratio:.2f} x {HFHUB}")
        read_h.note = "HEAD + 302 + one GET from the CDN, written to its cache and hashed"
        checks[f"ratio mount / {HFHUB}"] = f"{ratio:.2f}"
        tt.judge(tt.value <= TTFB_GOAL_MS)
        ls.judge(ls.value <= LS_GOAL_S)
        meta["daemon_log"] = str(m.log)
        step("unmounting")

    return meta, [read_m, read_h, tt, tt_new, ls, ls_warm], checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hf",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="128 MiB file, 1 run")
    ap.add_argument("--runs", type=int, default=None, help="runs per row (default 3)")
    ap.add_argument("--size", type=int, default=None, metavar="MiB",
                    help="LFS file size (default 512; --quick: 128)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="where to write the JSON (default bench/results/<timestamp>-hf.json)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary files")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    args.hf_size = args.size
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    return run_group(args, stamp, args.json or RESULTS / f"{stamp}-hf.json")


def run_group(args: argparse.Namespace, stamp: str, json_path: Path) -> int:
    """The hf group (also what ``python -m bench hf`` calls): table, JSON, exit status."""
    sizes = Sizes.quick() if args.quick else Sizes()
    if getattr(args, "hf_size", None):  # --hf-size of python -m bench, --size here
        sizes.file_mib = args.hf_size
    runs = args.runs or (1 if args.quick else 3)
    from .mount import table
    return report.run_group(
        "hf", args, stamp, json_path, lambda work, step: run(work, runs, sizes, step), table,
        lambda meta: f"hf group: median of {runs} run(s) on one local hub "
                     f"(tests/hub_server.py), MB = 10^6 bytes")


if __name__ == "__main__":
    sys.exit(main())
