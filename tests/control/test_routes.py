"""Every kubo route and mcpfs route over the unix socket with httpx, shapes as kubo's."""

from __future__ import annotations

import io
import json
import tarfile
import time

from tests.conftest import pattern_bytes

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # "hello world\n", kubo defaults
EMPTY_DIR = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def ndjson(response):
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def upload(*parts):
    """httpx files= list from (name, bytes | None for a directory)."""
    return [("file", (name, b"" if data is None else data,
                      "application/x-directory" if data is None else "application/octet-stream"))
            for name, data in parts]


def add_tree(control, **params):
    big = pattern_bytes(700_000, 3)
    r = control.client.post("add", params=params, files=upload(
        ("d", None), ("d/a.txt", b"hello world\n"), ("d/sub", None), ("d/sub/big.bin", big)))
    assert r.status_code == 200, r.text
    return ndjson(r), big


def test_version_and_id(control):
    v = control.client.post("version").json()
    assert set(v) >= {"Version", "Commit", "Repo", "System", "Golang"}
    ident = control.client.post("id").json()
    assert ident["ID"].startswith("12D3KooW") and ident["PublicKey"]
    assert control.client.post("id").json()["ID"] == ident["ID"]  # stable key


def test_error_shapes(control):
    r = control.client.post("cat", params={"arg": "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEX"})
    assert r.status_code == 500
    body = r.json()
    assert body["Code"] == 0 and body["Type"] == "error" and "not found" in body["Message"]
    r = control.client.post("cat")
    assert r.status_code == 400 and r.json() == {
        "Message": 'argument "ipfs-path" is required', "Code": 1, "Type": "error"}
    r = control.client.post("cat", params={"arg": HELLO_V0, "offset": "x"})
    assert r.status_code == 400 and r.json()["Code"] == 1 and "offset" in r.json()["Message"]
    assert control.client.post("cat", params={"arg": "not-a-cid"}).json()["Type"] == "error"
    assert control.client.post("nope").status_code == 404
    assert control.client.get("version").status_code == 405


def test_add_cat_get(control):
    lines, big = add_tree(control)
    assert lines[0] == {"Name": "d/a.txt", "Hash": HELLO_V0, "Size": "20"}
    assert [line["Name"] for line in lines] == ["d/a.txt", "d/sub/big.bin", "d/sub", "d"]
    root = lines[-1]["Hash"]
    r = control.client.post("cat", params={"arg": f"{root}/sub/big.bin"})
    assert r.content == big and r.headers["X-Content-Length"] == str(len(big))
    r = control.client.post("cat", params={"arg": f"/ipfs/{root}/a.txt", "offset": 6,
                                           "length": 5})
    assert r.content == b"world"
    r = control.client.post("cat", params={"arg": root})
    assert r.status_code == 500 and "directory" in r.json()["Message"]
    r = control.client.post("get", params={"arg": root})
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert tar.extractfile(f"{root}/sub/big.bin").read() == big
        assert tar.getmember(root).isdir()
    pins = control.client.post("pin/ls", params={"type": "recursive"}).json()
    assert pins == {"Keys": {root: {"Type": "recursive"}}}


def test_add_options(control):
    data = b"hello world\n"
    r = control.client.post("add", params={"cid-version": 1, "pin": "false"},
                            files=upload(("h", data)))
    line = ndjson(r)[0]
    assert line["Hash"].startswith("bafkrei")  # raw leaves implied by CIDv1
    assert control.client.post("pin/ls").json() == {"Keys": {}}
    r = control.client.post("add", params={"cid-version": 1, "raw-leaves": "false",
                                           "only-hash": "true"}, files=upload(("h", b"zz")))
    cid = ndjson(r)[0]["Hash"]
    assert cid.startswith("bafybei")
    assert control.client.post("block/stat", params={"arg": cid}).status_code == 500
    big = pattern_bytes(100_000)
    plain = ndjson(control.client.post("add", params={"chunker": "size-1000"},
                                       files=upload(("b", big))))[0]["Hash"]
    trickle = ndjson(control.client.post("add", params={"chunker": "size-1000", "trickle": "1"},
                                         files=upload(("b", big))))[0]["Hash"]
    assert plain != trickle
    wrapped = ndjson(control.client.post("add", params={"wrap-with-directory": "true"},
                                         files=upload(("x.txt", data))))
    assert wrapped[-1]["Name"] == "" and wrapped[0]["Hash"] == HELLO_V0
    r = control.client.post("add", params={"chunker": "rabin"}, files=upload(("b", data)))
    assert r.status_code == 500 and "chunker" in r.json()["Message"]
    r = control.client.post("add", content=b"not multipart")
    assert r.status_code == 500 and r.json()["Type"] == "error"
    unnamed = ndjson(control.client.post("add", files=[("file", ("", data))]))[0]
    assert unnamed == {"Name": HELLO_V0, "Hash": HELLO_V0, "Size": "20"}


def test_pins(control):
    lines, _ = add_tree(control, pin="false")
    root, leaf = lines[-1]["Hash"], lines[0]["Hash"]
    assert control.client.post("pin/add", params={"arg": root}).json() == {"Pins": [root]}
    assert control.client.post("pin/add", params={"arg": leaf, "recursive": "false"}
                               ).json() == {"Pins": [leaf]}
    keys = control.client.post("pin/ls").json()["Keys"]
    assert keys[root] == {"Type": "recursive"} and keys[leaf] == {"Type": "direct"}
    assert any(v == {"Type": "indirect"} for v in keys.values())
    streamed = ndjson(control.client.post("pin/ls", params={"stream": "true",
                                                            "type": "recursive"}))
    assert streamed == [{"Cid": root, "Type": "recursive"}]
    one = control.client.post("pin/ls", params={"arg": root}).json()
    assert one == {"Keys": {root: {"Type": "recursive"}}}
    r = control.client.post("pin/ls", params={"arg": EMPTY_DIR})
    assert r.status_code == 500
    assert control.client.post("pin/rm", params={"arg": root}).json() == {"Pins": [root]}
    r = control.client.post("pin/rm", params={"arg": root})
    assert r.status_code == 500 and "not pinned" in r.json()["Message"]


def test_blocks(control):
    r = control.client.post("block/put", files=upload(("", b"raw bytes")))
    put = r.json()
    assert put["Key"].startswith("bafkrei") and put["Size"] == 9
    cid = put["Key"]
    assert control.client.post("block/get", params={"arg": cid}).content == b"raw bytes"
    assert control.client.post("block/stat", params={"arg": cid}).json() == put
    rm = ndjson(control.client.post("block/rm", params={"arg": [cid, cid]}))
    assert rm[0] == {"Hash": cid} and "Error" in rm[1]
    pinned = control.client.post("block/put", params={"pin": "true"},
                                 files=upload(("", b"keep"))).json()["Key"]
    assert "pinned" in ndjson(control.client.post("block/rm", params={"arg": pinned}))[0]["Error"]


def test_dag(control):
    r = control.client.post("dag/put", files=upload(("", b'{"a": {"b": [1, 2]}}')))
    cid = r.json()["Cid"]["/"]
    assert cid.startswith("bafyrei")
    got = control.client.post("dag/get", params={"arg": f"{cid}/a/b"}).content
    assert json.loads(got) == [1, 2]
    res = control.client.post("dag/resolve", params={"arg": f"{cid}/a/b"}).json()
    assert res == {"Cid": {"/": cid}, "RemPath": "a/b"}
    lines, big = add_tree(control, pin="false")
    root = lines[-1]["Hash"]
    car = control.client.post("dag/export", params={"arg": root}).content
    control.client.post("pin/add", params={"arg": cid})
    time.sleep(0.2)  # GC keeps blocks written in its last 100 ms (gc.MTIME_SLACK_NS)
    assert control.client.post("repo/gc").status_code == 200
    assert control.client.post("block/stat", params={"arg": root}).status_code == 500
    r = control.client.post("dag/import", params={"stats": "true"}, files=upload(("x.car", car)))
    out = ndjson(r)
    assert out[0] == {"Root": {"Cid": {"/": root}, "PinErrorMsg": ""}}
    assert out[1]["Stats"]["BlockCount"] > 3 and out[1]["Stats"]["BlockBytesCount"] > len(big)
    assert control.client.post("cat", params={"arg": f"{root}/sub/big.bin"}).content == big
    r = control.client.post("dag/import", files=upload(("x.car", b"garbage")))
    assert r.status_code == 500


def test_gc(control):
    lines, _ = add_tree(control, pin="false")
    time.sleep(0.2)
    removed = ndjson(control.client.post("repo/gc"))
    assert len(removed) >= 4 and all(set(x) == {"Key"} and "/" in x["Key"] for x in removed)
    assert ndjson(control.client.post("repo/gc")) == []


def test_files(control):
    c = control.client
    assert c.post("files/mkdir", params={"arg": "/a/b", "parents": "true"}).status_code == 200
    r = c.post("files/write", params={"arg": "/a/b/f", "create": "true"},
               files=upload(("", b"0123456789")))
    assert r.status_code == 200, r.text
    c.post("files/write", params={"arg": "/a/b/f", "offset": 5}, files=upload(("", b"XY")))
    assert c.post("files/read", params={"arg": "/a/b/f"}).content == b"01234XY789"
    assert c.post("files/read", params={"arg": "/a/b/f", "offset": 2, "count": 3}
                  ).content == b"234"
    assert c.post("files/read", params={"arg": "/missing"}).status_code == 500
    c.post("files/mv", params={"arg": ["/a/b/f", "/a/g"]})
    ls = c.post("files/ls", params={"arg": "/a", "long": "true"}).json()
    assert [e["Name"] for e in ls["Entries"]] == ["b", "g"]
    assert ls["Entries"][1]["Type"] == 0 and ls["Entries"][1]["Size"] == 10
    st = c.post("files/stat", params={"arg": "/a/g"}).json()
    assert set(st) >= {"Hash", "Size", "CumulativeSize", "Blocks", "Type"}
    assert st["Type"] == "file" and st["Size"] == 10
    c.post("files/cp", params={"arg": [f"/ipfs/{st['Hash']}", "/copy"]})
    assert c.post("files/read", params={"arg": "/copy"}).content == b"01234XY789"
    r = c.post("files/rm", params={"arg": "/a"})
    assert r.status_code == 500 and r.json()["Type"] == "error"
    c.post("files/rm", params={"arg": ["/a", "/copy"], "recursive": "true"})
    assert c.post("files/ls").json()["Entries"] == []
    assert c.post("files/flush").json() == {"Cid": EMPTY_DIR}
    assert c.post("files/mv", params={"arg": "/x"}).status_code == 400


def test_stats_and_metrics(control):
    control.stats.record("mfs", "read", 4096, 0.002, False)
    control.stats.record("mfs", "read", 0, 0.5, True)
    control.stats.cache("mfs", True)
    control.client.post("version")
    snap = control.client.post("mcpfs/stats").json()
    read = snap["Mounts"]["mfs"]["Ops"]["read"]
    assert read["Count"] == 2 and read["Bytes"] == 4096 and read["Errors"] == 1
    assert read["Latency"]["p50"] == 0.002 and read["Latency"]["p99"] == 0.5
    assert snap["Mounts"]["mfs"]["Cache"] == {"Hits": 1, "Misses": 0}
    assert snap["Mounts"]["control"]["Ops"]["version"]["Count"] == 1
    text = control.client.get("http://localhost/metrics").text
    assert 'mcpfs_ops_total{mount="mfs",op="read"} 2.0' in text
    assert "mcpfs_op_seconds_bucket" in text and 'mcpfs_cache_lookups_total' in text
