"""The mount's top directory: one read-only directory entry per configured subtree.

Subtrees that are not configured are absent, not broken. The root itself stores nothing;
vfs/ routes ``<name>/...`` to the Mount registered under ``name`` and only the empty path
to this one.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

from ..errors import McpfsError

from .base import DIR, Attr, Capabilities, Mount

ROOT_TIMEOUT = 60.0  # the set of subtrees only changes with a restart


class RootMount(Mount):
    name = ""
    capabilities = Capabilities(attr_timeout=ROOT_TIMEOUT, entry_timeout=ROOT_TIMEOUT)

    def __init__(self, mounts: dict[str, Mount]) -> None:
        self.mounts = mounts

    async def lookup(self, path: str) -> Attr:
        return Attr(DIR, perm=0o755)

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        for name in sorted(self.mounts):
            yield name, await self.mounts[name].lookup("")

    async def getxattr(self, path: str, name: str) -> bytes:
        raise McpfsError("no attributes on the mount root", errno=errno.ENODATA)

    async def listxattr(self, path: str) -> list[str]:
        return []
