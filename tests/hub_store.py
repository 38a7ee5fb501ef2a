"""The storage model behind tests/hub_server.py: repos, commits, trees, blobs, LFS objects.

Git-like, but flat: a commit maps every file path to a :class:`FileEntry`; directories exist
because paths have them. Ids are computed the way the Hub shows them:

- ``blob_id``: the git blob sha1 of the content (for an LFS file: of its pointer file);
- LFS ``oid``: the sha256 of the content; ``pointerSize``: the pointer file's length;
- commit ids: a sha1 over parent, tree and message (40 hex digits like git's);
- tree ids: a sha1 over the sorted entries below a folder.

Resources: regular file contents live in memory (``blobs``); LFS objects live as files in
``lfs_dir`` (named by oid), so multi-GiB files cost disk, not memory. ``Hub.lock`` guards all
state; file contents on disk are immutable once renamed into place, so readers stream them
without the lock.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's rule: files above 10 MB go to LFS
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".onnx",
                ".msgpack", ".parquet", ".arrow", ".npy", ".npz", ".zip", ".tar", ".gz")
COPY_PIECE = 1 << 20


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n"
            f"size {size}\n").encode()


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000Z"


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    blob_id: str
    lfs_oid: str | None = None  # sha256 of the content, for LFS files
    pointer_size: int = 0

    def json(self) -> dict:
        out = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs_oid:
            out["lfs"] = {"oid": self.lfs_oid, "size": self.size,
                          "pointerSize": self.pointer_size}
        return out

    @property
    def etag(self) -> str:
        """What /resolve shows: the LFS oid for LFS files, the blob id otherwise."""
        return self.lfs_oid or self.blob_id


@dataclass
class Commit:
    id: str
    parent: str | None
    files: dict[str, FileEntry]
    title: str
    message: str
    author: str
    date: float

    def dirs(self) -> set[str]:
        out = {""}
        for path in self.files:
            parts = path.split("/")
            out.update("/".join(parts[:i]) for i in range(1, len(parts)))
        return out

    def tree_id(self, folder: str) -> str:
        prefix = folder + "/" if folder else ""
        h = hashlib.sha1(b"tree\0")
        for path in sorted(p for p in self.files if p.startswith(prefix)):
            h.update(f"{path}\0{self.files[path].blob_id}\n".encode())
        return h.hexdigest()

    def children(self, folder: str) -> tuple[list[str], list[FileEntry]]:
        """Sub-folder paths and files directly in ``folder`` ("" = root), sorted."""
        prefix = folder + "/" if folder else ""
        subdirs: set[str] = set()
        files: list[FileEntry] = []
        for path, entry in self.files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest:
                subdirs.add(prefix + rest.split("/", 1)[0])
            else:
                files.append(entry)
        return sorted(subdirs), sorted(files, key=lambda e: e.path)


@dataclass
class Repo:
    type: str  # "model", "dataset" or "space"
    id: str  # "owner/name"
    private: bool = False
    gated: bool = False
    allowed: set[str] = field(default_factory=set)  # users granted access to a gated repo
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    tags: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    @property
    def owner(self) -> str:
        return self.id.split("/", 1)[0]


class HubError(Exception):
    """An error response: HTTP status, X-Error-Code and X-Error-Message."""

    def __init__(self, status: int, code: str | None, message: str,
                 body: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.body = body or {}  # extra JSON fields of the error body


class Hub:
    """Repos, commits and blobs of the local hub; every method takes ``lock``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.lfs_dir = self.root / "lfs"
        self.lfs_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commits: dict[str, Commit] = {}
        self.blobs: dict[str, bytes] = {}  # blob id -> content (regular files)
        self.tokens: dict[str, str] = {}  # token -> user name
        self.lfs_threshold = LFS_THRESHOLD
        self._seq = 0

    # ---------------------------------------------------------------- users, repos
    def add_user(self, name: str, token: str) -> None:
        with self.lock:
            self.tokens[token] = name

    def create_repo(self, repo_id: str, repo_type: str = "model", *, private: bool = False,
                    gated: bool = False, author: str | None = None) -> Repo:
        """A repo with one initial commit (a .gitattributes, as the Hub makes)."""
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                raise HubError(409, None, "You already created this model repo")
            repo = Repo(repo_type, repo_id, private=private, gated=gated)
            self.repos[key] = repo
            attrs = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
            self.commit(repo, "main", {".gitattributes": attrs.encode()}, [],
                        title="initial commit", author=author or repo.owner)
            return repo

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, "RepoNotFound", "Repository not found")

    # ---------------------------------------------------------------- revisions
    def resolve(self, repo: Repo, rev: str) -> Commit:
        with self.lock:
            if rev.startswith("refs/heads/"):
                rev = rev[len("refs/heads/"):]
            elif rev.startswith("refs/tags/"):
                rev = rev[len("refs/tags/"):]
            cid = repo.branches.get(rev) or repo.tags.get(rev)
            if cid is None and len(rev) == 40 and rev in self.commits:
                if self._reachable(repo, rev):
                    cid = rev
            if cid is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return self.commits[cid]

    def _reachable(self, repo: Repo, cid: str) -> bool:
        for head in list(repo.branches.values()) + list(repo.tags.values()):
            c: str | None = head
            while c is not None:
                if c == cid:
                    return True
                c = self.commits[c].parent
        return False

    def history(self, repo: Repo, rev: str) -> list[Commit]:
        out, c = [], self.resolve(repo, rev)
        with self.lock:
            while True:
                out.append(c)
                if c.parent is None:
                    return out
                c = self.commits[c.parent]

    def tag(self, repo: Repo, tag: str, rev: str = "main") -> None:
        with self.lock:
            repo.tags[tag] = self.resolve(repo, rev).id

    def branch(self, repo: Repo, name: str, rev: str = "main") -> None:
        with self.lock:
            repo.branches[name] = self.resolve(repo, rev).id

    # ---------------------------------------------------------------- content
    def add_lfs_object(self, src: str | os.PathLike[str] | bytes
                       | Iterable[bytes]) -> tuple[str, int]:
        """Store content as an LFS object: (oid, size). ``src``: bytes, a file (copied in),
        or an iterable of pieces (streamed to disk once: how tests make GiB-sized files)."""
        tmp = self.lfs_dir / f".tmp-{threading.get_ident()}-{time.monotonic_ns()}"
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            if isinstance(src, bytes):
                h.update(src)
                out.write(src)
            elif isinstance(src, (str, os.PathLike)):
                with open(src, "rb") as fh:
                    while piece := fh.read(COPY_PIECE):
                        h.update(piece)
                        out.write(piece)
            else:
                for piece in src:
                    h.update(piece)
                    out.write(piece)
        oid = h.hexdigest()
        size = tmp.stat().st_size
        os.replace(tmp, self.lfs_dir / oid)
        return oid, size

    def lfs_path(self, oid: str) -> Path | None:
        path = self.lfs_dir / oid
        return path if len(oid) == 64 and path.exists() else None

    def is_lfs(self, path: str, size: int, sample: bytes = b"") -> bool:
        return (size >= self.lfs_threshold or path.endswith(LFS_SUFFIXES)
                or b"\0" in sample) and size > 0

    def entry_for(self, path: str, data: bytes | None = None, *, lfs_oid: str | None = None,
                  size: int = 0) -> FileEntry:
        """A FileEntry for regular content ``data`` (stored) or LFS object ``lfs_oid``."""
        if lfs_oid is not None:
            pointer = lfs_pointer(lfs_oid, size)
            return FileEntry(path, size, git_blob_id(pointer), lfs_oid, len(pointer))
        assert data is not None
        bid = git_blob_id(data)
        with self.lock:
            self.blobs[bid] = data
        return FileEntry(path, len(data), bid)

    def read_regular(self, entry: FileEntry) -> bytes:
        with self.lock:
            return self.blobs[entry.blob_id]

    # ---------------------------------------------------------------- commits
    def commit(self, repo: Repo, branch: str, add: dict[str, bytes | FileEntry],
               delete: list[str], *, title: str, message: str = "", author: str = "",
               parent: str | None = None) -> Commit:
        """Apply additions (bytes: regular or LFS by the Hub's rule; FileEntry: as given)
        and deletions (a path, or a folder ending in "/") to ``branch``; a new commit."""
        with self.lock:
            head = repo.branches.get(branch)
            if head is None and repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            if parent is not None and parent != head:
                raise HubError(412, None, "A commit has happened since. Please refresh and "
                               "try again.")
            files = dict(self.commits[head].files) if head else {}
            for path in delete:
                if path.endswith("/"):
                    gone = [p for p in files if p.startswith(path)]
                    if not gone:
                        raise HubError(404, "EntryNotFound",
                                       f"A folder with this name doesn't exist: {path}")
                    for p in gone:
                        del files[p]
                elif files.pop(path, None) is None:
                    raise HubError(404, "EntryNotFound",
                                   f"A file with this name doesn't exist: {path}")
            dirset = Commit("", None, files, "", "", "", 0).dirs()
            for path, value in add.items():
                if isinstance(value, FileEntry):
                    entry = FileEntry(path, value.size, value.blob_id, value.lfs_oid,
                                      value.pointer_size)
                elif self.is_lfs(path, len(value), value[:512]):
                    oid, size = self.add_lfs_object(value)
                    entry = self.entry_for(path, lfs_oid=oid, size=size)
                else:
                    entry = self.entry_for(path, value)
                dirs = {"/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)}
                if path in dirset or any(d in files for d in dirs):
                    raise HubError(400, None, f"{path}: a file and a folder cannot share a name")
                files[path] = entry
                dirset |= dirs
            self._seq += 1
            h = hashlib.sha1(f"{head}\0{title}\0{message}\0{self._seq}\0".encode())
            for path in sorted(files):
                h.update(f"{path}\0{files[path].blob_id}\n".encode())
            c = Commit(h.hexdigest(), head, files, title, message, author, time.time())
            self.commits[c.id] = c
            repo.branches[branch] = c.id
            return c

    def wipe(self) -> None:
        with self.lock:
            self.repos.clear()
            self.commits.clear()
            self.blobs.clear()
        shutil.rmtree(self.lfs_dir, ignore_errors=True)
        self.lfs_dir.mkdir(parents=True, exist_ok=True)


__all__ = ["Hub", "Repo", "Commit", "FileEntry", "HubError", "git_blob_id", "lfs_pointer",
           "iso", "LFS_THRESHOLD"]
