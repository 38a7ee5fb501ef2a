"""One process at a time changes a repo's MFS: a lock file beside its root file.

Why: a running daemon keeps MFS state that only it knows about: the directory nodes of
:mod:`mfs_pending` (in memory and in ``mfs-root.blocks``) and the root log it appends to.
A second process opening the same MFS would replay and remove that log under the daemon
and record roots of its own; a ``kill -9`` of the daemon afterwards could then leave a root
whose nodes are gone. The CLI normally goes through the daemon's control socket, but falls
back to the repo when the socket does not answer (another ``XDG_RUNTIME_DIR``, a daemon
too busy to answer in time): then it must get a clear error, not a second writer.

How: a :class:`~mcpfs.process_lock.ProcessLock` on ``<root_file>.lock``. The daemon's
flusher holds it for its whole run; a process without a flusher (the CLI) holds it while it
loads MFS and around each change and sync; MFS takes it around every commit and sync, also
on the trio thread (a hold within the flusher's only counts).

Errors: EBUSY naming the holder's pid when the lock stays taken for ``LOCK_WAIT`` seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ...process_lock import ProcessLock

LOCK_SUFFIX: Final = ".lock"
LOCK_WAIT = 5.0  # seconds to wait for another process's short hold (a CLI command)


class MfsLock(ProcessLock):
    def __init__(self, root_file: str | os.PathLike[str]) -> None:
        root = Path(root_file)
        super().__init__(root.with_name(root.name + LOCK_SUFFIX))

    @property
    def default_wait(self) -> float:  # type: ignore[override]  (read when used: tests)
        return LOCK_WAIT

    def busy(self, holder: str) -> str:
        return (f"the MFS of {self.path.parent} is in use by another mcpfs process "
                f"(pid {holder}), probably a daemon whose control socket did not answer "
                "here (check MCPFS_HOME / XDG_RUNTIME_DIR, or retry)")


__all__ = ["MfsLock", "LOCK_WAIT"]
