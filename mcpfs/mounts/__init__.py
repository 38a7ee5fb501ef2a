"""One module per subtree of the mount; see base.py for the Mount protocol.

:func:`build_mounts` turns an open repo (and the config) into the subtrees the daemon serves:
``ipfs`` and ``mfs`` always; other backends join here once configured.
"""

from __future__ import annotations

from typing import Any

from .base import Attr, Capabilities, Mount


def build_mounts(repo: Any, config: Any = None) -> dict[str, Mount]:
    """The subtrees for ``repo`` (a backends.ipfs.node.Repo); ``config`` is reserved for
    backend sections ([s3], [hf]...) that add subtrees when present."""
    from .ipfs import IpfsMount
    from .mfs import MfsMount
    return {"ipfs": IpfsMount(repo), "mfs": MfsMount(repo)}


__all__ = ["Attr", "Capabilities", "Mount", "build_mounts"]
