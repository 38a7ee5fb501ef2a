"""The CLI through a running daemon: same output and exit codes as without one.

Each flow runs twice, in two homes: one with a control server running (the CLI must use
it: the server's request counters grow), one without (the CLI opens the repo itself).
"""

from __future__ import annotations

import socket
import tarfile

import pytest

from tests.conftest import pattern_bytes


def served_ops(control) -> dict:
    return control.stats.snapshot()["Mounts"].get("control", {}).get("Ops", {})


@pytest.fixture
def both(control, run_cli, tmp_path):
    """run(*args) -> (daemon result, local result); asserts equal stdout and exit code."""
    local_home = tmp_path / "local-home"

    def _run(*args, input=None, ok=True, compare=True):
        remote = run_cli(*args, input=input, ok=ok)
        local = run_cli(*args, input=input, ok=ok, home=local_home)
        if compare:
            assert remote.stdout == local.stdout, (args, remote.stdout, local.stdout)
            assert remote.returncode == local.returncode
        if not ok:
            assert remote.stderr == local.stderr, (remote.stderr, local.stderr)
        return remote, local
    return _run


def test_add_cat_get_pin_through_daemon(control, both, run_cli, tmp_path):
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello world\n")
    (src / "sub" / "big.bin").write_bytes(pattern_bytes(700_000, 3))
    (src / ".hidden").write_bytes(b"skipped")
    (src / "link").symlink_to("a.txt")
    remote, _ = both("add", "-r", str(src))
    assert served_ops(control)["add"]["Count"] == 1
    lines = remote.stdout.decode().splitlines()
    assert lines[0] == "added QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o d/a.txt"
    root = lines[-1].split()[1]
    both("add", "-H", "-r", "-w", "--cid-version", "1", "-s", "size-1000", str(src))
    both("add", "-Q", "--trickle", str(src / "sub" / "big.bin"))
    both("add", input=b"from stdin")
    both("add", str(src), ok=False)  # a directory without -r
    both("add", str(tmp_path / "missing"), ok=False)
    assert both("cat", f"{root}/sub/big.bin")[0].stdout == pattern_bytes(700_000, 3)
    both("cat", f"/ipfs/{root}/a.txt", "--offset", "6", "--length", "5")
    both("cat", root, ok=False)
    both("cat", "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEX", ok=False)
    assert served_ops(control)["cat"]["Count"] == 4
    run_cli("get", root, "-o", str(tmp_path / "out"))
    assert served_ops(control)["get"]["Count"] == 1
    assert (tmp_path / "out" / "sub" / "big.bin").read_bytes() == pattern_bytes(700_000, 3)
    assert (tmp_path / "out" / "link").readlink().as_posix() == "a.txt"
    assert not (tmp_path / "out" / ".hidden").exists()
    run_cli("get", root, "-o", str(tmp_path / "out"), ok=False)  # the symlink exists
    run_cli("get", root, "-a", "-o", str(tmp_path / "x.tar"))
    run_cli("get", root, "-a", "-o", str(tmp_path / "y.tar"), home=tmp_path / "local-home")
    assert (tmp_path / "x.tar").read_bytes() == (tmp_path / "y.tar").read_bytes()
    with tarfile.open(tmp_path / "x.tar") as tar:
        assert tar.extractfile(f"{root}/sub/big.bin").read() == pattern_bytes(700_000, 3)
    both("pin", "ls", "-t", "recursive")
    both("pin", "ls", root)
    both("pin", "add", "--direct", f"{root}/a.txt")
    both("pin", "ls", "-q")
    both("pin", "rm", root)
    both("pin", "rm", root, ok=False)
    both("repo", "gc", "-q")
    assert "repo/gc" in served_ops(control)


def test_block_dag_car_through_daemon(control, both, tmp_path):
    cid = both("block", "put", input=b"raw bytes")[0].stdout.decode().strip()
    assert both("block", "get", cid)[0].stdout == b"raw bytes"
    both("block", "stat", cid)
    both("block", "rm", cid)
    both("block", "rm", cid, ok=False)
    node = both("dag", "put", "--pin", input=b'{"a": {"b": [1, 2]}}')[0].stdout.decode().strip()
    both("dag", "get", f"{node}/a")
    both("dag", "resolve", f"{node}/a/b")
    both("dag", "export", node)
    (tmp_path / "x.car").write_bytes(both("car", "export", node)[0].stdout)
    both("car", "import", str(tmp_path / "x.car"))
    both("dag", "import", "--no-pin-roots", str(tmp_path / "x.car"))
    both("dag", "get", "bafyreigarbage", ok=False)
    for op in ("block/put", "block/get", "dag/put", "dag/export", "dag/import"):
        assert op in served_ops(control), op


def test_files_through_daemon(control, both):
    both("files", "mkdir", "-p", "/a/b")
    both("files", "write", "--create", "/a/b/f", input=b"0123456789")
    both("files", "write", "--offset", "5", "/a/b/f", input=b"XY")
    assert both("files", "read", "/a/b/f")[0].stdout == b"01234XY789"
    both("files", "read", "-o", "2", "-n", "3", "/a/b/f")
    both("files", "mv", "/a/b/f", "/a/g")
    both("files", "ls", "/a")
    both("files", "ls", "-l", "/a")
    both("files", "stat", "/a/g")
    both("files", "stat", "--hash", "/a")
    both("files", "cp", "/a/g", "/copy")
    both("files", "rm", "/a", ok=False)
    both("files", "read", "/missing", ok=False)
    both("files", "rm", "-r", "/a", "/copy")
    both("files", "flush")
    assert served_ops(control)["files/write"]["Count"] == 2


def test_stale_socket_falls_back_to_the_local_repo(mcpfs_home, run_cli):
    from mcpfs.config import paths
    sock_path = paths().ensure().socket_path
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(sock_path))
    dead.close()
    out = run_cli("add", "-Q", input=b"hello world\n").stdout.decode().strip()
    assert out == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert run_cli("cat", out).stdout == b"hello world\n"
