"""The kernel-free file system: inodes, handles, spool and journal over mounts/."""

from .vfs import VFS, Entry

__all__ = ["VFS", "Entry"]
