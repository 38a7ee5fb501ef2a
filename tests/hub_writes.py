"""Write routes of tests/hub_server.py's hub origin: repo create/delete, tags and branches,
``/preupload``, the LFS batch and verify endpoints, and the NDJSON ``/commit``.

A mixin of the hub handler: it uses the handler's ``user``/``readable``/``writable`` checks
and the plumbing of tests/hub_http._Base; state changes go through tests/hub_store.Hub
(under its lock).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.hub_http import PREFIX
from tests.hub_store import FileEntry, HubError, Repo


class WriteRoutes:
    """Mixed into the hub handler (``self`` is a tests/hub_http._Base)."""

    server: Any
    query: dict[str, list[str]]
    _body: Any
    _json: Any
    _send: Any
    user: Any
    readable: Any
    writable: Any

    # ---------------------------------------------------------------- repos
    def repos(self, action: str, body: dict) -> None:
        hub = self.server.app.hub
        user = self.user()
        if user is None:
            raise HubError(401, None, "Invalid username or password.")
        owner = body.get("organization") or user
        if owner != user:
            raise HubError(403, None, "You don't have the rights to create repos in " + owner)
        repo_type = body.get("type") or "model"
        repo_id = f"{owner}/{body.get('name')}"
        if action == "create":
            private = body.get("visibility") == "private" or bool(body.get("private"))
            url = f"{self.server.app.endpoint}/{PREFIX[repo_type]}{repo_id}"
            try:
                hub.create_repo(repo_id, repo_type, private=private, author=user)
            except HubError as err:
                err.body["url"] = url  # the Hub names the existing repo in its 409
                raise
            return self._json({"url": f"{self.server.app.endpoint}/{PREFIX[repo_type]}"
                               f"{repo_id}", "name": repo_id, "id": repo_id})
        if action == "delete":
            hub.delete_repo(repo_type, repo_id)
            return self._json({})
        raise HubError(404, None, "Not Found")


    def ref_change(self, repo: Repo, kind: str, name: str, method: str) -> None:
        """POST .../tag/{rev} {"tag"}: tag ``rev``; POST .../branch/{name}
        {"startingPoint"}: a branch; DELETE either."""
        hub = self.server.app.hub
        body = json.loads(self._body() or b"{}")
        refs = repo.tags if kind == "tag" else repo.branches
        if method == "DELETE":
            if refs.pop(name, None) is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {name}")
            return self._json({})
        if kind == "tag":
            target, name = hub.resolve(repo, name).id, body.get("tag", "")
        else:
            target = hub.resolve(repo, body.get("startingPoint") or "main").id
        if name in refs:
            raise HubError(409, None, f"{kind} {name} already exists")
        with hub.lock:
            refs[name] = target
        self._json({})


    def preupload(self, repo: Repo, rev: str) -> None:
        hub = self.server.app.hub
        files = json.loads(self._body()).get("files", [])
        c = hub.resolve(repo, rev)
        out = []
        for f in files:
            sample = base64.b64decode(f.get("sample", ""))
            old = c.files.get(f["path"])
            out.append({"path": f["path"], "shouldIgnore": False,
                        "uploadMode": "lfs" if hub.is_lfs(f["path"], f["size"], sample)
                        else "regular",
                        "oid": (old.lfs_oid or old.blob_id) if old else None})
        self._json({"files": out, "commitOid": c.id})

    def lfs(self, method: str, repo_type: str, repo_id: str, action: list[str]) -> None:
        app = self.server.app
        if method != "POST" or action not in (["batch"], ["verify"]):
            raise HubError(404, None, "Not Found")
        body = json.loads(self._body() or b"{}")
        if action == ["verify"]:
            self.readable(repo_type, repo_id)
            path = app.hub.lfs_path(body.get("oid", ""))
            if path is None or path.stat().st_size != body.get("size"):
                raise HubError(404, None, "object not found")
            return self._json({"success": True})
        repo = self.writable(repo_type, repo_id)
        if body.get("operation") != "upload":
            raise HubError(400, None, "only uploads are served here")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if app.hub.lfs_path(oid) is None:
                item["actions"] = {
                    "upload": {"href": f"{app.cdn}/upload/{oid}?sig={app.sign(oid)}",
                               "expires_at": "2099-01-01T00:00:00Z"},
                    "verify": {"href": f"{app.endpoint}/{PREFIX[repo.type]}{repo.id}.git/"
                               "info/lfs/objects/verify", "header": {}}}
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   ctype="application/vnd.git-lfs+json")

    def commit(self, repo: Repo, branch: str) -> None:
        hub = self.server.app.hub
        if self.query.get("create_pr", ["0"])[0] == "1":
            raise HubError(400, None, "pull requests are not served by this hub")
        if branch not in repo.branches:
            if branch in repo.tags or len(branch) == 40:
                raise HubError(400, None, f"Invalid rev id: {branch} is not a branch")
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        header: dict = {}
        add: dict[str, bytes | FileEntry] = {}
        delete: list[str] = []
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value["content"])
                add[value["path"]] = hub.entry_for(value["path"], data)
            elif key == "lfsFile":
                path = hub.lfs_path(value["oid"])
                if path is None:
                    raise HubError(400, None, f"LFS object {value['oid']} was not uploaded")
                add[value["path"]] = hub.entry_for(value["path"], lfs_oid=value["oid"],
                                                   size=path.stat().st_size)
            elif key == "deletedFile":
                delete.append(value["path"])
            elif key == "deletedFolder":
                delete.append(value["path"].rstrip("/") + "/")
            else:
                raise HubError(400, None, f"unknown commit operation {key!r}")
        c = hub.commit(repo, branch, add, delete, title=header.get("summary", ""),
                       message=header.get("description", ""), author=self.user() or "",
                       parent=header.get("parentCommit"))
        base = f"{self.server.app.endpoint}/{PREFIX[repo.type]}{repo.id}"
        self._json({"success": True, "commitOid": c.id, "commitUrl": f"{base}/commit/{c.id}",
                    "hookOutput": "", "pullRequestUrl": None})


