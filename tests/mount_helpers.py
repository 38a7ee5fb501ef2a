"""Helpers for driving a Mount (mounts/base.py) directly in tests, without a kernel."""

from __future__ import annotations

import pytest

from mcpfs.errors import McpfsError


async def names(mount, path: str) -> list[str]:
    """The names ``listdir(path)`` yields, in its order."""
    return [n async for n, _ in mount.listdir(path)]


async def errno_of(coro) -> int:
    """The errno of the McpfsError ``coro`` raises (fails the test when it raises none)."""
    with pytest.raises(McpfsError) as exc:
        await coro
    return exc.value.errno


async def read_all(mount, path: str, piece: int = 128 * 1024) -> bytes:
    """The whole file through ``open_read``, in reads of ``piece`` bytes (as the kernel)."""
    reader = await mount.open_read(path)
    out, off = [], 0
    try:
        while data := await reader.read(off, piece):
            out.append(data)
            off += len(data)
    finally:
        await reader.close()
    return b"".join(out)
