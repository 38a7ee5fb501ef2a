"""A local Hugging Face Hub: the hub's HTTP API as huggingface_hub (2.x) uses it, on loopback.

No hub runs offline, so /hf is tested against this stand-in; tests/hf/test_hub_server.py runs
huggingface_hub's own client against it first, so what mcpfs is checked against is what the
real client sends and parses. Two origins, like the Hub and its CDN:

- the hub (``endpoint``): ``/api/{models,datasets,spaces}[/{id}[/revision/{rev}]]``,
  ``/api/{type}s/{id}/tree/{rev}[/{path}]`` (``recursive``, ``expand``, Link paging),
  ``/paths-info/{rev}``, ``/refs``, ``/commits/{rev}``, ``/preupload/{rev}``, the NDJSON
  ``/commit/{rev}``, ``/api/repos/{create,delete}``, ``/api/whoami-v2``,
  ``HEAD/GET /[{datasets,spaces}/]{id}/resolve/{rev}/{path}`` (X-Repo-Commit, ETag,
  Content-Length, Range -> 206) and the LFS batch and verify endpoints
  (``/{id}.git/info/lfs/objects/{batch,verify}``, basic transfer);
- the CDN (``cdn``): LFS files are redirected (302) there from /resolve, with X-Linked-Etag
  and X-Linked-Size on the redirect; ``GET/HEAD /lfs/{oid}?sig=`` serves ranges, ``PUT
  /upload/{oid}?sig=`` takes LFS uploads (sha256 checked).

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) and
``X-Error-Message``. Tokens (``hub.add_user``) are Bearer tokens: a private repo is visible to
its owner only (401 RepoNotFound without a token, as for a missing repo; 404 with another
user's token), a gated repo lists
for anyone but its files answer 403 GatedRepo unless the user is in ``repo.allowed``; writes
need the owner's token. ``throttle(n)`` makes the next ``n`` hub requests answer 429 with
``Retry-After: 0``.

Resources: two ThreadingHTTPServers (daemon threads), one thread each, started by
:meth:`HubServer.start` and stopped by :meth:`HubServer.stop`; state lives in
tests/hub_store.Hub under its lock. ``requests`` records (origin, method, path, range,
authorized) of every request for the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

from tests.hub_http import _Base, _CdnHandler, _Server
from tests.hub_store import Commit, FileEntry, Hub, HubError, Repo, iso
from tests.hub_writes import WriteRoutes

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PAGE_SIZE = 1000  # tree/commit/list pages, as the Hub (50 with expand)
EXPAND_PAGE_SIZE = 50
SEND_PIECE = 1 << 20
ALICE = "hf_alice_token_0123456789"  # token of user alice, owner of the test repos
BOB = "hf_bob_token_0123456789"  # token of bob (no access to alice's private repos)


class HubServer:
    """The two origins over one :class:`Hub`; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], host: str = "127.0.0.1",
                 port: int = 0, cdn_port: int = 0) -> None:
        self.hub = Hub(root)
        self.page_size = PAGE_SIZE
        self.secret = os.urandom(16)
        self.requests: list[tuple[str, str, str, str | None, bool]] = []
        self._throttle = 0
        self._lock = threading.Lock()
        self.api = _Server((host, port), _HubHandler, self)
        self.cdn_server = _Server((host, cdn_port), _CdnHandler, self)
        self.endpoint = f"http://{host}:{self.api.server_address[1]}"
        self.cdn = f"http://{host}:{self.cdn_server.server_address[1]}"
        self._threads: list[threading.Thread] = []

    def start(self) -> HubServer:
        for srv in (self.api, self.cdn_server):
            t = threading.Thread(target=srv.serve_forever, name="hub-server", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    @classmethod
    @contextlib.contextmanager
    def with_test_users(cls, root: str | os.PathLike[str]) -> Iterator[HubServer]:
        """A started hub on free loopback ports with users alice and bob (tokens ALICE,
        BOB); stopped on exit."""
        srv = cls(root).start()
        srv.hub.add_user("alice", ALICE)
        srv.hub.add_user("bob", BOB)
        try:
            yield srv
        finally:
            srv.stop()

    def stop(self) -> None:
        for srv in (self.api, self.cdn_server):
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def throttle(self, n: int) -> None:
        with self._lock:
            self._throttle = n

    def take_throttle(self) -> bool:
        with self._lock:
            if self._throttle <= 0:
                return False
            self._throttle -= 1
            return True

    def sign(self, oid: str) -> str:
        return hmac.new(self.secret, oid.encode(), hashlib.sha256).hexdigest()[:32]

    def count(self, origin: str = "", method: str = "", contains: str = "") -> int:
        return sum(1 for o, m, p, *_ in list(self.requests)
                   if (not origin or o == origin) and (not method or m == method)
                   and contains in p)


class _HubHandler(WriteRoutes, _Base):
    """The hub origin: API, /resolve and the LFS batch endpoints."""

    origin = "hub"

    # ---------------------------------------------------------------- auth
    def user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        name = self.server.app.hub.tokens.get(auth[7:].strip())
        if name is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return name

    def readable(self, repo_type: str, repo_id: str) -> Repo:
        user = self.user()
        try:
            repo = self.server.app.hub.repo(repo_type, repo_id)
        except HubError as err:  # anonymous: 401, private or missing alike (the Hub's way)
            if user is None:
                raise HubError(401, err.code, err.message) from None
            raise
        if repo.private and user != repo.owner:
            raise HubError(401 if user is None else 404, "RepoNotFound",
                           "Repository not found")
        return repo

    def downloadable(self, repo: Repo) -> None:
        user = self.user()
        if repo.gated and user != repo.owner and user not in repo.allowed:
            raise HubError(403, "GatedRepo", f"Access to {repo.type} {repo.id} is restricted. "
                           "You must have access to it and be authenticated to access it.")

    def writable(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.readable(repo_type, repo_id)
        if self.user() != repo.owner:
            raise HubError(403, None, "You don't have the rights to create a commit")
        return repo

    # ---------------------------------------------------------------- routing
    def route(self, method: str) -> None:
        app = self.server.app
        if app.take_throttle():
            self._json({"error": "rate limited"}, 429,
                       {"Retry-After": "0", "X-Error-Message": "rate limited"})
            return
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query)
        raw = url.path.strip("/").split("/")
        if raw[0] == "api":
            return self.api(method, raw[1:])
        repo_type = "model"
        if raw[0] in ("datasets", "spaces"):
            repo_type, raw = TYPES[raw[0]], raw[1:]
        if len(raw) >= 2 and raw[1].endswith(".git") and raw[2:5] == ["info", "lfs", "objects"]:
            return self.lfs(method, repo_type, f"{raw[0]}/{raw[1][:-4]}", raw[5:])
        if len(raw) >= 5 and raw[2] == "resolve" and method in ("GET", "HEAD"):
            path = urllib.parse.unquote("/".join(raw[4:]))
            return self.resolve(repo_type, f"{raw[0]}/{raw[1]}", _uq(raw[3]), path)
        raise HubError(404, None, "Not Found")

    def api(self, method: str, segs: list[str]) -> None:
        hub = self.server.app.hub
        if segs == ["whoami-v2"]:
            user = self.user()
            if user is None:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": user, "fullname": user, "orgs": [],
                               "auth": {"type": "access_token",
                                        "accessToken": {"displayName": "t", "role": "write"}}})
        if segs == ["validate-yaml"] and method == "POST":  # README.md metadata: accepted
            self._body()
            return self._json({"errors": [], "warnings": []})
        if segs[:1] == ["repos"] and len(segs) == 2:
            return self.repos(segs[1], json.loads(self._body() or b"{}"))
        if not segs or segs[0] not in TYPES:
            raise HubError(404, None, "Not Found")
        repo_type = TYPES[segs[0]]
        if len(segs) == 1:
            return self.list_repos(repo_type)
        if len(segs) < 3:
            raise HubError(404, "RepoNotFound", "Repository not found")
        repo_id, rest = f"{segs[1]}/{segs[2]}", segs[3:]
        if not rest:
            return self.info(self.readable(repo_type, repo_id), "main")
        what, args = rest[0], rest[1:]
        if what == "revision" and len(args) == 1:
            return self.info(self.readable(repo_type, repo_id), _uq(args[0]))
        if what == "tree" and args:
            return self.tree(self.readable(repo_type, repo_id), _uq(args[0]),
                             urllib.parse.unquote("/".join(args[1:])))
        if what == "paths-info" and len(args) == 1 and method == "POST":
            return self.paths_info(self.readable(repo_type, repo_id), _uq(args[0]))
        if what == "refs":
            return self.refs(self.readable(repo_type, repo_id))
        if what == "commits" and len(args) == 1:
            repo = self.readable(repo_type, repo_id)
            items = [{"id": c.id, "title": c.title, "message": c.message,
                      "authors": [{"user": c.author, "avatar": ""}], "date": iso(c.date)}
                     for c in hub.history(repo, _uq(args[0]))]
            return self.paged(items, self.server.app.page_size)
        if what in ("tag", "branch") and len(args) == 1 and method in ("POST", "DELETE"):
            return self.ref_change(self.writable(repo_type, repo_id), what, _uq(args[0]),
                                   method)
        if what == "preupload" and len(args) == 1 and method == "POST":
            return self.preupload(self.writable(repo_type, repo_id), _uq(args[0]))
        if what == "commit" and len(args) == 1 and method == "POST":
            return self.commit(self.writable(repo_type, repo_id), _uq(args[0]))
        raise HubError(404, None, "Not Found")

    def paged(self, items: list[Any], size: int) -> None:
        """One page of ``items`` from ``cursor``; a Link header names the next page."""
        start = int(self.query.get("cursor", ["0"])[0])
        headers = {}
        if start + size < len(items):
            url = urllib.parse.urlsplit(self.path)
            q = [(k, v) for k, vs in self.query.items() for v in vs if k != "cursor"]
            q.append(("cursor", str(start + size)))
            nxt = f"{self.server.app.endpoint}{url.path}?{urllib.parse.urlencode(q)}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(items[start:start + size], headers=headers)

    def list_repos(self, repo_type: str) -> None:
        hub, user = self.server.app.hub, self.user()
        author = self.query.get("author", [None])[0]
        with hub.lock:
            repos = [r for r in hub.repos.values() if r.type == repo_type
                     and (author is None or r.owner == author)
                     and (not r.private or r.owner == user)]
        items = [{"_id": r.id, "id": r.id, "private": r.private, "gated": _gated(r),
                  "createdAt": iso(r.created), "likes": 0, "downloads": 0, "tags": []}
                 for r in sorted(repos, key=lambda r: r.id)]
        self.paged(items, self.server.app.page_size)

    def info(self, repo: Repo, rev: str) -> None:
        c = self.server.app.hub.resolve(repo, rev)
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("true", "1")
        siblings = []
        for path in sorted(c.files):
            e = c.files[path]
            s: dict[str, Any] = {"rfilename": path}
            if blobs:
                s.update(size=e.size, blobId=e.blob_id)
                if e.lfs_oid:
                    s["lfs"] = {"size": e.size, "sha256": e.lfs_oid,
                                "pointerSize": e.pointer_size}
            siblings.append(s)
        out = {"_id": repo.id, "id": repo.id, "author": repo.owner, "sha": c.id,
               "lastModified": iso(c.date), "createdAt": iso(repo.created),
               "private": repo.private, "gated": _gated(repo), "disabled": False,
               "tags": [], "downloads": 0, "likes": 0, "siblings": siblings}
        if repo.type == "space":
            out.update(sdk="static", runtime={"stage": "RUNNING", "hardware": {}})
        self._json(out)

    def refs(self, repo: Repo) -> None:
        def ref(kind: str, name: str, cid: str) -> dict:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": cid}
        self._json({"branches": [ref("heads", n, c) for n, c in sorted(repo.branches.items())],
                    "tags": [ref("tags", n, c) for n, c in sorted(repo.tags.items())],
                    "converts": [], "pullRequests": []})

    # ---------------------------------------------------------------- trees
    def _dir_json(self, c: Commit, path: str, expand: bool, repo: Repo) -> dict:
        out = {"type": "directory", "oid": c.tree_id(path), "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit(repo, c, path + "/")
        return out

    def _file_json(self, e: FileEntry, expand: bool, repo: Repo, c: Commit) -> dict:
        out = e.json()
        if expand:
            out["lastCommit"] = self._last_commit(repo, c, e.path)
        return out

    def _last_commit(self, repo: Repo, head: Commit, path: str) -> dict:
        hub = self.server.app.hub

        def sig(c: Commit) -> list:
            return sorted((p, e.blob_id) for p, e in c.files.items()
                          if p == path or (path.endswith("/") and p.startswith(path)))
        last = head
        for c in hub.history(repo, head.id)[1:]:
            if sig(c) != sig(last):
                break
            last = c
        return {"id": last.id, "title": last.title, "date": iso(last.date)}

    def tree(self, repo: Repo, rev: str, path: str) -> None:
        c = self.server.app.hub.resolve(repo, rev)
        path = path.strip("/")
        if path and path not in c.dirs():
            raise HubError(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        expand = self.query.get("expand", ["false"])[0].lower() in ("true", "1")
        items: list[dict] = []

        def walk(folder: str) -> None:
            subdirs, files = c.children(folder)
            for d in subdirs:
                items.append(self._dir_json(c, d, expand, repo))
                if recursive:
                    walk(d)
            items.extend(self._file_json(e, expand, repo, c) for e in files)
        walk(path)
        self.paged(items, EXPAND_PAGE_SIZE if expand else self.server.app.page_size)

    def paths_info(self, repo: Repo, rev: str) -> None:
        c = self.server.app.hub.resolve(repo, rev)
        body = self._body().decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            form = json.loads(body or "{}")
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = urllib.parse.parse_qs(body)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("true", "1")
        dirs = c.dirs()
        out = []
        for p in paths:
            p = p.strip("/")
            if p in c.files:
                out.append(self._file_json(c.files[p], expand, repo, c))
            elif p in dirs:
                out.append(self._dir_json(c, p, expand, repo))
        self._json(out)

    # ---------------------------------------------------------------- files
    def resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        app = self.server.app
        repo = self.readable(repo_type, repo_id)
        c = app.hub.resolve(repo, rev)
        self.downloadable(repo)
        entry = c.files.get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", "Entry not found")
        headers = {"X-Repo-Commit": c.id, "ETag": f'"{entry.blob_id}"'}
        if entry.lfs_oid:
            loc = f"{app.cdn}/lfs/{entry.lfs_oid}?sig={app.sign(entry.lfs_oid)}"
            self._send(302, b"", {**headers, "Location": loc,
                                  "X-Linked-Etag": f'"{entry.lfs_oid}"',
                                  "X-Linked-Size": str(entry.size)}, ctype="text/plain")
            return
        self._serve_bytes(app.hub.read_regular(entry), entry.size, headers)

def _uq(seg: str) -> str:
    return urllib.parse.unquote(seg)


def _gated(repo: Repo) -> str | bool:
    return "auto" if repo.gated else False


def main(argv: list[str]) -> None:
    """``python -m tests.hub_server ROOT [PORT [CDN_PORT]]``: serve until killed (bench/);
    prints one JSON line with the endpoints. Users/tokens: ``MCPFS_HUB_USERS=name:token,...``."""
    import time
    root = argv[0] if argv else "/tmp/mcpfs-hub"
    srv = HubServer(root, port=int(argv[1]) if len(argv) > 1 else 0,
                    cdn_port=int(argv[2]) if len(argv) > 2 else 0).start()
    for pair in filter(None, os.environ.get("MCPFS_HUB_USERS", "").split(",")):
        name, _, token = pair.partition(":")
        srv.hub.add_user(name, token)
    print(json.dumps({"endpoint": srv.endpoint, "cdn": srv.cdn}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main(sys.argv[1:])


__all__ = ["HubServer", "Hub", "HubError"]
