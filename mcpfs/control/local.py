"""The CLI's node when no daemon runs: :class:`RepoOps` on the local repo, plus MFS.

Same methods, arguments and results as :class:`mcpfs.control.client.RemoteNode`, so a CLI
command is written once against either (``cli.common.node()`` picks). MFS calls each run
on a fresh trio loop (``trio.run``), as the CLI did before; everything else blocks in the
calling thread. Errors are the repo's :class:`McpfsError`s, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import trio

from ..backends.ipfs.node import Repo
from .ops import AddOptions, RepoOps


class LocalNode(RepoOps):
    remote = False

    def __init__(self, repo: Repo) -> None:
        super().__init__(repo)

    def add_files(self, paths: list[str], opts: AddOptions, *, recursive: bool, wrap: bool,
                  hidden: bool, pin: bool, on_bytes: Callable[[int], None] | None = None
                  ) -> Iterator[dict[str, str]]:
        return self.add_paths(paths, opts.params(), recursive=recursive, wrap=wrap,
                              hidden=hidden, pin=pin, on_bytes=on_bytes)

    def add_stdin(self, fh: BinaryIO, opts: AddOptions, *, pin: bool,
                  on_bytes: Callable[[int], None] | None = None) -> dict[str, str]:
        return self.add_stream(fh, opts.params(), pin=pin, on_bytes=on_bytes)

    # ---------------------------------------------------------------- files (MFS)
    def _mfs(self, fn: Callable[[Any], Any]) -> Any:
        return trio.run(fn, self.repo.mfs)

    def files_ls(self, path: str, long: bool = False) -> list[dict]:
        return self._mfs(lambda mfs: mfs.ls(path, long=long))

    def files_mkdir(self, path: str, parents: bool = False) -> None:
        self._mfs(lambda mfs: mfs.mkdir(path, parents=parents))

    def files_write(self, path: str, fh: BinaryIO, *, offset: int = 0, create: bool = False,
                    parents: bool = False, truncate: bool = False,
                    count: int | None = None) -> None:
        self._mfs(lambda mfs: mfs.write(path, fh, offset=offset, create=create,
                                        truncate=truncate, parents=parents, count=count))

    def files_read(self, path: str, out: BinaryIO, offset: int = 0,
                   count: int | None = None) -> None:
        """Write the range to ``out`` piece by piece (flat memory)."""
        async def run(mfs):
            async for chunk in mfs.iter_read(path, offset, count):
                out.write(chunk)
        self._mfs(run)

    def files_rm(self, paths: list[str], recursive: bool = False, force: bool = False) -> None:
        async def run(mfs):
            for path in paths:
                await mfs.rm(path, recursive=recursive, force=force)
        self._mfs(run)

    def files_mv(self, src: str, dst: str) -> None:
        self._mfs(lambda mfs: mfs.mv(src, dst))

    def files_cp(self, src: str, dst: str, parents: bool = False) -> None:
        self._mfs(lambda mfs: mfs.cp(src, dst, parents=parents))

    def files_stat(self, path: str) -> dict:
        return self._mfs(lambda mfs: mfs.stat(path))

    def files_flush(self, path: str = "/") -> str:
        return str(self._mfs(lambda mfs: mfs.flush(path)))


__all__ = ["LocalNode"]
