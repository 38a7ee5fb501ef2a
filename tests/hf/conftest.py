"""Fixtures of tests/hf: the local hub (tests/hub_server.py) and a clean Hugging Face
environment (no real token, cache and home under tmp, Xet off, endpoint = the local hub).

huggingface_hub reads HF_* into ``huggingface_hub.constants`` at import, so the variables
that must hold for the whole session are set here, before anything imports it; per-test
values are also patched into ``constants``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_DISABLE_XET"] = "1"  # basic LFS transfers: what the local hub speaks
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)

import pytest  # noqa: E402

from tests.hub_server import ALICE, BOB, HubServer  # noqa: E402,F401  (ALICE/BOB re-exported)


@pytest.fixture
def hub_server(tmp_path):
    with HubServer.with_test_users(tmp_path / "hub") as srv:
        yield srv


@pytest.fixture
def hf_env(hub_server, tmp_path, monkeypatch):
    """HF_ENDPOINT = the local hub; HF_HOME/HF_HUB_CACHE in tmp; no token."""
    from huggingface_hub import constants
    home = tmp_path / "hf_home"
    cache = home / "hub"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return {"endpoint": hub_server.endpoint, "cache": cache, "home": home}


@pytest.fixture
def alice_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    return ALICE


def seed(server, repo_id: str, files: dict, repo_type: str = "model", **kw):
    """Make ``repo_id`` on the hub directly (no HTTP) with ``files`` in one commit;
    bytes above the hub's LFS rule (size, suffix, NUL bytes) become LFS objects."""
    hub = server.hub
    repo = hub.create_repo(repo_id, repo_type, **kw)
    hub.commit(repo, "main", files, [], title="seed", author=repo.owner)
    return repo


@pytest.fixture
def backend(hf_env):
    from mcpfs.backends.huggingface import HfBackend, HfConfig
    b = HfBackend(HfConfig(endpoint=hf_env["endpoint"], retry_base=0.01,
                           cache_dir=str(hf_env["cache"])), token=ALICE)
    return b


@pytest.fixture
def anon_backend(hf_env):
    from mcpfs.backends.huggingface import HfBackend, HfConfig
    return HfBackend(HfConfig(endpoint=hf_env["endpoint"], retry_base=0.01,
                              cache_dir=str(hf_env["cache"])), token=False)
