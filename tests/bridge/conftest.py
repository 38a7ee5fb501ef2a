"""The repo and journal fixtures of tests/vfs (a real repo in a temporary MCPFS_HOME)."""

from tests.vfs.conftest import journal, repo  # noqa: F401
