"""Where MFS records its root: a synced root file plus an append-only log of commits.

- ``root_file`` (e.g. ``<repo>/mfs-root``) holds the last *synced* root as text: written by
  temp file + fsync + rename + fsync of the folder, and only after every block written so
  far was fsynced. It survives a power loss and never names a block that was not synced.
- ``<root_file>.log`` holds the roots *committed* since, one record per commit appended
  with one ``write(2)`` (no fsync): ``<cid> <boot_id> <crc32>``. A killed process leaves
  every record it appended complete (a write to the page cache finishes before SIGKILL is
  delivered); a torn or foreign last line fails its CRC and is skipped. When the log grows
  past ``LOG_MAX`` bytes it is replaced (temp + rename) by one record.

Loading takes the last valid log record when it was written in the current boot (same
``/proc/sys/kernel/random/boot_id``: the page cache holding its unsynced blocks survived)
and its root block is present; otherwise (a reboot since, perhaps a power cut) the synced
root of ``root_file``. An append-only log instead of a rename per commit: on ext4 a rename
over an existing file starts write-back of the new file's data (``auto_da_alloc``) and costs
about 0.5 ms, more than the rest of a small commit.

Concurrency: :meth:`RootFiles.append` and :meth:`drop_log` are called with MFS's mutation
lock held (one writer of the log); :meth:`write_synced` under MFS's sync mutex. Blocking:
worker threads only.
"""

from __future__ import annotations

import errno
import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ...errors import InvalidInput, McpfsError
from .blockstore import write_file
from .cid import CID
from .pins import atomic_write

log = logging.getLogger("mcpfs.mfs")

LOG_SUFFIX: Final = ".log"
LOG_MAX: Final = 1 << 20  # bytes of log before it is replaced by its last record
BOOT_ID_FILE: Final = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """The kernel's boot id, or "" when unknown (then no unsynced root is ever trusted)."""
    try:
        with open(BOOT_ID_FILE) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _record(root: CID, boot: str) -> bytes:
    body = f"{root} {boot}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def _parse(line: str) -> tuple[CID, str] | None:
    parts = line.split(" ")
    if len(parts) != 3:
        return None
    body = f"{parts[0]} {parts[1]}"
    try:
        if int(parts[2], 16) != zlib.crc32(body.encode()):
            return None
        return CID.decode(parts[0]), parts[1]
    except (ValueError, InvalidInput):
        return None


class AppendLog:
    """One append-only file: each record one ``write(2)`` (no fsync: a killed process
    leaves every record it wrote), the whole file replaced by temp file + rename (a crash
    leaves the old file or the new one). OSError as the system raised it (a short write
    as ENOSPC). Not thread-safe: its owner serializes the calls."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0  # bytes in the file, once open

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> int:
        """Open (created if missing) for appending; the current size."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                               | os.O_CLOEXEC, 0o600)
            self.size = os.fstat(self._fd).st_size
        return self.size

    def append(self, data: bytes) -> None:
        self.open()
        if os.write(self._fd, data) != len(data):  # type: ignore[arg-type]
            raise OSError(errno.ENOSPC, "short write")  # treated like a full disk
        self.size += len(data)

    def replace(self, data: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        write_file(tmp, data, 0o600)
        os.replace(tmp, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.size = len(data)

    def drop(self) -> None:
        """Close and remove the file."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RootFiles:
    def __init__(self, root_file: str | os.PathLike[str]) -> None:
        self.path = Path(root_file)
        self.log_path = self.path.with_name(self.path.name + LOG_SUFFIX)
        self.boot = boot_id()
        self._log = AppendLog(self.log_path)

    def read_synced(self) -> CID | None:
        """The root in ``root_file`` (None when missing); McpfsError when unparsable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return CID.decode(text.split("\n")[0].strip())
        except InvalidInput as exc:
            raise McpfsError(f"{self.path}: invalid MFS root: {exc}") from None

    def read_committed(self) -> tuple[CID, str] | None:
        """(root, boot id) of the last valid log record, or None."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        for line in reversed(text.split("\n")):
            rec = _parse(line) if line else None
            if rec is not None:
                return rec
        return None

    def load(self, has: Callable[[CID], bool]) -> tuple[CID | None, CID | None]:
        """(root to use, synced root): see the module docstring. None: nothing recorded."""
        synced = self.read_synced()
        rec = self.read_committed()
        if rec is not None:
            root, boot = rec
            if boot == self.boot and self.boot and has(root):
                return root, synced
            if root != synced:
                log.warning("MFS root %s was committed but not synced before a reboot: "
                            "using the last synced root %s", root, synced)
        return synced, synced

    # ---------------------------------------------------------------- writing
    def append(self, root: CID) -> None:
        """Record a committed root (no fsync); see the module docstring."""
        line = _record(root, self.boot)
        try:
            if self._log.open() + len(line) > LOG_MAX:
                self._log.replace(line)
            else:
                self._log.append(line)
        except OSError as exc:
            raise McpfsError(f"cannot record the MFS root in {self.log_path}: "
                             f"{exc.strerror}") from None

    def write_synced(self, root: CID) -> None:
        """Record ``root`` as synced (its blocks must have been fsynced first)."""
        atomic_write(self.path, f"{root}\n".encode())

    def drop_log(self) -> None:
        """Remove the log (its last root is now in ``root_file``, synced)."""
        self._log.drop()


__all__ = ["RootFiles", "AppendLog", "boot_id", "LOG_MAX"]
