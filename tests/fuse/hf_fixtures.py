"""Real-mount fixtures for /hf: the local hub (tests/hub_server.py) in this process, the
daemon (tests/fuse/conftest.Daemon) in a subprocess pointed at it the way a user would: by
huggingface_hub's environment (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_CACHE``) and an
``[hf]`` section naming the repos to show at /hf.

The hub serves from threads of the pytest process, so anything that page-faults on the
mount (mmap, numpy.memmap, safetensors) must run in a child process: a fault taken by this
process holds its GIL while the hub thread that would answer it waits for the GIL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import ALICE as HF_ALICE  # the mount's user
from tests.hub_server import HubServer
CONFIGURED = ("carol/listed", "datasets/carol/table")  # [hf] repos of the mounts here


@pytest.fixture
def hf_hub(tmp_path):
    with HubServer.with_test_users(tmp_path / "hub") as srv:
        yield srv


@pytest.fixture
def hf_env_vars(hf_hub, tmp_path, monkeypatch) -> dict:
    """What a user exports for a self-hosted hub: huggingface_hub's own variables."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "hf_home"
    return {"HF_ENDPOINT": hf_hub.endpoint, "HF_TOKEN": HF_ALICE, "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def write_hf_config(mcpfs_home: Path, repos=CONFIGURED) -> None:
    """``[hf] repos = [...]`` in the daemon's config file (MCPFS_HOME/config/config.toml)."""
    cfg = Path(mcpfs_home) / "config" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("[hf]\nrepos = [" + ", ".join(f'"{r}"' for r in repos) + "]\n")


@pytest.fixture
def hf_mnt(hf_env_vars, daemon, mcpfs_home):
    """The mount with /hf as alice (token in HF_TOKEN) and the [hf] repos of CONFIGURED.
    The hub is set up first so that it outlives the daemon (which may still be retrying a
    commit when a test ends)."""
    write_hf_config(mcpfs_home)
    daemon.start(hf_env_vars)
    return daemon.mnt


@pytest.fixture
def hf_anon_mnt(hf_env_vars, daemon, mcpfs_home):
    """The same without a token: public repos only."""
    write_hf_config(mcpfs_home)
    daemon.start({k: v for k, v in hf_env_vars.items() if k != "HF_TOKEN"})
    return daemon.mnt


def child(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter (see the module docstring); its stdout."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))
    if done.returncode:
        raise AssertionError(f"child failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout
