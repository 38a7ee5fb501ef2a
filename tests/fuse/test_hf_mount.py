"""/hf through a real mount: the daemon in a subprocess, the local hub (tests/hub_server.py)
in threads of this process; every behaviour of issue 5. Fixtures: tests/fuse/hf_fixtures.py.

Anything that page-faults on the mount (mmap, numpy.memmap, safetensors) runs in a child
process (``child``): see hf_fixtures' docstring. Plain read()/pread() release the GIL and run
here.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import shutil

import numpy as np
import pytest
import safetensors.numpy

from tests.fuse.hf_fixtures import (HF_ALICE, child, hf_anon_mnt, hf_env_vars,  # noqa: F401
                                    hf_hub, hf_mnt)

from ..conftest import pattern_bytes
from .conftest import run

MiB = 1 << 20
GiB = 1 << 30
BIG = pattern_bytes(20 * MiB + 3, seed=5)  # LFS on the hub (size and suffix)
README = b"# demo\n"
CONFIG = b'{"hidden_size": 8}'


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"embed": rng.standard_normal((512, 256)).astype(np.float32),
            "head.bias": np.arange(1000, dtype=np.int64),
            "tiny": np.ones((3,), dtype=np.float16)}


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


MATRIX = np.arange(300 * 200, dtype=np.float64).reshape(300, 200)


@pytest.fixture
def demo(hf_hub):
    """alice/demo: main (2 commits), tag v1 at the first, branch dev one commit ahead."""
    hub = hf_hub.hub
    repo = hub.create_repo("alice/demo")
    hub.commit(repo, "main", {"README.md": b"# v1\n", "config.json": CONFIG}, [],
               title="first", author="alice")
    hub.tag(repo, "v1")
    hub.commit(repo, "main", {"README.md": README, "sub/deep/n.txt": b"notes",
                              "model.safetensors": safetensors.numpy.save(tensors()),
                              "matrix.npy": npy(MATRIX), "big.bin": BIG}, [],
               title="second", author="alice")
    hub.branch(repo, "dev")
    hub.commit(repo, "dev", {"dev.txt": b"on dev"}, [], title="dev work", author="alice")
    for rid, kind, files in (("carol/listed", "model", {"c.txt": b"carol"}),
                             ("carol/table", "dataset", {"train.csv": b"a,b\n1,2\n"}),
                             ("alice/app", "space", {"app.py": b"print('hi')\n"}),
                             ("bob/public", "model", {"p.txt": b"public"})):
        r = hub.create_repo(rid, kind)
        hub.commit(r, "main", files, [], title="seed", author=r.owner)
    return repo


def head(hf_hub, repo, rev="main"):
    return hf_hub.hub.resolve(repo, rev)


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as exc:
        fn(*args)
    return exc.value.errno


# ---------------------------------------------------------------- names
def test_listings_owners_types_and_any_repo_by_path(hf_mnt, demo, hf_hub):
    hf = hf_mnt / "hf"
    # configured owners (carol, from [hf] repos), the token's user, the type folders
    assert sorted(os.listdir(hf)) == ["alice", "carol", "datasets", "spaces"]
    assert sorted(os.listdir(hf / "alice")) == ["demo"]  # the user's own repos (list API)
    assert sorted(os.listdir(hf / "carol")) == ["listed"]
    assert sorted(os.listdir(hf / "datasets")) == ["alice", "carol"]
    assert os.listdir(hf / "datasets/carol") == ["table"]
    assert (hf / "datasets/carol/table/train.csv").read_bytes() == b"a,b\n1,2\n"
    assert sorted(os.listdir(hf / "spaces/alice")) == ["app"]
    assert (hf / "spaces/alice/app/app.py").read_bytes() == b"print('hi')\n"
    assert "bob" not in os.listdir(hf)  # not listed, but any owner/repo works by path
    assert (hf / "bob/public/p.txt").read_bytes() == b"public"
    # ls -R equals the hub's tree at main
    walked = {os.path.relpath(os.path.join(d, f), hf / "alice/demo")
              for d, _, files in os.walk(hf / "alice/demo") for f in files}
    assert walked == set(head(hf_hub, demo).files)
    st = os.stat(hf / "alice/demo/big.bin")
    assert st.st_size == len(BIG) and st.st_mode & 0o200  # a branch is writable


def test_branch_tag_and_commit_paths(hf_mnt, demo, hf_hub):
    hf = hf_mnt / "hf/alice"
    main_sha = head(hf_hub, demo).id
    assert (hf / "demo@dev/dev.txt").read_bytes() == b"on dev"
    assert not (hf / "demo/dev.txt").exists()
    assert (hf / "demo@v1/README.md").read_bytes() == b"# v1\n"
    assert sorted(os.listdir(hf / "demo@v1")) == [".gitattributes", "README.md", "config.json"]
    assert (hf / f"demo@{main_sha}/README.md").read_bytes() == README
    # main moves on; the commit path does not
    hf_hub.hub.commit(demo, "main", {"README.md": b"# v3\n"}, [], title="third",
                      author="alice")
    assert (hf / f"demo@{main_sha}/README.md").read_bytes() == README
    assert not os.stat(hf / f"demo@{main_sha}/README.md").st_mode & 0o222  # read-only
    assert os.getxattr(hf / f"demo@{main_sha}/README.md", "user.mcpfs.commit").decode() == \
        main_sha
    assert errno_of(os.listdir, hf / "demo@nobranch") == errno.ENOENT
    assert errno_of(os.stat, hf / f"demo@{'0' * 40}") == errno.ENOENT


def test_writes_under_a_commit_or_tag_are_erofs(hf_mnt, demo, hf_hub):
    sha = head(hf_hub, demo).id
    for rev in (sha, "v1"):
        root = hf_mnt / f"hf/alice/demo@{rev}"
        assert errno_of((root / "x.txt").write_bytes, b"x") == errno.EROFS
        assert errno_of(os.unlink, root / "README.md") == errno.EROFS
        assert errno_of(os.mkdir, root / "d") == errno.EROFS
        assert errno_of(os.rename, root / "README.md", root / "R.md") == errno.EROFS
    assert head(hf_hub, demo).id == sha  # no commit was made


# ---------------------------------------------------------------- reads
def test_cat_cmp_and_random_reads(hf_mnt, demo, hf_hub, tmp_path):
    root = hf_mnt / "hf/alice/demo"
    assert run("cat", str(root / "README.md")).stdout == README.decode()
    local = tmp_path / "big.bin"
    local.write_bytes(BIG)
    assert run("cmp", str(local), str(root / "big.bin")).returncode == 0
    rng = random.Random(7)
    fd = os.open(root / "big.bin", os.O_RDONLY)
    try:
        for _ in range(50):
            off, size = rng.randrange(len(BIG) + 100), rng.choice((1, 4096, 100_000, MiB))
            assert os.pread(fd, size, off) == BIG[off:off + size]
    finally:
        os.close(fd)
    # no whole-file download before the first byte: ranges only
    ranges = [r[3] for r in hf_hub.requests if r[0] == "cdn" and r[1] == "GET"]
    assert ranges and all(r and r.startswith("bytes=") for r in ranges)


ONE_GIB_PIECE = 32 * MiB


def u64_pieces(size: int):
    """The 1 GiB file: little-endian uint64 words, each its own index (offset // 8)."""
    for off in range(0, size, ONE_GIB_PIECE):
        yield np.arange(off // 8, (off + ONE_GIB_PIECE) // 8, dtype="<u8").tobytes()


MMAP_CHILD = """if True:
    import hashlib, mmap, random, sys
    import numpy as np
    with open(sys.argv[1], "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as m:
        words = np.frombuffer(m, dtype="<u8")
        rng = random.Random(3)
        for _ in range(200):  # page faults anywhere first (random reads)
            i = rng.randrange(len(words))
            assert words[i] == i, (i, int(words[i]))
        assert words[-1] == len(words) - 1
        del words
        print(len(m), hashlib.sha256(m).hexdigest())  # then every page, in order
"""


def test_one_gib_lfs_file_with_mmap(hf_mnt, hf_hub):
    oid, size = hf_hub.hub.add_lfs_object(u64_pieces(GiB))
    repo = hf_hub.hub.create_repo("alice/huge")
    hf_hub.hub.commit(repo, "main", {"model.bin": hf_hub.hub.entry_for(
        "model.bin", lfs_oid=oid, size=size)}, [], title="1 GiB", author="alice")
    path = hf_mnt / "hf/alice/huge/model.bin"
    assert os.stat(path).st_size == GiB
    assert os.getxattr(path, "user.mcpfs.sha256").decode() == oid
    n, digest = child(MMAP_CHILD, str(path), timeout=240).split()
    assert (int(n), digest) == (GiB, oid)
    cdn = [r for r in hf_hub.requests if r[0] == "cdn" and r[1] == "GET"]
    assert all(r[3] for r in cdn)  # ranges, never the whole object at once
    assert len(cdn) < 2000  # sequential faults streamed with read-ahead, not page by page


ARRAYS_CHILD = """if True:
    import hashlib, json, sys
    import numpy as np
    from safetensors import safe_open
    out = {}
    with safe_open(sys.argv[1], framework="numpy") as f:
        for k in f.keys():
            out[k] = hashlib.sha256(np.ascontiguousarray(f.get_tensor(k)).tobytes()).hexdigest()
        out["tiny.slice"] = f.get_slice("embed")[3:5, 10:12].tolist()
    a = np.load(sys.argv[2], mmap_mode="r")
    out["npy.memmap"] = [type(a).__name__, list(a.shape), float(a[299, 199]), float(a[7].sum())]
    off = int(sys.argv[3])
    m = np.memmap(sys.argv[2], dtype="<f8", mode="r", offset=off, shape=(300, 200))
    out["memmap"] = float(m[123, 45])
    print(json.dumps(out))
"""


def test_safetensors_and_numpy_memmap(hf_mnt, demo):
    root = hf_mnt / "hf/alice/demo"
    header = len(npy(MATRIX)) - MATRIX.nbytes
    out = json.loads(child(ARRAYS_CHILD, str(root / "model.safetensors"),
                           str(root / "matrix.npy"), str(header)))
    want = tensors()
    for k, arr in want.items():
        assert out[k] == hashlib.sha256(arr.tobytes()).hexdigest(), k
    assert out["tiny.slice"] == want["embed"][3:5, 10:12].tolist()
    assert out["npy.memmap"] == ["memmap", [300, 200], MATRIX[299, 199], MATRIX[7].sum()]
    assert out["memmap"] == MATRIX[123, 45]


DOWNLOAD_CHILD = """if True:
    import sys
    from huggingface_hub import hf_hub_download
    print(hf_hub_download(sys.argv[1], sys.argv[2]))
"""


def test_file_in_the_local_hf_cache_is_served_from_there(hf_mnt, demo, hf_hub,
                                                         hf_env_vars):
    cached = child(DOWNLOAD_CHILD, "alice/demo", "big.bin", env=hf_env_vars).strip()
    assert cached.startswith(hf_env_vars["HF_HUB_CACHE"])
    path = hf_mnt / "hf/alice/demo/big.bin"
    os.stat(path)  # lookups may ask the hub's API; reads must not
    resolves, cdn = hf_hub.count(contains="/resolve/"), hf_hub.count(origin="cdn")
    assert path.read_bytes() == BIG
    assert (hf_hub.count(contains="/resolve/"), hf_hub.count(origin="cdn")) == (resolves, cdn)


# ---------------------------------------------------------------- writes
def test_cp_in_is_one_commit_lfs_when_large(hf_mnt, demo, hf_hub, tmp_path):
    root = hf_mnt / "hf/alice/demo"
    before = len(hf_hub.hub.history(demo, "main"))
    src = tmp_path / "notes.txt"
    src.write_bytes(b"hello from mcpfs\n")
    run("cp", str(src), str(root / "notes.txt"))
    c = head(hf_hub, demo)
    assert len(hf_hub.hub.history(demo, "main")) == before + 1
    assert "mcpfs" in c.title and "notes.txt" in c.title
    assert c.files["notes.txt"].lfs_oid is None
    assert hf_hub.hub.read_regular(c.files["notes.txt"]) == b"hello from mcpfs\n"
    large = pattern_bytes(12 * MiB, seed=9)
    (tmp_path / "w.bin").write_bytes(large)
    run("cp", str(tmp_path / "w.bin"), str(root / "sub/w.bin"))
    e = head(hf_hub, demo).files["sub/w.bin"]
    assert e.lfs_oid == hashlib.sha256(large).hexdigest() and e.size == len(large)
    assert len(hf_hub.hub.history(demo, "main")) == before + 2
    assert (root / "sub/w.bin").read_bytes() == large  # read back through the hub
    # on a branch path: the commit goes to that branch
    (hf_mnt / "hf/alice/demo@dev/more.txt").write_bytes(b"more")
    assert "more.txt" in head(hf_hub, demo, "dev").files
    assert "more.txt" not in head(hf_hub, demo).files


def test_rm_mkdir_rename(hf_mnt, demo, hf_hub):
    root = hf_mnt / "hf/alice/demo"
    n = len(hf_hub.hub.history(demo, "main"))
    os.unlink(root / "README.md")  # rm: a delete commit
    c = head(hf_hub, demo)
    assert "README.md" not in c.files and "mcpfs" in c.title
    assert len(hf_hub.hub.history(demo, "main")) == n + 1
    assert not (root / "README.md").exists()
    # mkdir: virtual until a file lands in it
    os.mkdir(root / "new")
    os.mkdir(root / "new/deeper")
    assert "new" in os.listdir(root) and os.listdir(root / "new") == ["deeper"]
    assert head(hf_hub, demo).id == c.id  # no commit for a folder
    (root / "new/deeper/f.txt").write_bytes(b"f")
    assert "new/deeper/f.txt" in head(hf_hub, demo).files
    os.mkdir(root / "empty")
    os.rmdir(root / "empty")
    assert "empty" not in os.listdir(root)
    # rename: one commit (copy + delete), a file and a folder
    n = len(hf_hub.hub.history(demo, "main"))
    os.rename(root / "config.json", root / "sub/config.json")
    files = head(hf_hub, demo).files
    assert "sub/config.json" in files and "config.json" not in files
    assert len(hf_hub.hub.history(demo, "main")) == n + 1
    os.rename(root / "sub", root / "moved")
    files = head(hf_hub, demo).files
    assert {"moved/config.json", "moved/deep/n.txt"} <= set(files)
    assert not any(p.startswith("sub/") for p in files)
    assert len(hf_hub.hub.history(demo, "main")) == n + 2
    assert (root / "moved/deep/n.txt").read_bytes() == b"notes"
    # across repos rename(2) is EXDEV; mv then copies and unlinks (two commits)
    other = hf_mnt / "hf/alice/demo@dev"
    assert errno_of(os.rename, root / "moved/config.json", other / "config.json") == \
        errno.EXDEV
    shutil.move(str(root / "moved/config.json"), str(other / "config.json"))
    assert "config.json" in head(hf_hub, demo, "dev").files
    assert "moved/config.json" not in head(hf_hub, demo).files


# ---------------------------------------------------------------- xattrs
def test_xattrs_with_getfattr(hf_mnt, demo, hf_hub):
    root = hf_mnt / "hf/alice/demo"
    c = head(hf_hub, demo)

    def value(name: str, path) -> str:
        return run("getfattr", "--only-values", "-n", name, str(path)).stdout

    assert value("user.mcpfs.sha256", root / "big.bin") == hashlib.sha256(BIG).hexdigest()
    assert value("user.mcpfs.blob_id", root / "big.bin") == c.files["big.bin"].blob_id
    assert value("user.mcpfs.blob_id", root / "README.md") == c.files["README.md"].blob_id
    assert value("user.mcpfs.commit", root / "README.md") == c.id
    assert value("user.mcpfs.backend", root / "README.md") == "hf"
    dump = run("getfattr", "-d", "-m", "user.mcpfs.", str(root / "big.bin")).stdout
    for name in ("sha256", "blob_id", "commit", "backend"):
        assert f"user.mcpfs.{name}=" in dump
    # a regular (non-LFS) file has no LFS oid
    done = run("getfattr", "-n", "user.mcpfs.sha256", str(root / "README.md"), check=False)
    assert done.returncode and "No such attribute" in done.stderr


# ---------------------------------------------------------------- errors
def test_errors_enoent_eacces_and_rate_limits(hf_mnt, demo, hf_hub, daemon):
    hf = hf_mnt / "hf"
    assert errno_of(os.stat, hf / "alice/nothere") == errno.ENOENT  # RepoNotFound
    assert errno_of(os.stat, hf / "alice/demo/nothere.txt") == errno.ENOENT  # EntryNotFound
    assert errno_of(os.listdir, hf / "datasets/alice/demo") == errno.ENOENT  # other type
    # rate limits: 429 with Retry-After, retried
    hf_hub.throttle(3)
    assert os.listdir(hf / "carol/listed") == [".gitattributes", "c.txt"]
    hf_hub.throttle(2)
    assert (hf / "carol/listed/c.txt").read_bytes() == b"carol"
    assert "rate limited, retrying" in daemon.log_text()
    # another user's private repo: the Hub answers 404 to alice, as for a missing one
    secret = hf_hub.hub.create_repo("bob/secret", private=True)
    hf_hub.hub.commit(secret, "main", {"s.txt": b"s"}, [], title="s", author="bob")
    assert errno_of(os.stat, hf / "bob/secret") == errno.ENOENT
    # gated: listed, but reading needs the conditions accepted: EACCES and a log line
    gated = hf_hub.hub.create_repo("bob/gated", gated=True)
    hf_hub.hub.commit(gated, "main", {"g.txt": b"g"}, [], title="g", author="bob")
    assert sorted(os.listdir(hf / "bob/gated")) == [".gitattributes", "g.txt"]
    assert errno_of((hf / "bob/gated/g.txt").read_bytes) == errno.EACCES
    assert "gated repo: accept its conditions" in daemon.log_text()
    gated.allowed.add("alice")
    assert (hf / "bob/gated/g.txt").read_bytes() == b"g"
    # no write rights on bob's repo: the commit is refused; close() fails, the log says why
    with pytest.raises(OSError) as exc:
        (hf / "bob/public/x.txt").write_bytes(b"x")
    assert exc.value.errno in (errno.EACCES, errno.EIO)
    assert "lacks the rights" in daemon.log_text()
    assert "x.txt" not in head(hf_hub, hf_hub.hub.repo("model", "bob/public")).files
    assert HF_ALICE not in daemon.log_text()


def test_without_a_token_private_is_eacces(hf_anon_mnt, demo, hf_hub, daemon):
    hf = hf_anon_mnt / "hf"
    assert sorted(os.listdir(hf)) == ["carol", "datasets", "spaces"]  # configured only
    assert (hf / "alice/demo/README.md").read_bytes() == README  # public: no token needed
    mine = hf_hub.hub.create_repo("alice/private", private=True)
    hf_hub.hub.commit(mine, "main", {"p.txt": b"p"}, [], title="p", author="alice")
    assert errno_of(os.stat, hf / "alice/private") == errno.EACCES
    assert "no token (set HF_TOKEN" in daemon.log_text()
    assert errno_of((hf / "alice/demo/x.txt").write_bytes, b"x") in (errno.EACCES, errno.EIO)


def test_copies_through_the_hub_keep_their_cid(hf_mnt, demo, hf_hub, tmp_path):
    """/ipfs -> /hf records the CID in the commit; /hf -> /mfs is then a link to it."""
    from .conftest import mcpfs
    data = pattern_bytes(9 * MiB + 3, seed=4)
    (tmp_path / "c.bin").write_bytes(data)
    cid = mcpfs("add", "-Q", "--profile", "unixfs-v1-2025", str(tmp_path / "c.bin")
                ).stdout.strip()
    root = hf_mnt / "hf/alice/demo"
    run("cp", str(hf_mnt / "ipfs" / cid), str(root / "c.bin"))
    assert f"(ipfs-cid {cid})" in head(hf_hub, demo).title
    assert os.getxattr(root / "c.bin", "user.mcpfs.source") == f"/ipfs/{cid}".encode()
    run("cp", str(root / "c.bin"), str(hf_mnt / "mfs/c.bin"))
    assert os.getxattr(hf_mnt / "mfs/c.bin", "user.mcpfs.cid") == cid.encode()
    assert os.getxattr(hf_mnt / "mfs/c.bin", "user.mcpfs.source") == b"/hf/alice/demo/c.bin"
    assert (hf_mnt / "mfs/c.bin").read_bytes() == data


def test_a_kept_write_of_a_previous_run_is_committed_behind_the_live_mount(
        hf_env_vars, daemon, mcpfs_home, demo, hf_hub):
    """A /hf write the journal kept (a daemon killed during its commit) is a pending file
    as soon as the next start's mount is live, and its commit follows in the background."""
    import time

    from mcpfs.cli.status import pending_writes
    from mcpfs.config import paths
    from mcpfs.vfs.journal import COMMITTING, Journal
    from tests.fuse.hf_fixtures import write_hf_config
    write_hf_config(mcpfs_home)
    spool = paths().cache_dir / "spool" / "kept.spool"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(b"written before the crash\n")
    journal = Journal(paths().state_dir)
    journal.set_sync(journal.add_sync("hf", "alice/demo/kept.txt", str(spool)), COMMITTING)
    journal.close()
    mnt = daemon.start(hf_env_vars)
    assert (mnt / "hf/alice/demo/kept.txt").read_bytes() == b"written before the crash\n"
    deadline = time.monotonic() + 60
    while pending_writes(paths().state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pending_writes(paths().state_dir) == []
    entry = head(hf_hub, demo).files["kept.txt"]
    assert hf_hub.hub.read_regular(entry) == b"written before the crash\n"
    assert "completed the interrupted write of /hf/alice/demo/kept.txt" in daemon.log_text()
