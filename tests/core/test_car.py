"""CAR v1/v2 against the IPLD spec fixtures (ipld/ipld specs/transport/car/fixture), export
order, hash verification, streaming, and fuzzing of the reader."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mcpfs.backends.ipfs import dag
from mcpfs.backends.ipfs.blockstore import MemoryBlockstore
from mcpfs.backends.ipfs.car import (MAX_SECTION_SIZE, CarReader, CarWriter, export_car,
                                     import_car, iter_dag)
from mcpfs.backends.ipfs.cid import CID, DAG_CBOR, RAW, IDENTITY, encode_varint
from mcpfs.errors import BlockNotFound, InvalidInput

DATA = Path(__file__).parent.parent / "data"
# Both files come from https://github.com/ipld/ipld at 65cef921090a5ecd8963639db5bf5bff31bf8bc3,
# specs/transport/car/fixture/{carv1-basic,carv2-basic}/ (the spec's published fixtures).
CARV1 = (DATA / "carv1-basic.car").read_bytes()
CARV2 = (DATA / "carv2-basic.car").read_bytes()
CARV1_BLOCKS = [  # (cid, block offset, block length) from carv1-basic.json
    ("bafyreihyrpefhacm6kkp4ql6j6udakdit7g3dmkzfriqfykhjw6cad5lrm", 137, 55),
    ("QmNX6Tffavsya4xgBi2VJQnSuqy9GsxongxZZ9uZBqp16d", 228, 97),
    ("bafkreifw7plhl6mofk6sfvhnfh64qmkq73oeqwl6sloru6rehaoujituke", 362, 4),
    ("QmWXZxVQ9yZfhQxLD35eDR8LiMRsYtHxYqTFCBbJoiJVys", 402, 94),
    ("bafkreiebzrnroamgos2adnbpgw5apo3z4iishhbdx77gldnbk57d4zdio4", 533, 4),
    ("QmdwjhxpxzcMsR3qUuj7vUL8pbA7MgR3GAxWi2GLHjsKCT", 572, 47),
    ("bafkreidbxzk2ryxwwtqxem4l3xyyjvw35yu4tcct4cqeqxwo47zhxgxqwq", 656, 4),
    ("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm", 697, 18),
]
CARV1_ROOTS = [CID.decode(CARV1_BLOCKS[0][0]), CID.decode(CARV1_BLOCKS[-1][0])]
CARV2_ROOT = CID.decode("QmfEoLyB5NndqeKieExd1rtJzTduQUPEV8TwAYcUiy3H5Z")
CARV2_DATA = slice(51, 51 + 448)  # dataOffset, dataSize from carv2-basic.json
CARV2_CIDS = ["QmfEoLyB5NndqeKieExd1rtJzTduQUPEV8TwAYcUiy3H5Z",
              "QmczfirA7VEH7YVvKPTPoU69XM3qY4DC39nnTsWd4K3SkM",
              "Qmcpz2FHJD7VAhg1fxFXdYJKePtkx1BsHuCrAgWVnaHMTE",
              "bafkreifuosuzujyf4i6psbneqtwg2fhplc2wxptc5euspa2gn3bwhnihfu",
              "bafkreifc4hca3inognou377hfhvu2xfchn2ltzi7yu27jkaeujqqqdbjju"]


class Unseekable(io.RawIOBase):
    """A pipe-like stream: short reads, no seek; records the largest read asked for."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._buf = io.BytesIO(data)
        self.step = step
        self.largest = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        self.largest = max(self.largest, size)
        return self._buf.read(min(size, self.step) if size >= 0 else self.step)


def test_carv1_fixture_read():
    reader = CarReader(io.BytesIO(CARV1))
    assert reader.version == 1 and reader.roots == CARV1_ROOTS
    blocks = list(reader)
    assert [str(cid) for cid, _ in blocks] == [c for c, _, _ in CARV1_BLOCKS]
    for (cid, block), (_, offset, length) in zip(blocks, CARV1_BLOCKS):
        assert block == CARV1[offset:offset + length]


def test_carv1_export_is_byte_identical():
    store = MemoryBlockstore()
    roots, count = import_car(store, io.BytesIO(CARV1))
    assert (roots, count) == (CARV1_ROOTS, 8)
    out = io.BytesIO()
    assert export_car(store, roots, out) == 8
    assert out.getvalue() == CARV1


@pytest.mark.parametrize("stream", [lambda: io.BytesIO(CARV2), lambda: Unseekable(CARV2)])
def test_carv2_fixture_read(stream):
    reader = CarReader(stream())
    assert reader.version == 2 and reader.roots == [CARV2_ROOT]
    assert [str(cid) for cid, _ in reader] == CARV2_CIDS
    store = MemoryBlockstore()
    assert import_car(store, stream()) == ([CARV2_ROOT], 5)
    out = io.BytesIO()
    export_car(store, [CARV2_ROOT], out)
    assert out.getvalue() == CARV2[CARV2_DATA]  # the inner CARv1, byte for byte


def test_reader_streams_section_by_section():
    stream = Unseekable(CARV1, step=3)
    assert len(list(CarReader(stream))) == 8
    assert stream.largest <= 133  # the largest section, never the whole file


def test_corrupt_block_names_its_cid():
    cid, offset, _ = CARV1_BLOCKS[2]
    bad = bytearray(CARV1)
    bad[offset] ^= 1
    with pytest.raises(InvalidInput, match=cid):
        import_car(MemoryBlockstore(), io.BytesIO(bytes(bad)))


def test_every_truncation_is_invalid_or_a_section_boundary():
    boundaries = {offset + length for _, offset, length in CARV1_BLOCKS} | {100}
    for end in range(len(CARV1)):
        try:
            blocks = list(CarReader(io.BytesIO(CARV1[:end])))
        except InvalidInput:
            assert end not in boundaries
        else:
            assert end in boundaries and len(blocks) < 8


def _header(value) -> bytes:
    encoded = dag.dagcbor_encode(value)
    return encode_varint(len(encoded)) + encoded


def test_empty_roots_are_accepted():
    assert CarReader(io.BytesIO(_header({"roots": [], "version": 1}))).roots == []


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x80", b"\xff" * 12, encode_varint(1 << 40),
    encode_varint(5) + b"\xa0", bytes.fromhex("0aa16776657273696f6e02") + b"\x00" * 10,
    bytes.fromhex("0aa16776657273696f6e03"),
    _header({"roots": [], "version": 1}) + encode_varint(MAX_SECTION_SIZE + 1),
    _header({"roots": [], "version": 1}) + b"\x00",  # zero-length section
    _header({"roots": [], "version": 1}) + b"\x05\x01\x55\x12\x20\x00",  # truncated CID
    _header({"roots": [1], "version": 1}),
    _header({"roots": [], "version": True}),
    _header({"roots": [], "version": 3}),
    _header([]),
])
def test_malformed_cars(data):
    with pytest.raises(InvalidInput):
        list(CarReader(io.BytesIO(data)))


def test_carv2_with_bad_offset():
    bad = bytearray(CARV2)
    bad[11 + 16:11 + 24] = (5).to_bytes(8, "little")
    with pytest.raises(InvalidInput):
        CarReader(io.BytesIO(bytes(bad)))
    bad = bytearray(CARV2)
    bad[11 + 24:11 + 32] = (40).to_bytes(8, "little")  # data size cuts a section
    with pytest.raises(InvalidInput):
        list(CarReader(io.BytesIO(bytes(bad))))


def test_export_order_dedup_identity_and_missing():
    store = MemoryBlockstore()
    leaf_a = dag.block_put(store, b"a")
    leaf_b = dag.block_put(store, b"b")
    ident = CID.of(b"inline", RAW, 1, IDENTITY)
    mid = dag.dag_put(store, dag.dagjson_encode({"x": [leaf_b, leaf_a]}))
    root = dag.dag_put(store, dag.dagjson_encode(
        {"a": leaf_a, "m": mid, "again": mid, "i": ident}))
    order = [cid for cid, _ in iter_dag(store, [root])]
    # keys are walked in DAG-CBOR order: "a", "i", "m", "again"
    assert order == [root, leaf_a, mid, leaf_b]
    out = io.BytesIO()
    export_car(store, [root], out)
    copy = MemoryBlockstore()
    assert import_car(copy, io.BytesIO(out.getvalue())) == ([root], 4)
    assert dag.dag_get(copy, f"{root}/m/x/0", "raw") == b"b"
    store.delete(leaf_b)
    with pytest.raises(BlockNotFound):
        export_car(store, [root], io.BytesIO())
    assert export_car(store, [root], io.BytesIO(), skip_missing=True) == 3


def test_writer_sections():
    out = io.BytesIO()
    cid = CID.of(b"x", DAG_CBOR)
    writer = CarWriter(out, [cid])
    writer.put(cid, b"x")
    reader = CarReader(io.BytesIO(out.getvalue()))
    assert reader.roots == [cid] and list(reader) == [(cid, b"x")]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_blocks_or_invalid_input(data):
    try:
        list(CarReader(io.BytesIO(data)))
    except InvalidInput:
        pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([CARV1, CARV2]), st.integers(0, 714), st.integers(1, 255),
       st.integers(0, 715))
def test_mutated_fixtures_give_blocks_or_invalid_input(car, pos, xor, cut):
    data = bytearray(car[:max(cut, 1)])
    data[min(pos, len(data) - 1)] ^= xor
    try:
        for cid, block in CarReader(io.BytesIO(bytes(data))):
            assert cid.verify(block)
    except InvalidInput:
        pass
