"""Shared fixtures: an isolated MCPFS_HOME per test, deterministic file contents."""

from __future__ import annotations

import pytest

# One SeaweedFS per session for tests/s3/ and tests/fuse/ (fixtures registered here so both
# directories share the session-scoped server and its 20,000-key bucket).
from tests.s3_server import (  # noqa: F401,E402
    bucket, many_keys, public_bucket, raw, s3_server)


def pattern_bytes(size: int, seed: int = 0) -> bytes:
    """bytes((i + seed) % 251 for i in range(size)), fast (the vectors' input generator)."""
    period = bytes(range(251))
    reps = (size + seed) // 251 + 2
    return (period * reps)[seed % 251: seed % 251 + size]


@pytest.fixture
def mcpfs_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MCPFS_HOME", str(home))
    return home
