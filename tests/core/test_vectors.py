"""Root CIDs against reference vectors from independent implementations (kubo, the JS importer).

tests/data/unixfs.json is ../shared/vectors/unixfs.json (kubo 0.22 and ipfs-unixfs-importer);
tests/data/importer_vectors.json is made by tools/vectors/ (trickle, deep balanced trees,
directories, HAMT shards, wrapping), see its "about".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcpfs.backends.ipfs.add import Adder
from mcpfs.backends.ipfs.blockstore import MemoryBlockstore
from mcpfs.backends.ipfs.importer import ImportParams, import_bytes, params_for
from tests.conftest import pattern_bytes

DATA = Path(__file__).parent.parent / "data"

SHARED_COLUMNS = {
    "kubo-default (cidv0, 256KiB chunks, balanced 174, dag-pb leaves)": params_for(),
    "--cid-version=1 (implies raw leaves)": params_for(cid_version=1),
    "--cid-version=1 --raw-leaves=false": params_for(cid_version=1, raw_leaves=False),
    "--chunker=size-1048576": params_for(chunk_size=1048576),
    "--cid-version=1 --chunker=size-65536": params_for(cid_version=1, chunk_size=65536),
    "unixfs-v1-2025 profile (cidv1, raw leaves, 1MiB chunks, 1024 links)":
        params_for("unixfs-v1-2025"),
}


def _shared_cells():
    vectors = json.loads((DATA / "unixfs.json").read_text())
    for entry in vectors["files"]:
        for column, cid in entry["cids"].items():
            yield pytest.param(entry["input"], column, cid, id=f"{entry['name']}-{column[:28]}")


@pytest.mark.parametrize("expr,column,expected", list(_shared_cells()))
def test_shared_unixfs_vectors(expr, column, expected):
    assert column in SHARED_COLUMNS, f"unknown column {column}: add its parameters"
    data = eval(expr, {"__builtins__": {"bytes": bytes, "range": range}})  # noqa: S307
    assert str(import_bytes(MemoryBlockstore(), data, SHARED_COLUMNS[column]).cid) == expected


def _params(p: dict) -> ImportParams:
    return ImportParams(
        cid_version=p["cid_version"], raw_leaves=p["raw_leaves"], chunk_size=p["chunk_size"],
        layout=p["layout"], max_links=p["max_links"], hamt_threshold=p["hamt_threshold"],
        hamt_estimation="block" if p.get("profile") == "unixfs-v1-2025" else "links")


def _expand_entries(spec: dict) -> list[dict]:
    entries = list(spec.get("entries", []))
    for gen in spec.get("gen", []):
        for i in range(gen["count"]):
            name = gen.get("name_prefix", "") + str(i).zfill(gen.get("name_width", 0)) \
                + gen.get("name_suffix", "")
            size = i % gen["size_mod"] if gen.get("size_mod", 0) > 0 else 0
            entries.append({"path": gen.get("dir", "") + name, "size": size,
                            "seed": i + gen.get("seed_add", 0)})
    return entries


def _materialize(spec: dict, root: Path) -> None:
    root.mkdir(parents=True)
    for entry in _expand_entries(spec):
        path = root / entry["path"]
        if entry.get("dir"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pattern_bytes(entry["size"], entry["seed"]))


def _cases():
    vectors = json.loads((DATA / "importer_vectors.json").read_text())
    for case in vectors["cases"]:
        marks = []
        if case.get("kubo_equivalent") is False:
            marks.append(pytest.mark.skip(reason="JS-only behaviour: " + case.get("note", "")))
        yield pytest.param(case, id=case["name"], marks=marks)


@pytest.mark.parametrize("case", list(_cases()))
def test_importer_vectors(case, tmp_path):
    params = _params(case["params"])
    spec = case["input"]
    adder = Adder(MemoryBlockstore(), params, hidden=True)
    if spec["type"] == "file":
        path = tmp_path / spec.get("name", "input")
        path.write_bytes(pattern_bytes(spec["size"], spec["seed"]))
    else:
        path = tmp_path / "root"
        _materialize(spec, path)
    events = list(adder.add_many([str(path)], recursive=True, wrap=case["params"]["wrap"]))
    assert str(events[-1].root.cid) == case["root"]
