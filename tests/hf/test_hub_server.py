"""The local hub (tests/hub_server.py) checked by huggingface_hub's own client.

Every test talks to the server only through ``HfApi``, ``hf_hub_download`` and
``snapshot_download`` (Xet off, HF_ENDPOINT = the local hub), so the wire format the mcpfs
backend is later tested against is the one the real client sends and parses.
"""

from __future__ import annotations

import hashlib

import pytest
from huggingface_hub import (CommitOperationAdd, CommitOperationCopy, CommitOperationDelete,
                             HfApi, hf_hub_download, snapshot_download)
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from ..conftest import pattern_bytes
from .conftest import ALICE, BOB


@pytest.fixture
def api(hf_env):
    return HfApi(endpoint=hf_env["endpoint"], token=ALICE)


@pytest.fixture
def repo(api):
    """alice/demo: a regular file, a nested folder and an LFS weight file."""
    api.create_repo("alice/demo")
    api.create_commit("alice/demo", [
        CommitOperationAdd("README.md", b"# demo\n"),
        CommitOperationAdd("config.json", b'{"a": 1}'),
        CommitOperationAdd("sub/deep/notes.txt", b"notes"),
        CommitOperationAdd("model.safetensors", pattern_bytes(3 * 1024 * 1024 + 5)),
    ], commit_message="add files")
    return "alice/demo"


def test_create_repo_and_model_info(api, repo, hub_server):
    info = api.model_info(repo)
    assert info.id == repo and len(info.sha) == 40
    assert {s.rfilename for s in info.siblings} >= {"README.md", "config.json",
                                                     "model.safetensors", "sub/deep/notes.txt"}
    full = api.model_info(repo, files_metadata=True)
    weights = next(s for s in full.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == hashlib.sha256(pattern_bytes(3 * 1024 * 1024 + 5)).hexdigest()
    assert weights.size == 3 * 1024 * 1024 + 5
    # exist_ok on a repo that exists; a second create without it is a 409
    api.create_repo(repo, exist_ok=True)
    with pytest.raises(HfHubHTTPError):
        api.create_repo(repo)
    assert api.model_info(repo, revision=info.sha).sha == info.sha


def test_list_repo_tree_paged_recursive_expand(api, repo, hub_server):
    hub_server.page_size = 2  # force Link paging
    top = list(api.list_repo_tree(repo))
    assert [(type(e).__name__, e.path) for e in top] == [
        ("RepoFolder", "sub"), ("RepoFile", ".gitattributes"), ("RepoFile", "README.md"),
        ("RepoFile", "config.json"), ("RepoFile", "model.safetensors")]
    assert hub_server.count(contains="cursor=") >= 2
    deep = [e.path for e in api.list_repo_tree(repo, recursive=True)]
    assert "sub/deep/notes.txt" in deep and "sub/deep" in deep
    sub = list(api.list_repo_tree(repo, path_in_repo="sub/deep", expand=True))
    assert sub[0].path == "sub/deep/notes.txt" and sub[0].last_commit.title == "add files"
    weights = next(e for e in top if e.path == "model.safetensors")
    assert weights.lfs is not None and weights.lfs.size == weights.size
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="nope"))


def test_paths_info_refs_commits(api, repo):
    infos = api.get_paths_info(repo, ["README.md", "sub", "missing"])
    assert [(type(i), i.path) for i in infos] == [(RepoFile, "README.md"), (RepoFolder, "sub")]
    refs = api.list_repo_refs(repo)
    assert [b.name for b in refs.branches] == ["main"]
    commits = api.list_repo_commits(repo)
    assert [c.title for c in commits] == ["add files", "initial commit"]
    api.create_tag(repo, tag="v1")
    api.create_branch(repo, branch="dev")
    refs = api.list_repo_refs(repo)
    assert [t.name for t in refs.tags] == ["v1"]
    assert [b.name for b in refs.branches] == ["dev", "main"]
    assert api.model_info(repo, revision="v1").sha == commits[0].commit_id


def test_hf_hub_download_regular_and_lfs(api, repo, hf_env, hub_server):
    path = hf_hub_download(repo, "config.json", cache_dir=hf_env["cache"])
    assert open(path, "rb").read() == b'{"a": 1}'
    path = hf_hub_download(repo, "model.safetensors", cache_dir=hf_env["cache"])
    assert open(path, "rb").read() == pattern_bytes(3 * 1024 * 1024 + 5)
    # the LFS file came from the CDN origin, without the hub token
    cdn = [r for r in hub_server.requests if r[0] == "cdn" and r[1] == "GET"]
    assert cdn and not any(r[4] for r in cdn)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "nope.txt", cache_dir=hf_env["cache"])
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision="nobranch", cache_dir=hf_env["cache"])
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/nothere", "config.json", cache_dir=hf_env["cache"])


def test_snapshot_download(api, repo, hf_env):
    folder = snapshot_download(repo, cache_dir=hf_env["cache"])
    assert open(f"{folder}/sub/deep/notes.txt", "rb").read() == b"notes"
    assert open(f"{folder}/model.safetensors", "rb").read() == pattern_bytes(3 * 1024 * 1024 + 5)


def test_upload_delete_copy_commits(api, repo, hub_server):
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="new/hello.txt", repo_id=repo)
    big = pattern_bytes(11 * 1024 * 1024, seed=3)  # above 10 MB: LFS by size
    api.upload_file(path_or_fileobj=big, path_in_repo="big.dat", repo_id=repo)
    assert hub_server.count("cdn", "PUT") == 2  # this and the fixture's safetensors
    api.create_commit(repo, [CommitOperationCopy("big.dat", "moved/big.dat"),
                             CommitOperationCopy("new/hello.txt", "moved/hello.txt"),
                             CommitOperationDelete("big.dat")],
                      commit_message="move")
    names = {e.path for e in api.list_repo_tree(repo, recursive=True)}
    assert {"moved/big.dat", "moved/hello.txt", "new/hello.txt"} <= names
    assert "big.dat" not in names
    api.delete_file("new/hello.txt", repo)
    api.delete_folder("moved", repo)
    names = {e.path for e in api.list_repo_tree(repo, recursive=True)}
    assert not names & {"new", "new/hello.txt", "moved", "moved/big.dat"}
    with pytest.raises(EntryNotFoundError):
        api.delete_file("nope", repo)
    # an out-of-date parent commit is refused
    old = api.list_repo_commits(repo)[-1].commit_id
    with pytest.raises(HfHubHTTPError):
        api.create_commit(repo, [CommitOperationAdd("x", b"x")], commit_message="m",
                          parent_commit=old)


def test_private_and_gated(api, hf_env, hub_server):
    api.create_repo("alice/secret", private=True)
    api.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id="alice/secret")
    anon = HfApi(endpoint=hf_env["endpoint"], token=False)
    bob = HfApi(endpoint=hf_env["endpoint"], token=BOB)
    for other in (anon, bob):
        with pytest.raises(RepositoryNotFoundError):
            other.model_info("alice/secret")
    assert api.model_info("alice/secret").private
    api.create_repo("alice/gated")
    api.upload_file(path_or_fileobj=b"g", path_in_repo="g.txt", repo_id="alice/gated")
    hub_server.hub.repo("model", "alice/gated").gated = True
    assert [e.path for e in bob.list_repo_tree("alice/gated")] == [".gitattributes", "g.txt"]
    with pytest.raises(GatedRepoError):
        hf_hub_download("alice/gated", "g.txt", token=BOB, cache_dir=hf_env["cache"])
    hub_server.hub.repo("model", "alice/gated").allowed.add("bob")
    assert open(hf_hub_download("alice/gated", "g.txt", token=BOB,
                                cache_dir=hf_env["cache"]), "rb").read() == b"g"
    with pytest.raises(HfHubHTTPError):  # bob may not write to alice's repo
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/gated")


def test_datasets_and_spaces_prefixes(api, hf_env):
    api.create_repo("alice/data", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv",
                    repo_id="alice/data", repo_type="dataset")
    assert api.dataset_info("alice/data").id == "alice/data"
    path = hf_hub_download("alice/data", "train.csv", repo_type="dataset",
                           cache_dir=hf_env["cache"])
    assert open(path, "rb").read() == b"a,b\n1,2\n"
    api.create_repo("alice/app", repo_type="space", space_sdk="static")
    api.upload_file(path_or_fileobj=b"<html/>", path_in_repo="index.html",
                    repo_id="alice/app", repo_type="space")
    assert api.space_info("alice/app").id == "alice/app"
    assert [m.id for m in api.list_datasets(author="alice")] == ["alice/data"]
    assert api.whoami()["name"] == "alice"


def test_range_and_rate_limit(api, repo, hf_env, hub_server):
    import httpx
    url = f"{hf_env['endpoint']}/{repo}/resolve/main/model.safetensors"
    with httpx.Client(follow_redirects=True) as client:
        r = client.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == pattern_bytes(3 * 1024 * 1024 + 5)[10:20]
        head = client.head(url, follow_redirects=False)
        assert head.status_code == 302 and head.headers["X-Linked-Size"] == str(3 * 1024 * 1024 + 5)
        r = client.get(f"{hf_env['endpoint']}/{repo}/resolve/main/config.json",
                       headers={"Range": "bytes=100-"})
        assert r.status_code == 416
    hub_server.throttle(1)  # model_info does not retry: the 429 reaches the caller
    with pytest.raises(HfHubHTTPError) as exc:
        api.model_info(repo)
    assert exc.value.response.status_code == 429
    hub_server.throttle(1)  # paginated calls go through http_backoff: Retry-After honoured
    assert len(list(api.list_repo_tree(repo))) == 5
