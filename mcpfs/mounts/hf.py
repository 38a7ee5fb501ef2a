"""``/hf``: Hugging Face Hub repos as directories, read-write on branches.

Layout: ``<owner>/<repo>[@rev]/...`` (models), ``datasets/<owner>/<repo>[@rev]/...``,
``spaces/<owner>/<repo>[@rev]/...``; ``rev`` is a branch, tag or commit sha (``/`` in a
revision written ``%2F``). ``/hf`` lists ``datasets``, ``spaces`` and the owners of the
configured repos (``[hf] repos``) and, with a token, the token's user; an owner directory
lists that owner's repos (the Hub's list API) plus configured ones. Any owner/repo is
reachable by path whether listed or not.

Caching: a branch (or tag) resolves to a commit sha through ``repo_info``, kept for
``attr_ttl``; listings come from the tree API and are kept per (commit, folder) in an LRU,
never expired: content under a commit never changes. Paths under ``@<sha>`` are therefore
immutable (read-only permissions, :meth:`HfMount.capabilities_for` says so). With stats
attached (:meth:`HfMount.attach_stats`) every lookup of these caches, of the local HF cache
and of the read-ahead window counts as a hit or miss of the "hf" backend.

Reads: a file already in the local Hugging Face cache at that commit (``HF_HUB_CACHE``) is
read from there; otherwise ranged GETs on the /resolve URL pinned to the commit, through the
shared :class:`~mcpfs.mounts.prefetch.Prefetcher` (sequential reads stream with read-ahead,
random reads such as safetensors headers and memmap pages fetch what is asked).

Writes: vfs spools; ``commit`` is one Hub commit (LFS when the hub says so) titled
``mcpfs: write <path>``; ``unlink`` a delete commit; ``rename`` one commit of copy + delete
(same repo and branch, else EXDEV); ``mkdir`` is virtual (kept in this process) until a file
lands below it. Under ``@<sha>`` or ``@<tag>`` every change is EROFS.

Concurrency: caches and virtual directories are touched only from the trio thread.
``_ns_lock`` (trio.Lock) serializes renames against each other; it is taken after vfs's
OpenFile lock. A listing fetched while a commit moved the branch is harmless: it is keyed
by the commit it was fetched at.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import trio
from cachetools import LRUCache, TTLCache

from ..backends.huggingface import (SHA_RE, Entry, HfBackend, HfConfig, RepoInfo, RepoRef,
                                    ResolveTarget)
from ..errors import McpfsError, ReadOnly
from .base import (DIR, FILE, READONLY_DIR_PERM, READONLY_FILE_PERM, XATTR_PREFIX, Attr,
                   Capabilities, Mount, StatFS, Writer, split)
from .prefetch import Prefetcher

log = logging.getLogger("mcpfs.mounts.hf")

TYPE_DIRS: Final = {"datasets": "dataset", "spaces": "space"}
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # Hub owner and repo names
TREE_CACHE_ENTRIES: Final = 1_000_000  # directory entries kept over all cached listings
PINNED_INFOS: Final = 10_000  # (repo, sha) -> RepoInfo kept (immutable)
FAKE_BLOCKS: Final = 1 << 38  # statfs: "no limit"
IMMUTABLE: Final = Capabilities(immutable=True, attr_timeout=3600.0, entry_timeout=3600.0)

Listing = dict[str, Entry]


@dataclass(frozen=True)
class Loc:
    """A parsed /hf path: ``ref`` None above repo level (``owner`` set at owner level)."""

    type: str = "model"
    owner: str | None = None
    ref: RepoRef | None = None
    rev: str | None = None  # as written after "@" (None: main)
    sub: str = ""  # path inside the repo

    @property
    def branch(self) -> str:
        return self.rev or "main"

    @property
    def pinned(self) -> bool:
        return self.rev is not None and SHA_RE.match(self.rev) is not None


def parse(path: str) -> Loc:
    """ENOENT for names the Hub cannot have (dot files, ``@`` without a revision...)."""
    segs = split(path)
    repo_type = "model"
    if segs and segs[0] in TYPE_DIRS:
        repo_type, segs = TYPE_DIRS[segs[0]], segs[1:]
    if not segs:
        return Loc(repo_type)
    if not NAME_RE.match(segs[0]):
        raise McpfsError(f"/hf/{path}: no such owner", errno=errno.ENOENT)
    if len(segs) == 1:
        return Loc(repo_type, segs[0])
    name, at, rev = segs[1].partition("@")
    if not NAME_RE.match(name) or (at and not rev):
        raise McpfsError(f"/hf/{path}: no such repo", errno=errno.ENOENT)
    return Loc(repo_type, segs[0], RepoRef(repo_type, f"{segs[0]}/{name}"),
               urllib.parse.unquote(rev) if at else None, "/".join(segs[2:]))


class HfReader:
    """One open remote file: ranges of the commit-pinned /resolve URL via a prefetcher.
    ``identity`` (the git blob id: the content, for LFS files through their pointer) lets
    vfs/ keep the kernel's page cache across opens while the content is unchanged."""

    def __init__(self, backend: HfBackend, ref: RepoRef, sha: str, entry: Entry) -> None:
        self.identity = entry.blob_id or None
        target = ResolveTarget(backend.resolve_url(ref, sha, entry.path),
                               f"hf://{ref}@{sha[:12]}/{entry.path}")

        async def fetch(start: int, end: int) -> bytes:
            return await backend.get_range(target, start, end)
        self.target = target
        self.prefetcher = Prefetcher(fetch, entry.size, name=target.what,
                                     on_cache=backend.note_cache if backend.stats else None)

    async def read(self, offset: int, size: int) -> bytes:
        return await self.prefetcher.read(offset, size)

    async def close(self) -> None:
        await self.prefetcher.close()


class LocalReader:
    """A file of the local HF cache; the fd is closed by :meth:`close`."""

    def __init__(self, path: str, identity: str | None = None) -> None:
        self.path = path
        self.identity = identity
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    async def read(self, offset: int, size: int) -> bytes:
        return await trio.to_thread.run_sync(os.pread, self.fd, size, offset)

    async def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class HfMount(Mount):
    name = "hf"

    def __init__(self, backend: HfBackend) -> None:
        self.backend = backend
        cfg = backend.config
        self.capabilities = Capabilities(writable=True, rename=True, random_write=True,
                                         attr_timeout=cfg.attr_ttl, entry_timeout=cfg.attr_ttl)
        self._heads: TTLCache[tuple[RepoRef, str], RepoInfo] = TTLCache(10_000, cfg.attr_ttl)
        self._pinned: LRUCache[tuple[RepoRef, str], RepoInfo] = LRUCache(PINNED_INFOS)
        self._trees: LRUCache[tuple[RepoRef, str, str], Listing] = LRUCache(
            TREE_CACHE_ENTRIES, getsizeof=lambda v: max(1, len(v)))
        self._owners: TTLCache[tuple[str, str], list[str]] = TTLCache(1000, cfg.listing_ttl)
        self._refs: TTLCache[RepoRef, tuple[dict, dict]] = TTLCache(1000, cfg.listing_ttl)
        self._virtual: set[tuple[RepoRef, str, str]] = set()  # (repo, branch, dir path)
        self._ns_lock = trio.Lock()
        self._configured: list[RepoRef] = []
        for spec in cfg.repos:
            segs = split(spec)
            kind = TYPE_DIRS.get(segs[0], "model" if segs[0] != "models" else "model")
            segs = segs[1:] if segs[0] in (*TYPE_DIRS, "models") else segs
            if len(segs) == 2:
                self._configured.append(RepoRef(kind, "/".join(segs)))
            else:
                log.warning("[hf] repos: %r is not owner/name; ignored", spec)

    def capabilities_for(self, path: str) -> Capabilities:
        """Immutable (long kernel caches) under ``@<sha>``; the mount's otherwise."""
        try:
            return IMMUTABLE if parse(path).pinned else self.capabilities
        except McpfsError:
            return self.capabilities

    # ---------------------------------------------------------------- resolution
    async def _info(self, loc: Loc) -> RepoInfo:
        assert loc.ref is not None
        key = (loc.ref, loc.branch)
        cache = self._pinned if loc.pinned else self._heads
        hit = cache.get(key)
        self.backend.note_cache(hit is not None)
        if hit is None:
            hit = cache[key] = await self.backend.repo_info(loc.ref, loc.rev)
        return hit

    async def _listing(self, ref: RepoRef, sha: str, folder: str, branch: str) -> Listing:
        """name -> Entry of ``folder`` at ``sha`` (cached for good), virtual dirs merged."""
        key = (ref, sha, folder)
        out = self._trees.get(key)
        self.backend.note_cache(out is not None)
        if out is None:
            try:
                entries = await self.backend.list_tree(ref, sha, folder)
            except McpfsError as exc:
                if exc.errno != errno.ENOENT or (ref, branch, folder) not in self._virtual:
                    raise
                entries = []
            out = {e.path.rsplit("/", 1)[-1]: e for e in entries}
            self._trees[key] = out
        prefix = folder + "/" if folder else ""
        extra = {p[len(prefix):]: Entry(p, True) for r, b, p in self._virtual
                 if r == ref and b == branch and p.startswith(prefix)
                 and "/" not in p[len(prefix):]}
        return {**extra, **out} if extra else out

    async def _entry(self, loc: Loc) -> tuple[Entry, RepoInfo]:
        info = await self._info(loc)
        if not loc.sub:
            return Entry("", True), info
        parent, _, name = loc.sub.rpartition("/")
        if parent:
            up, _ = await self._entry(Loc(loc.type, loc.owner, loc.ref, loc.rev, parent))
            if not up.is_dir:
                raise McpfsError(f"/hf/{loc.ref}/{parent}: not a directory",
                                 errno=errno.ENOTDIR)
        assert loc.ref is not None
        entry = (await self._listing(loc.ref, info.sha, parent, loc.branch)).get(name)
        if entry is None:
            raise McpfsError(f"/hf/{loc.ref}/{loc.sub}: no such file", errno=errno.ENOENT)
        return entry, info

    def _attr(self, entry: Entry, info: RepoInfo, loc: Loc) -> Attr:
        perm = (READONLY_DIR_PERM if entry.is_dir else READONLY_FILE_PERM) \
            if loc.pinned else None
        return Attr(DIR if entry.is_dir else FILE, entry.size, perm=perm,
                    mtime_ns=info.mtime_ns or time.time_ns())

    # ---------------------------------------------------------------- reading
    async def lookup(self, path: str) -> Attr:
        loc = parse(path)
        if loc.ref is None:
            return Attr(DIR)
        entry, info = await self._entry(loc)
        return self._attr(entry, info, loc)

    async def listdir(self, path: str) -> AsyncIterator[tuple[str, Attr]]:
        loc = parse(path)
        if loc.ref is None:
            for name in await self._names_above_repos(loc):
                yield name, Attr(DIR)
            return
        entry, info = await self._entry(loc)
        if not entry.is_dir:
            raise McpfsError(f"/hf/{path}: not a directory", errno=errno.ENOTDIR)
        listing = await self._listing(loc.ref, info.sha, loc.sub, loc.branch)
        for name, e in sorted(listing.items()):
            yield name, self._attr(e, info, loc)

    async def _names_above_repos(self, loc: Loc) -> list[str]:
        user = await self.backend.whoami()
        if loc.owner is None:  # /hf, /hf/datasets, /hf/spaces: owners
            names = {r.id.split("/")[0] for r in self._configured if r.type == loc.type}
            names |= {user} if user else set()
            return sorted(names) + (sorted(TYPE_DIRS) if loc.type == "model" else [])
        names = {r.id.split("/")[1] for r in self._configured
                 if r.type == loc.type and r.id.split("/")[0] == loc.owner}
        key = (loc.type, loc.owner)
        if key not in self._owners:
            try:
                self._owners[key] = await self.backend.list_repos(loc.type, loc.owner)
            except McpfsError as exc:
                log.debug("/hf: listing repos of %s: %s", loc.owner, exc)
                self._owners[key] = []
        return sorted(names | {i.split("/", 1)[1] for i in self._owners[key]})

    async def open_read(self, path: str) -> HfReader | LocalReader:
        loc = parse(path)
        if loc.ref is None:
            raise McpfsError(f"/hf/{path}: is a directory", errno=errno.EISDIR)
        entry, info = await self._entry(loc)
        if entry.is_dir:
            raise McpfsError(f"/hf/{path}: is a directory", errno=errno.EISDIR)
        local = await trio.to_thread.run_sync(self.backend.cached_file, loc.ref, info.sha,
                                              entry.path, entry.size)
        self.backend.note_cache(local is not None)  # served from the local HF cache
        if local is not None:
            return LocalReader(local, entry.blob_id or None)
        return HfReader(self.backend, loc.ref, info.sha, entry)

    async def _xattrs(self, path: str) -> dict[str, str]:
        loc = parse(path)
        out = {XATTR_PREFIX + "backend": self.name}
        if loc.ref is None:
            return out
        entry, info = await self._entry(loc)
        out[XATTR_PREFIX + "commit"] = info.sha
        if entry.is_dir:
            return out
        out[XATTR_PREFIX + "size"] = str(entry.size)
        out[XATTR_PREFIX + "blob_id"] = entry.blob_id
        if entry.sha256:
            out[XATTR_PREFIX + "sha256"] = entry.sha256
        return out

    async def getxattr(self, path: str, name: str) -> bytes:
        values = await self._xattrs(path)
        if name not in values:
            raise McpfsError(f"/hf/{path}: no attribute {name}", errno=errno.ENODATA)
        return values[name].encode()

    async def listxattr(self, path: str) -> list[str]:
        return list(await self._xattrs(path))

    async def statfs(self) -> StatFS:
        return StatFS(blocks=FAKE_BLOCKS, blocks_free=FAKE_BLOCKS, blocks_avail=FAKE_BLOCKS,
                      files=FAKE_BLOCKS, files_free=FAKE_BLOCKS, name_max=255)

    # ---------------------------------------------------------------- writing
    async def _writable(self, path: str, what: str) -> Loc:
        """The Loc of a path inside a repo on a branch; EROFS under a commit or tag."""
        loc = parse(path)
        if loc.ref is None or not loc.sub:
            raise McpfsError(f"/hf/{path}: {what} needs a path inside a repo",
                             errno=errno.EPERM if loc.ref is None else errno.EISDIR)
        if loc.pinned:
            raise ReadOnly(f"/hf/{path}: a commit is read-only")
        if loc.rev is not None:
            if loc.ref not in self._refs:
                self._refs[loc.ref] = await self.backend.refs(loc.ref)
            branches, tags = self._refs[loc.ref]
            if loc.rev not in branches:
                raise (ReadOnly(f"/hf/{path}: a tag is read-only") if loc.rev in tags else
                       McpfsError(f"/hf/{path}: no such branch", errno=errno.ENOENT))
        return loc

    async def _parent_is_dir(self, loc: Loc) -> None:
        parent = loc.sub.rpartition("/")[0]
        if parent:
            entry, _ = await self._entry(Loc(loc.type, loc.owner, loc.ref, loc.rev, parent))
            if not entry.is_dir:
                raise McpfsError(f"/hf/{loc.ref}/{parent}: not a directory",
                                 errno=errno.ENOTDIR)

    async def _exists(self, loc: Loc) -> Entry | None:
        try:
            return (await self._entry(loc))[0]
        except McpfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return None

    async def open_write(self, path: str, spool: Any, truncate: bool,
                         create: bool = False) -> Writer:
        loc = await self._writable(path, "a file")
        if create:
            return Writer(path, spool, existed=False)
        entry = await self._exists(loc)
        if entry is None:
            await self._parent_is_dir(loc)
            return Writer(path, spool, existed=False)
        if entry.is_dir:
            raise McpfsError(f"/hf/{path}: is a directory", errno=errno.EISDIR)
        return Writer(path, spool, existed=True, extra={"size": entry.size})

    def _landed(self, loc: Loc, sha: str, *paths: str) -> None:
        """After our commit: the branch head is ``sha``; virtual dirs above ``paths`` are
        real now (or gone with them)."""
        assert loc.ref is not None
        self._heads[(loc.ref, loc.branch)] = RepoInfo(sha, False, False, time.time_ns())
        for p in paths:
            segs = split(p)
            for i in range(1, len(segs)):
                self._virtual.discard((loc.ref, loc.branch, "/".join(segs[:i])))

    async def commit(self, writer: Writer) -> Attr:
        """One Hub commit adding the spool as ``path``; the spool is left to vfs. The
        bridge's ``writer.extra["ipfs_cid"]`` (a CID of these bytes) goes into the commit
        message; ``extra["version"]`` gets the commit sha."""
        loc = await self._writable(writer.path, "a file")
        size = await writer.spool.size()
        assert loc.ref is not None
        title = f"{self.backend.config.commit_prefix}: write {loc.sub}"
        if writer.extra.get("ipfs_cid"):
            title += f" (ipfs-cid {writer.extra['ipfs_cid']})"
        sha = await self.backend.commit(loc.ref, loc.branch, title,
                                        add={loc.sub: writer.spool.path})
        writer.extra["version"] = sha
        self._landed(loc, sha, loc.sub)
        return Attr(FILE, size, mtime_ns=time.time_ns())

    async def unlink(self, path: str) -> None:
        loc = await self._writable(path, "unlink")
        entry, _ = await self._entry(loc)
        if entry.is_dir:
            raise McpfsError(f"/hf/{path}: is a directory", errno=errno.EISDIR)
        assert loc.ref is not None
        sha = await self.backend.commit(
            loc.ref, loc.branch, f"{self.backend.config.commit_prefix}: delete {loc.sub}",
            delete=[loc.sub])
        self._landed(loc, sha)

    async def mkdir(self, path: str) -> Attr:
        """Virtual until a file lands below it (git keeps no empty folders)."""
        loc = await self._writable(path, "mkdir")
        if await self._exists(loc) is not None:
            raise McpfsError(f"/hf/{path}: exists", errno=errno.EEXIST)
        await self._parent_is_dir(loc)
        assert loc.ref is not None
        self._virtual.add((loc.ref, loc.branch, loc.sub))
        return Attr(DIR, mtime_ns=time.time_ns())

    async def rmdir(self, path: str) -> None:
        loc = await self._writable(path, "rmdir")
        assert loc.ref is not None
        entry, info = await self._entry(loc)
        if not entry.is_dir:
            raise McpfsError(f"/hf/{path}: not a directory", errno=errno.ENOTDIR)
        if await self._listing(loc.ref, info.sha, loc.sub, loc.branch):
            raise McpfsError(f"/hf/{path}: directory not empty", errno=errno.ENOTEMPTY)
        self._virtual.discard((loc.ref, loc.branch, loc.sub))

    async def rename(self, src: str, dst: str) -> None:
        """One commit: copy then delete (a file), or copy every file then delete the folder
        (a directory). Across repos or branches: EXDEV (``mv`` copies)."""
        s = await self._writable(src, "rename")
        d = await self._writable(dst, "rename")
        if (s.ref, s.branch) != (d.ref, d.branch):
            raise McpfsError(f"/hf/{src}: rename across repos or branches", errno=errno.EXDEV)
        if s.sub == d.sub:
            return
        if (d.sub + "/").startswith(s.sub + "/"):
            raise McpfsError("cannot move a directory into itself", errno=errno.EINVAL)
        async with self._ns_lock:
            await self._rename_locked(s, d)

    async def _rename_locked(self, s: Loc, d: Loc) -> None:
        assert s.ref is not None
        src, info = await self._entry(s)
        dst = await self._exists(d)
        if dst is None:
            await self._parent_is_dir(d)
        title = f"{self.backend.config.commit_prefix}: rename {s.sub} -> {d.sub}"
        if not src.is_dir:
            if dst is not None and dst.is_dir:
                raise McpfsError(f"/hf/{d.ref}/{d.sub}: is a directory", errno=errno.EISDIR)
            sha = await self.backend.commit(s.ref, s.branch, title, copy=[(s.sub, d.sub)],
                                            delete=[s.sub])
            self._landed(s, sha, d.sub)
            return
        if dst is not None:
            if not dst.is_dir:
                raise McpfsError(f"/hf/{d.ref}/{d.sub}: not a directory", errno=errno.ENOTDIR)
            await self.rmdir(f"{_repo_path(d)}/{d.sub}")  # ENOTEMPTY when it has files
        files = [e for e in await self.backend.list_tree(s.ref, info.sha, s.sub, recursive=True)
                 if not e.is_dir]
        moved = {(r, b, p) for r, b, p in self._virtual if r == s.ref and b == s.branch
                 and (p + "/").startswith(s.sub + "/")}
        self._virtual -= moved
        self._virtual |= {(r, b, d.sub + p[len(s.sub):]) for r, b, p in moved}
        if not files:
            return
        sha = await self.backend.commit(
            s.ref, s.branch, title, copy=[(e.path, d.sub + e.path[len(s.sub):]) for e in files],
            delete_folders=[s.sub])
        self._landed(s, sha, *(d.sub + e.path[len(s.sub):] for e in files))

    async def aclose(self) -> None:
        await self.backend.aclose()

    def attach_stats(self, stats: Any) -> None:
        """Count the backend's Hub requests and the /hf cache lookups (local HF cache,
        read-ahead window) in ``stats`` (a :class:`~mcpfs.stats.Stats`; the daemon calls
        this once at start)."""
        self.backend.stats = stats


def _repo_path(loc: Loc) -> str:
    assert loc.ref is not None
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[loc.type]
    name = loc.ref.id + (f"@{urllib.parse.quote(loc.rev, safe='')}" if loc.rev else "")
    return prefix + name


def build_hf_mount(section: dict[str, Any] | None, **backend_kwargs: Any) -> HfMount:
    """The /hf subtree from an ``[hf]`` section (blocking: reads the token file)."""
    return HfMount(HfBackend(HfConfig.from_section(section), **backend_kwargs))


__all__ = ["HfMount", "HfReader", "LocalReader", "build_hf_mount", "parse", "Loc"]
