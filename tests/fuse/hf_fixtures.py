"""Real-mount fixtures for /hf: the local hub (tests/hub_server.py) in this process, the
daemon (tests/fuse/conftest.Daemon) in a subprocess pointed at it by environment only.

Register in tests/fuse/conftest.py with
``from tests.fuse.hf_fixtures import hf_hub, hf_env_vars, hf_mnt  # noqa: F401``.
"""

from __future__ import annotations

import pytest

from tests.hub_server import HubServer

HF_ALICE = "hf_alice_token_0123456789"


@pytest.fixture
def hf_hub(tmp_path):
    srv = HubServer(tmp_path / "hub").start()
    srv.hub.add_user("alice", HF_ALICE)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def hf_env_vars(hf_hub, tmp_path, monkeypatch) -> dict:
    """What a user exports for a self-hosted hub: huggingface_hub's own variables."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "hf_home"
    return {"HF_ENDPOINT": hf_hub.endpoint, "HF_TOKEN": HF_ALICE, "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_DISABLE_XET": "1"}


@pytest.fixture
def hf_mnt(daemon, hf_env_vars):
    daemon.start(hf_env_vars)
    return daemon.mnt
