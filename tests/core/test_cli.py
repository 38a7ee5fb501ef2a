"""The CLI as a user runs it: a real `mcpfs` process per command, MCPFS_HOME isolated.

Checks kubo's output shapes and that every failure is one line on stderr with a non-zero
exit code and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import pattern_bytes


@pytest.fixture
def run(mcpfs_home, tmp_path):
    def _run(*args, input=None, ok=True):
        proc = subprocess.run([sys.executable, "-m", "mcpfs", *args], input=input,
                              capture_output=True, cwd=tmp_path, timeout=120,
                              env={**os.environ, "MCPFS_HOME": str(mcpfs_home)})
        if ok:
            assert proc.returncode == 0, proc.stderr.decode()
        else:
            assert proc.returncode != 0
            err = proc.stderr.decode()
            assert "Traceback" not in err
            assert err.count("\n") == 1 and err.startswith("Error: "), err
        return proc
    return _run


def test_add_prints_kubo_lines_and_cat_get_round_trip(run, tmp_path):
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello world\n")
    (src / "sub" / "big.bin").write_bytes(pattern_bytes(700_000, 3))
    (src / ".hidden").write_bytes(b"skipped")
    lines = run("add", "-r", str(src)).stdout.decode().splitlines()
    assert lines[0] == "added QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o d/a.txt"
    assert [line.split()[2] for line in lines] == ["d/a.txt", "d/sub/big.bin", "d/sub", "d"]
    root = lines[-1].split()[1]
    assert run("cat", f"{root}/sub/big.bin").stdout == pattern_bytes(700_000, 3)
    assert run("cat", f"/ipfs/{root}/a.txt", "--offset", "6", "--length", "5").stdout == b"world"
    run("get", root, "-o", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "big.bin").read_bytes() == pattern_bytes(700_000, 3)
    assert not (tmp_path / "out" / ".hidden").exists()
    run("get", root, "--archive", "-o", str(tmp_path / "x.tar"))
    with tarfile.open(tmp_path / "x.tar") as tar:
        assert tar.extractfile(f"{root}/sub/big.bin").read() == pattern_bytes(700_000, 3)
    # -Q prints only the root; -w wraps and prints the wrapper with an empty name
    assert run("add", "-Q", "-r", str(src)).stdout.decode().strip() == root
    wrapped = run("add", "-w", str(src / "a.txt")).stdout.decode().splitlines()
    assert wrapped[-1].startswith("added ") and wrapped[-1].endswith(" ")
    assert run("pin", "ls", "-t", "recursive", "-q").stdout.decode().split().count(root) == 1


def test_add_flags_match_vectors(run):
    hello = b"hello world\n"
    assert run("add", "-Q", "-n", "--cid-version", "1", input=hello).stdout.decode().strip() \
        == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    assert run("add", "-Q", "-n", "--cid-version", "1", "--no-raw-leaves",
               input=hello).stdout.decode().strip() \
        == "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
    data = bytes(i % 251 for i in range(262145))
    assert run("add", "-Q", "-n", "--chunker", "size-1048576", input=data).stdout.decode().strip() \
        == "QmZj1obpYMNNWsZLrhnjcZsxHrTh1ARWNcnNRRYRbP6gBn"
    assert run("add", "-Q", "-n", "--profile", "unixfs-v1-2025", input=data).stdout.decode() \
        .strip() == "bafkreidkcavdl3yt2jt36sd4cuqnqk2p6vaxq66iykemz6mk527hnbqbni"


def test_only_hash_writes_nothing(run, mcpfs_home):
    run("add", "-n", input=b"nothing stored")
    blocks = mcpfs_home / "state" / "ipfs" / "blocks"
    assert not blocks.exists() or not any(p.suffix == ".data" for p in blocks.rglob("*"))


def test_pin_gc_block_dag_car(run, tmp_path):
    keep = run("add", "-Q", input=b"keep me").stdout.decode().strip()
    drop = run("add", "-Q", "--no-pin", input=b"drop me").stdout.decode().strip()
    removed = run("repo", "gc").stdout.decode()
    assert drop in removed or "removed" in removed
    assert run("cat", keep).stdout == b"keep me"
    run("cat", drop, ok=False)
    run("pin", "rm", keep)
    run("pin", "rm", keep, ok=False)  # not pinned any more
    blk = run("block", "put", input=b"raw block").stdout.decode().strip()
    assert json.loads(json.dumps(run("block", "stat", blk).stdout.decode().split()[1:]))
    assert run("block", "get", blk).stdout == b"raw block"
    node = run("dag", "put", input=b'{"a":[1,{"b":"c"}]}').stdout.decode().strip()
    assert run("dag", "get", f"{node}/a/1").stdout == b'{"b":"c"}'
    assert run("dag", "get", node).stdout == b'{"a":[1,{"b":"c"}]}'
    run("car", "export", node, "-o", str(tmp_path / "n.car"))
    run("block", "rm", node)
    run("dag", "get", node, ok=False)
    out = run("car", "import", str(tmp_path / "n.car")).stdout.decode()
    assert node in out
    assert run("dag", "get", f"{node}/a/0").stdout == b"1"


def test_files_commands(run):
    run("files", "mkdir", "-p", "/a/b")
    run("files", "write", "--create", "/a/b/f", input=b"0123456789")
    run("files", "write", "--offset", "5", "/a/b/f", input=b"XY")
    assert run("files", "read", "/a/b/f").stdout == b"01234XY789"
    run("files", "mv", "/a/b/f", "/a/g")
    assert run("files", "ls", "/a").stdout.decode().split() == ["b", "g"]
    stat = run("files", "stat", "/a/g").stdout.decode().splitlines()
    assert stat[1:] == ["Size: 10", "CumulativeSize: 18", "ChildBlocks: 0", "Type: file"]
    same = run("add", "-n", "-Q", input=b"01234XY789").stdout.decode().strip()
    assert stat[0] == same
    run("files", "rm", "/a", ok=False)  # a directory needs -r
    run("files", "rm", "-r", "/a")
    assert run("files", "ls", "/").stdout == b""


@pytest.mark.parametrize("args", [
    ["cat", "not-a-cid"],
    ["cat", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"],  # not in the repo
    ["add", "/no/such/file"],
    ["add", "--chunker", "rabin", "-n"],
    ["add", "--profile", "nope", "-n"],
    ["files", "read", "/missing"],
    ["files", "mkdir", "/x/y/z"],
    ["dag", "get", "bafyreiemcxvgxjlo44cx4enwllrea44j2d6xxicjfz3hyysrxuexodgdhu"],
    ["car", "import", "/etc/hostname"],
    ["pin", "add", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"],
])
def test_errors_are_one_line(run, args):
    run(*args, input=b"", ok=False)


def test_add_output_order_in_hamt_directory_is_hash_order(run, tmp_path):
    """kubo prints directories post-order, children in listing order: hash order in a HAMT."""
    from mcpfs.backends.ipfs.hamt import hash_name

    top = tmp_path / "top"
    names = [f"{'d' * 120}{i:04d}" for i in range(1700)]  # ~1700*(124+34) > 256 KiB: shards
    for name in names[:1700]:
        (top / name).mkdir(parents=True)
    lines = run("add", "-r", "-n", str(top)).stdout.decode().splitlines()
    printed = [line.split(" ", 2)[2].split("/", 1)[1] for line in lines[:-1]]
    assert printed == sorted(names, key=hash_name)
    assert lines[-1].endswith(" top")


@pytest.mark.parametrize("args", [["stats"], ["stats", "--json"]])
def test_stats_without_a_daemon_is_one_line_exit_1(run, args):
    proc = run(*args, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "Error: no daemon is running (start one with mcpfs mount)\n"
    assert proc.stdout == b""
