"""CIDs, DAG-PB and UnixFS codecs: known encodings, round trips, and fuzzing for clean errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mcpfs.backends.ipfs import dagpb, unixfs
from mcpfs.backends.ipfs.cid import CID, DAG_CBOR, DAG_PB, RAW, decode_varint, encode_varint
from mcpfs.errors import InvalidInput

V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
V1_RAW = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def test_cid_forms():
    cid = CID.decode(V0)
    assert (cid.version, cid.codec) == (0, DAG_PB)
    assert str(cid) == V0
    v1 = cid.to_v1()
    assert str(v1) == "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
    assert v1.to_v0() == cid
    raw = CID.decode(V1_RAW)
    assert raw.codec == RAW and raw.verify(b"hello world\n")
    # the same CID in every supported base parses back to itself
    for base in ("base32", "base58btc", "base36"):
        assert CID.decode(raw.encode(base)) == raw
    assert raw.encode("base36") == "k2cwuecvan95uqzq14dj3a18wx6av6tgr73nxvopxn3j5kvyr0apys7b"
    assert CID.decode(V1_RAW.upper().replace("B", "B", 1)) == raw  # case-insensitive base32
    assert CID.from_bytes(bytes(raw)) == raw


@pytest.mark.parametrize("bad", ["", "Qm", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5", "bafy",
                                 "zzzz", "b" + "a" * 60, "not a cid", "/ipfs/", "k!!!", "Qm0OIl"
                                 + "1" * 40])
def test_bad_cids_are_invalid_input(bad):
    with pytest.raises(InvalidInput):
        CID.decode(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_cid_binary_decoder_never_crashes(raw):
    try:
        cid = CID.from_bytes(raw)
    except InvalidInput:
        return
    assert bytes(cid) == raw
    assert CID.decode(str(cid)) == cid


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_cid_text_decoder_never_crashes(text):
    try:
        CID.decode(text)
    except InvalidInput:
        pass


@given(st.integers(0, 2**63 - 1))
def test_varint_round_trip(n):
    assert decode_varint(encode_varint(n)) == (n, len(encode_varint(n)))


def test_varint_rejects_non_minimal():
    with pytest.raises(InvalidInput):
        decode_varint(b"\x80\x00")


def test_dagpb_known_encoding():
    # hello world\n as a kubo default leaf: PBNode{Data: UnixFS{File, Data, filesize}}
    leaf = dagpb.PBNode(data=unixfs.UnixFSData(unixfs.FILE, data=b"hello world\n",
                                               filesize=12).encode()).encode()
    assert leaf.hex() == "0a120802120c" + b"hello world\n".hex() + "180c"
    assert str(CID.of(leaf, DAG_PB, 0)) == V0
    node = dagpb.decode(leaf)
    assert unixfs.decode(node.data).data == b"hello world\n"


link_st = st.builds(dagpb.PBLink, cid=st.builds(lambda d: CID.of(d, RAW), st.binary(max_size=8)),
                    name=st.one_of(st.none(), st.text(max_size=10)),
                    tsize=st.one_of(st.none(), st.integers(0, 2**40)))


@given(st.lists(link_st, max_size=6), st.one_of(st.none(), st.binary(max_size=40)))
def test_dagpb_round_trip(links, data):
    node = dagpb.PBNode(links, data)
    assert dagpb.decode(node.encode(sort_links=False)) == node


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_dagpb_and_unixfs_decoders_never_crash(raw):
    for decoder in (dagpb.decode, unixfs.decode):
        try:
            decoder(raw)
        except InvalidInput:
            pass


def test_unixfs_mode_mtime_round_trip():
    msg = unixfs.UnixFSData(unixfs.FILE, data=b"x", filesize=1, mode=0o644, mtime=(-5, 123))
    assert unixfs.decode(msg.encode()) == msg


def test_codec_numbers():
    assert CID.of(b"{}", DAG_CBOR).codec_name == "dag-cbor"
