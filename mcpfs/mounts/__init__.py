"""One module per subtree of the mount; see base.py for the Mount protocol.

:func:`build_mounts` turns an open repo (and the config) into the subtrees the daemon serves:
``ipfs`` and ``mfs`` always; ``s3`` when the config has an ``[s3]`` section or boto3's
chain finds credentials (env, ``~/.aws``, a profile, an instance role); ``hf`` when there
is an ``[hf]`` section, ``HF_ENDPOINT`` or a Hugging Face token. A subtree that is not
configured is absent, not broken; one whose credentials are wrong is present and answers
EACCES (see backends/s3.py).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from ..errors import McpfsError
from .base import Attr, Capabilities, Mount

log = logging.getLogger("mcpfs.mounts")


def build_mounts(repo: Any, config: Any = None) -> dict[str, Mount]:
    """The subtrees for ``repo`` (a backends.ipfs.node.Repo) and ``config`` (a
    config.Config, or None). Blocking (boto3 reads its config files and looks for
    credentials): the daemon calls it in a worker thread at startup. A backend section that
    cannot be used raises McpfsError naming the section."""
    from .ipfs import IpfsMount
    from .mfs import MfsMount
    mounts: dict[str, Mount] = {"ipfs": IpfsMount(repo), "mfs": MfsMount(repo)}
    s3 = _s3(config.section("s3") if config is not None else None)
    if s3 is not None:
        mounts["s3"] = s3
    hf = _hf(config.section("hf") if config is not None and "hf" in config.sections else None)
    if hf is not None:
        mounts["hf"] = hf
    return mounts


def _hf(section: dict[str, Any] | None) -> Mount | None:
    """/hf when configured (see backends.huggingface.enabled)."""
    try:
        from ..backends.huggingface import enabled
    except ImportError:  # huggingface_hub not installed: /hf is absent
        if section:
            raise McpfsError("[hf] is configured but huggingface_hub is not installed") from None
        return None
    if not enabled(section):
        log.debug("/hf: no [hf] section, HF_ENDPOINT or token; not mounted")
        return None
    from .hf import build_hf_mount
    mount = build_hf_mount(section)
    log.info("/hf: endpoint %s, %s", mount.backend.endpoint,
             "token found" if mount.backend.token else "no token (public repos only)")
    return mount


def _s3(section: dict[str, Any] | None) -> Mount | None:
    try:
        from ..backends.s3 import enabled
    except ImportError:  # boto3 not installed: /s3 is absent
        if section:
            raise McpfsError("[s3] is configured but boto3 is not installed") from None
        return None
    if not enabled(section):
        log.debug("/s3: no [s3] section and no credentials found by boto3; not mounted")
        return None
    import botocore.exceptions

    from .s3 import build_s3_mount
    try:
        mount = build_s3_mount(section)
    except botocore.exceptions.BotoCoreError as exc:  # e.g. a profile ~/.aws does not have
        log.error("/s3 not mounted: %s", type(exc).__name__)
        return None
    meta = mount.backend.client.meta
    url = urllib.parse.urlsplit(meta.endpoint_url or "")
    log.info("/s3: endpoint %s://%s, region %s", url.scheme, url.hostname +
             (f":{url.port}" if url.port else "") if url.hostname else "?", meta.region_name)
    return mount


__all__ = ["Attr", "Capabilities", "Mount", "build_mounts"]
