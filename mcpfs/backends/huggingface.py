"""Hugging Face Hub client: huggingface_hub's HfApi in worker threads, ranged reads with httpx.

Configuration comes from the ``[hf]`` section (:class:`HfConfig`): ``endpoint`` (else
``HF_ENDPOINT``, else huggingface.co), ``repos`` shown at /hf, limits and TTLs. The token
comes from huggingface_hub's own chain (``HF_TOKEN``, then the file ``hf auth login``
writes), read once at construction, never from mcpfs's config and never logged. Public
repos need none.

Errors (:func:`map_status`, the only translation, used for HfApi exceptions and for
httpx responses alike): RepoNotFound, RevisionNotFound, EntryNotFound and 404 -> ENOENT
(with a token the Hub answers 404 for another user's private repo too); GatedRepo, 401
(RepoNotFound with 401 included: the Hub's answer to an anonymous request for a private
or a missing repo) and 403 -> EACCES with one warning saying why (gated: accept the
conditions on the Hub; private or no rights: check the token); 409 -> EEXIST; 416 -> EINVAL;
429 -> retried with backoff (``Retry-After`` when given, else ``retry_base`` doubling) up to
``max_retries`` times, then EAGAIN; 5xx and connection failures -> EIO. Messages carry the
operation and the Hub's error code, never headers or the token.

Reads: :meth:`HfBackend.get_range` sends ``Range`` to the /resolve URL pinned to a commit
sha (token sent to the hub origin only); an LFS file's 302 is followed to its CDN location,
which is remembered by the caller's :class:`ResolveTarget` so later ranges go straight
there (a 403/404 from an expired location sends the next request back to the hub). A 206
body is received into one buffer of its size, from socket reads of up to 1 MiB (httpcore's
64 KiB reads cost more in Python per read than the bytes do: issue 5's read row).

Statistics: with a :class:`~mcpfs.stats.Stats` in ``stats`` (None by default; the mount's
``attach_stats`` sets it), every Hub call counts as ``stats.backend("hf", op, ...)``:
"whoami", "repo_info", "list_repos", "refs", "list_tree", "commit" (HfApi) and "get"
(ranges), with the wall time from the call to its answer (waiting for a worker thread,
redirects and 429 retries included) and an error when it raised. Bytes in are range
bodies; bytes out of a commit are the sizes of the files it adds (huggingface_hub may skip
an LFS file the Hub already has; a copy is server-side and counts 0).

Resources: one HfApi (its own httpx2 pool, thread-safe) whose calls run in
``trio.to_thread.run_sync`` under one CapacityLimiter (``threads``); one httpx.AsyncClient
(``threads`` connections) for ranges, closed by :meth:`aclose`. A commit streams the spool
file from disk (huggingface_hub hashes and uploads it; LFS above the hub's threshold).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
import trio
from huggingface_hub import (CommitOperationAdd, CommitOperationCopy, CommitOperationDelete,
                             HfApi, constants)
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from ..errors import McpfsError

if TYPE_CHECKING:
    from ..stats import Stats

log = logging.getLogger("mcpfs.backends.hf")
T = TypeVar("T")

TYPES: Final = ("model", "dataset", "space")
URL_PREFIX: Final = {"model": "", "dataset": "datasets/", "space": "spaces/"}
SHA_RE: Final = re.compile(r"^[0-9a-f]{40}$")
OWN_REPOS_MAX: Final = 5000  # repos listed per owner directory
HTTP_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
RECV_BYTES: Final = 1 << 20  # socket read size of the range connections (httpcore: 64 KiB)
STATS_NAME: Final = "hf"  # the backend's name in Stats.backend / backend_cache
_ALLOWED_KEYS = {"endpoint", "repos", "threads", "max_retries", "retry_base", "listing_ttl",
                 "attr_ttl", "cache_dir", "use_local_cache", "commit_prefix", "enabled"}


@dataclass(frozen=True)
class HfConfig:
    """The ``[hf]`` section; ``repos`` entries are ``owner/name``, ``datasets/owner/name``
    or ``spaces/owner/name``."""

    endpoint: str | None = None
    repos: tuple[str, ...] = ()
    threads: int = 16  # HfApi calls in flight, and range connections
    max_retries: int = 5  # 429 retries before EAGAIN
    retry_base: float = 0.5  # first backoff (s) when no Retry-After is given; doubles
    listing_ttl: float = 30.0  # seconds an owner's repo list / a branch listing is kept
    attr_ttl: float = 1.0  # seconds a branch -> commit resolution is kept
    cache_dir: str | None = None  # the HF hub cache (else HF_HUB_CACHE, HF_HOME/hub)
    use_local_cache: bool = True  # serve files already in the HF cache from there
    commit_prefix: str = "mcpfs"  # commit titles: "<prefix>: write a/b"

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> HfConfig:
        """Unknown keys (a token among them) are dropped with a warning naming the key."""
        section = dict(section or {})
        for key in sorted(set(section) - _ALLOWED_KEYS):
            log.warning("[hf] %s: unknown key ignored (the token comes from HF_TOKEN or "
                        "`hf auth login`)", key)
            section.pop(key)
        section.pop("enabled", None)  # read by enabled()
        if "repos" in section:
            section["repos"] = tuple(section["repos"])
        return cls(**section)


@dataclass(frozen=True)
class RepoRef:
    type: str  # "model", "dataset", "space"
    id: str  # "owner/name"

    def __str__(self) -> str:
        return f"{URL_PREFIX[self.type]}{self.id}"


@dataclass(frozen=True)
class Entry:
    """One tree entry at one commit."""

    path: str
    is_dir: bool
    size: int = 0
    blob_id: str = ""  # git blob sha1 (tree id for folders)
    sha256: str | None = None  # LFS oid


@dataclass(frozen=True)
class RepoInfo:
    sha: str
    private: bool
    gated: bool
    mtime_ns: int


class ResolveTarget:
    """Where one open file is read from: the /resolve URL and, once a redirect was seen,
    its CDN location. Touched from the trio thread only."""

    def __init__(self, url: str, what: str) -> None:
        self.url = url
        self.location: str | None = None
        self.what = what


class _Denied:
    """One warning per backend and reason, later ones at debug level."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def note(self, reason: str, what: str) -> None:
        level = logging.DEBUG if reason in self.seen else logging.WARNING
        self.seen.add(reason)
        log.log(level, "Hugging Face denied %s: %s", what, reason)


def map_status(status: int, code: str | None, what: str,
               denied: _Denied | None = None, has_token: bool = True) -> McpfsError:
    """The McpfsError for a Hub answer (HTTP ``status``, ``X-Error-Code`` ``code``)."""
    msg = f"{what}: {code or status}"
    if code == "GatedRepo":
        (denied or _Denied()).note("gated repo: accept its conditions on the Hub page with "
                                   "the account of the token", what)
        return McpfsError(msg, errno=errno.EACCES)
    if code == "RepoNotFound" and status == 401:
        # the Hub's answer to an anonymous (or bad-token) request for a private repo, and
        # for a missing one alike: it does not say which, so "no access" it is
        (denied or _Denied()).note(
            "not found, or private and " + ("the token is refused" if has_token else
                                            "no token (set HF_TOKEN or run `hf auth login`)"),
            what)
        return McpfsError(msg, errno=errno.EACCES)
    if code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound") or status == 404:
        return McpfsError(msg, errno=errno.ENOENT)
    if status in (401, 403):
        (denied or _Denied()).note("the token is invalid or lacks the rights (read/write) "
                                   "for this repo" if has_token else
                                   "no token (set HF_TOKEN or run `hf auth login`)", what)
        return McpfsError(msg, errno=errno.EACCES)
    if status == 409:
        return McpfsError(msg, errno=errno.EEXIST)
    if status == 412:
        return McpfsError(msg + " (the branch moved)", errno=errno.ESTALE)
    if status == 416:
        return McpfsError(msg, errno=errno.EINVAL)
    if status == 429:
        return McpfsError(msg + " (rate limited)", errno=errno.EAGAIN)
    log.error("%s failed: HTTP %s %s", what, status, code or "")
    return McpfsError(msg, errno=errno.EIO)


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


def hub_cache_dir(config: HfConfig) -> str:
    """The HF hub cache: config, HF_HUB_CACHE, HF_HOME/hub, huggingface_hub's default."""
    if config.cache_dir:
        return os.path.expanduser(config.cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


class HfBackend:
    """Async Hub operations; see the module docstring.

    Concurrency: HfApi is shared by worker threads (it is thread-safe); the AsyncClient and
    every attribute are used from the trio thread only."""

    def __init__(self, config: HfConfig | None = None, *, token: str | None | bool = None,
                 limiter: trio.CapacityLimiter | None = None) -> None:
        """Blocking only as far as reading the token file (call at startup or in a thread).
        ``token``: None = huggingface_hub's chain, False = anonymous, str = that token."""
        from huggingface_hub import get_token
        self.config = config or HfConfig()
        self.endpoint = (self.config.endpoint or os.environ.get("HF_ENDPOINT")
                         or constants.ENDPOINT).rstrip("/")
        self.token: str | None = (get_token() if token is None else token) or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False)
        self.limiter = limiter or trio.CapacityLimiter(self.config.threads)
        self.http = httpx.AsyncClient(
            follow_redirects=False, timeout=HTTP_TIMEOUT,
            limits=httpx.Limits(max_connections=max(self.config.threads, 8) * 2))
        _larger_reads()
        self.cache_dir = hub_cache_dir(self.config)
        self._denied = _Denied()
        self._user: str | None = None
        self.stats: Stats | None = None  # request counters (see the module docstring)

    async def aclose(self) -> None:
        await self.http.aclose()

    # ---------------------------------------------------------------- plumbing
    def _map(self, exc: BaseException, what: str) -> McpfsError:
        if isinstance(exc, McpfsError):
            return exc
        if isinstance(exc, GatedRepoError):
            return map_status(403, "GatedRepo", what, self._denied, bool(self.token))
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            return map_status(exc.response.status_code,
                              exc.response.headers.get("X-Error-Code"), what, self._denied,
                              bool(self.token))
        log.error("%s failed: %s", what, type(exc).__name__)
        return McpfsError(f"{what}: {type(exc).__name__}", errno=errno.EIO)

    async def _backoff(self, attempt: int, retry_after: float | None, what: str) -> None:
        if attempt >= self.config.max_retries:
            raise map_status(429, None, what)
        delay = retry_after if retry_after is not None else \
            self.config.retry_base * (2 ** attempt)
        log.info("%s: rate limited, retrying in %.1f s", what, delay)
        await trio.sleep(delay)

    def note_cache(self, hit: bool) -> None:
        """Count one lookup of an /hf cache (the local HF cache, the prefetcher's window)
        when stats are attached; a None check otherwise."""
        if self.stats is not None:
            self.stats.backend_cache(STATS_NAME, hit)

    async def call(self, fn: Callable[[], T], what: str, op: str = "other", *,
                   bytes_out: int = 0) -> T:
        """Run ``fn`` (HfApi work) in a worker thread; 429 retried, errors mapped once.
        With ``stats``: counted as one ``op`` request (``bytes_out`` when it succeeds)."""
        if self.stats is None:
            return await self._call(fn, what)
        start = time.perf_counter()
        try:
            result = await self._call(fn, what)
        except Exception:
            self.stats.backend(STATS_NAME, op, seconds=time.perf_counter() - start,
                               error=True)
            raise
        self.stats.backend(STATS_NAME, op, bytes_out=bytes_out,
                           seconds=time.perf_counter() - start)
        return result

    async def _call(self, fn: Callable[[], T], what: str) -> T:
        attempt = 0
        while True:
            try:
                return await trio.to_thread.run_sync(fn, limiter=self.limiter)
            except HfHubHTTPError as exc:
                resp = exc.response
                if resp is not None and resp.status_code == 429:
                    await self._backoff(attempt, _retry_after(resp.headers), what)
                    attempt += 1
                    continue
                raise self._map(exc, what) from None
            except (OSError, ValueError) as exc:  # httpx2 network errors, malformed answers
                raise self._map(exc, what) from None

    # ---------------------------------------------------------------- repos
    async def whoami(self) -> str | None:
        """The token's user name (cached); None without a token or when it is refused."""
        if not self.token:
            return None
        if self._user is None:
            try:
                self._user = (await self.call(lambda: self.api.whoami(), "whoami",
                                              "whoami"))["name"]
            except McpfsError:
                return None
        return self._user

    async def repo_info(self, ref: RepoRef, rev: str | None) -> RepoInfo:
        what = f"hf://{ref}@{rev or 'main'}"
        info = await self.call(lambda: self.api.repo_info(ref.id, repo_type=ref.type,
                                                          revision=rev), what, "repo_info")
        mtime = info.last_modified.timestamp() if getattr(info, "last_modified", None) else 0
        return RepoInfo(info.sha, bool(info.private), bool(info.gated), int(mtime * 1e9))

    async def list_repos(self, repo_type: str, author: str) -> list[str]:
        """Repo ids of ``author`` (up to OWN_REPOS_MAX)."""
        lister = {"model": self.api.list_models, "dataset": self.api.list_datasets,
                  "space": self.api.list_spaces}[repo_type]
        return await self.call(lambda: [r.id for r in lister(author=author,
                                                             limit=OWN_REPOS_MAX)],
                               f"list {repo_type}s of {author}", "list_repos")

    async def refs(self, ref: RepoRef) -> tuple[dict[str, str], dict[str, str]]:
        """(branches, tags): name -> commit sha."""
        r = await self.call(lambda: self.api.list_repo_refs(ref.id, repo_type=ref.type),
                            f"refs of hf://{ref}", "refs")
        return ({b.name: b.target_commit for b in r.branches},
                {t.name: t.target_commit for t in r.tags})

    async def list_tree(self, ref: RepoRef, sha: str, path: str,
                        recursive: bool = False) -> list[Entry]:
        """Entries of folder ``path`` at commit ``sha``, every page in one worker call."""
        def work() -> list[Entry]:
            out = []
            for e in self.api.list_repo_tree(ref.id, path_in_repo=path or None,
                                             recursive=recursive, revision=sha,
                                             repo_type=ref.type):
                if hasattr(e, "tree_id"):
                    out.append(Entry(e.path, True, 0, e.tree_id))
                else:
                    out.append(Entry(e.path, False, e.size, e.blob_id,
                                     e.lfs.sha256 if e.lfs else None))
            return out
        return await self.call(work, f"list hf://{ref}@{sha[:12]}/{path}", "list_tree")

    # ---------------------------------------------------------------- reads
    def resolve_url(self, ref: RepoRef, rev: str, path: str) -> str:
        return (f"{self.endpoint}/{ref}/resolve/{urllib.parse.quote(rev, safe='')}/"
                f"{urllib.parse.quote(path)}")

    def cached_file(self, ref: RepoRef, sha: str, path: str, size: int) -> str | None:
        """The file in the local HF cache for this commit, if complete (blocking)."""
        if not self.config.use_local_cache:
            return None
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(ref.id, path, cache_dir=self.cache_dir, revision=sha,
                                       repo_type=ref.type)
        if isinstance(found, str) and os.path.isfile(found) and os.path.getsize(found) == size:
            return found
        return None

    def _same_origin(self, url: str) -> bool:
        a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.endpoint)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    async def get_range(self, target: ResolveTarget, start: int,
                        end: int) -> bytes | bytearray:
        """Bytes ``[start, end)`` of ``target`` (shorter at the end, b"" past it); a 206 body
        comes as the bytearray it was received into (see :func:`_read_body`). Counted as
        one "get" with ``stats`` (redirects and retries included)."""
        if end <= start:
            return b""
        if self.stats is None:
            return await self._get_range(target, start, end)
        began = time.perf_counter()
        try:
            data = await self._get_range(target, start, end)
        except Exception:
            self.stats.backend(STATS_NAME, "get", seconds=time.perf_counter() - began,
                               error=True)
            raise
        self.stats.backend(STATS_NAME, "get", bytes_in=len(data),
                           seconds=time.perf_counter() - began)
        return data

    async def _get_range(self, target: ResolveTarget, start: int,
                         end: int) -> bytes | bytearray:
        attempt = 0
        hops = 0
        while True:
            url = target.location or target.url
            headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
            if self.token and self._same_origin(url):
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                async with self.http.stream("GET", url, headers=headers) as resp:
                    status = resp.status_code
                    if status == 206:
                        return await _read_body(resp, end - start)
                    await resp.aread()
            except httpx.HTTPError as exc:
                log.error("read %s failed: %s", target.what, type(exc).__name__)
                raise McpfsError(f"read {target.what}: {type(exc).__name__}",
                                 errno=errno.EIO) from None
            if status in (301, 302, 303, 307, 308) and hops < 5:
                target.location = urllib.parse.urljoin(url, resp.headers["Location"])
                hops += 1
                continue
            if status == 200:  # Range ignored: the whole body came
                return resp.content[start:end]
            if status == 416:
                return b""
            if status == 429:
                await self._backoff(attempt, _retry_after(resp.headers), f"read {target.what}")
                attempt += 1
                continue
            if target.location is not None and url == target.location and hops == 0 and \
                    status in (401, 403, 404, 410):
                target.location = None  # an expired CDN location: ask the hub again
                hops += 1
                continue
            raise map_status(status, resp.headers.get("X-Error-Code"), f"read {target.what}",
                             self._denied, bool(self.token))

    # ---------------------------------------------------------------- commits
    async def commit(self, ref: RepoRef, branch: str, title: str, *,
                     add: dict[str, str] | None = None, delete: list[str] | None = None,
                     delete_folders: list[str] | None = None,
                     copy: list[tuple[str, str]] | None = None) -> str:
        """One commit on ``branch``: ``add`` maps repo paths to local files, ``copy`` is
        (src, dst) pairs (copied first), then deletions. Returns the new commit sha."""
        ops: list[Any] = [CommitOperationCopy(s, d) for s, d in copy or []]
        ops += [CommitOperationAdd(p, local) for p, local in (add or {}).items()]
        ops += [CommitOperationDelete(p) for p in delete or []]
        ops += [CommitOperationDelete(p.rstrip("/") + "/", is_folder=True)
                for p in delete_folders or []]
        sent = 0
        if add and self.stats is not None:  # stat calls: only when counted
            sent = await trio.to_thread.run_sync(_total_size, list(add.values()),
                                                 limiter=self.limiter)
        info = await self.call(lambda: self.api.create_commit(
            ref.id, ops, commit_message=title, repo_type=ref.type, revision=branch,
            commit_description="Committed through the mcpfs mount."), f"commit to hf://{ref}",
            "commit", bytes_out=sent)
        return info.oid


def _total_size(files: list[str]) -> int:
    """Bytes of the local ``files`` (a missing one counts 0: the commit reports it)."""
    total = 0
    for path in files:
        try:
            total += os.path.getsize(path)
        except OSError:
            continue
    return total


def _larger_reads() -> None:
    """httpcore reads its sockets 64 KiB at a time, and every read costs a trip through
    h11 and httpx in Python: at hundreds of MB/s that per-read work, not the bytes, is what
    a range read costs. Reads of up to RECV_BYTES (a recv returns what has arrived, so small
    answers are not delayed) cut it ~16x. A class attribute of httpcore: it applies to every
    HTTP/1.1 connection of the process."""
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:  # another httpcore layout: keep its default
        return
    if getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", RECV_BYTES) < RECV_BYTES:
        AsyncHTTP11Connection.READ_NUM_BYTES = RECV_BYTES


async def _read_body(resp: httpx.Response, size: int) -> bytearray:
    """The body of a 206, at most ``size`` bytes, received into one buffer of that size:
    no list of pieces joined afterwards (``aread``: twice the memory, and one more copy).
    A buffer grown piece by piece instead is copied whenever realloc cannot grow it in
    place, which is most of the time for 16 MiB."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit():  # never more memory than the answer needs
        size = min(size, int(length))
    buf = bytearray(size)
    n = 0
    with memoryview(buf) as view:
        async for piece in resp.aiter_raw():  # to the end: the connection is reused
            m = min(len(piece), size - n)  # a server sending more than asked is cut short
            if m:
                view[n:n + m] = piece if m == len(piece) else piece[:m]
                n += m
    if n < size:  # shorter than asked: the end of the object
        del buf[n:]
    return buf


def enabled(section: dict[str, Any] | None) -> bool:
    """Whether /hf should appear: when configured, like every subtree (an ``[hf]`` section
    without ``enabled = false``, ``HF_ENDPOINT`` set, or a token in huggingface_hub's chain:
    ``HF_TOKEN`` or ``hf auth login``). Blocking (reads the token file)."""
    if section is not None and section.get("enabled", True) is False:
        return False
    if section is not None or os.environ.get("HF_ENDPOINT"):
        return True
    from huggingface_hub import get_token
    return bool(get_token())


__all__ = ["HfBackend", "HfConfig", "RepoRef", "Entry", "RepoInfo", "ResolveTarget",
           "map_status", "hub_cache_dir", "enabled", "SHA_RE", "TYPES", "URL_PREFIX"]
