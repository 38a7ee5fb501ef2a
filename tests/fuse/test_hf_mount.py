"""/hf through a real mount (daemon subprocess) on the local hub. Skipped until build_mounts
registers /hf (see the /hf report); fixtures in tests/fuse/hf_fixtures.py."""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import subprocess
import sys

import pytest

from mcpfs.mounts import build_mounts
from tests.fuse.hf_fixtures import hf_env_vars, hf_hub, hf_mnt  # noqa: F401

from ..conftest import pattern_bytes

if '"hf"' not in inspect.getsource(build_mounts) and "'hf'" not in inspect.getsource(
        build_mounts):
    pytest.skip("/hf is not registered in build_mounts yet", allow_module_level=True)

BIG = pattern_bytes(64 * 1024 * 1024 + 5, seed=3)
MMAP_READ = """if True:
    import hashlib, mmap, sys
    with open(sys.argv[1], "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as m:
        print(hashlib.sha256(m[50 << 20:(50 << 20) + 4096]).hexdigest(),
              hashlib.sha256(m[:]).hexdigest())
"""


@pytest.fixture
def demo(hf_hub):
    repo = hf_hub.hub.create_repo("alice/demo")
    hf_hub.hub.commit(repo, "main", {"config.json": b'{"a": 1}', "w.safetensors": BIG,
                                     "sub/n.txt": b"n"}, [], title="seed", author="alice")
    return repo


def test_ls_cat_mmap_xattr(hf_mnt, demo, hf_hub):
    root = hf_mnt / "hf/alice/demo"
    assert sorted(os.listdir(root)) == [".gitattributes", "config.json", "sub",
                                        "w.safetensors"]
    assert (root / "config.json").read_bytes() == b'{"a": 1}'
    # mmap in a child process: a page fault on the mount holds this process's GIL, and
    # the hub serving the fault runs in a thread of this process
    out = subprocess.run([sys.executable, "-c", MMAP_READ, str(root / "w.safetensors")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    page, digest = out.split()
    assert page == hashlib.sha256(BIG[50 * 1024 * 1024:50 * 1024 * 1024 + 4096]).hexdigest()
    assert digest == hashlib.sha256(BIG).hexdigest()
    assert os.getxattr(root / "w.safetensors", "user.mcpfs.sha256").decode() == \
        hashlib.sha256(BIG).hexdigest()


def test_write_rm_rename_and_pinned_erofs(hf_mnt, demo, hf_hub):
    root = hf_mnt / "hf/alice/demo"
    sha = hf_hub.hub.resolve(demo, "main").id
    (root / "new.txt").write_bytes(b"hello")
    assert hf_hub.hub.resolve(demo, "main").files["new.txt"].size == 5
    os.rename(root / "new.txt", root / "sub/moved.txt")
    assert sorted(os.listdir(root / "sub")) == ["moved.txt", "n.txt"]
    os.unlink(root / "sub/moved.txt")
    assert "sub/moved.txt" not in hf_hub.hub.resolve(demo, "main").files
    with pytest.raises(OSError) as exc:
        (hf_mnt / f"hf/alice/demo@{sha}/x.txt").write_bytes(b"x")
    assert exc.value.errno == errno.EROFS
    assert (hf_mnt / f"hf/alice/demo@{sha}/config.json").read_bytes() == b'{"a": 1}'
