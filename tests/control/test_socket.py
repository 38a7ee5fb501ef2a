"""The socket itself: permissions, other uids refused, stale/live sockets, curl, TCP, and
``serve`` run in a trio nursery as the daemon runs it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import httpx
import pytest
import trio

from mcpfs.backends.ipfs.node import Repo
from mcpfs.config import paths
from mcpfs.control.server import bind_unix, serve
from mcpfs.errors import McpfsError
from tests.control.conftest import ServerThread

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


def test_socket_and_dir_permissions(control):
    assert stat.S_IMODE(os.stat(control.socket.parent).st_mode) == 0o700
    st = os.stat(control.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
def test_peer_of_another_uid_is_refused(control, caplog):
    # Open the file permissions so that only the SO_PEERCRED check stands in the way.
    os.chmod(control.socket.parent, 0o755)
    os.chmod(control.socket, 0o777)
    for parent in control.socket.parents:
        if parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    script = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(b'POST /api/v0/version HTTP/1.1\\r\\nHost: localhost\\r\\n"
        "Content-Length: 0\\r\\n\\r\\n')\n"
        "    data = s.recv(100)\n"
        "except (BrokenPipeError, ConnectionResetError):\n    data = b''\n"
        "print(repr(data))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(control.socket)],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip() == b"b''"  # closed without an answer
    assert "refused a connection from uid 65534" in caplog.text
    assert control.client.post("version").status_code == 200  # our uid still served


def test_live_socket_is_not_stolen_and_stale_one_is_replaced(control, tmp_path):
    with pytest.raises(McpfsError, match="already serving"):
        bind_unix(control.socket)
    stale = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # a socket file nobody listens on
    sock = bind_unix(stale)
    sock.close()
    assert stat.S_IMODE(os.stat(stale).st_mode) == 0o600


def test_curl_over_the_unix_socket(control, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello world\n")
    base = "http://localhost/api/v0"
    out = subprocess.run(["curl", "-sS", "--unix-socket", str(control.socket), "-X", "POST",
                          "-F", f"file=@{src}", f"{base}/add"],
                         capture_output=True, check=True).stdout
    assert json.loads(out) == {"Name": "hello.txt", "Hash": HELLO_V0, "Size": "20"}
    out = subprocess.run(["curl", "-sS", "--unix-socket", str(control.socket), "-X", "POST",
                          f"{base}/cat?arg={HELLO_V0}"], capture_output=True, check=True).stdout
    assert out == b"hello world\n"
    proc = subprocess.run(["curl", "-sS", "-w", "%{http_code}", "--unix-socket",
                           str(control.socket), "-X", "POST", f"{base}/pin/ls?arg=bad"],
                          capture_output=True, check=True)
    assert proc.stdout.endswith(b"500") and b'"Type":"error"' in proc.stdout


def test_tcp_listener_is_off_by_default_and_local_only(mcpfs_home):
    server = ServerThread(tcp_port=0).start()
    try:
        port = serve.last_tcp_port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v0/") as client:
            assert client.post("version").status_code == 200
            assert client.post("version", headers={"Origin": "http://evil.example"}
                               ).status_code == 403
            assert client.post("version", headers={"Host": "evil.example"}).status_code == 403
        # the unix socket still has no such restriction for an Origin-less curl-like client
        assert server.client.post("version").status_code == 200
    finally:
        server.stop()


async def test_serve_in_a_nursery(mcpfs_home, nursery):
    repo = Repo(paths().repo_dir)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            path = await inner.start(serve, repo)
            assert path == str(paths().socket_path)
            transport = httpx.AsyncHTTPTransport(uds=path)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://localhost/api/v0/") as client:
                r = await client.post("add", files=[("file", ("a", b"hello world\n"))])
                assert r.json()["Hash"] == HELLO_V0
                r = await client.post("cat", params={"arg": HELLO_V0})
                assert r.content == b"hello world\n"
            scope.cancel()
    assert not paths().socket_path.exists()
