"""A control server on a tmp MCPFS_HOME, run by trio in a background thread.

``control`` starts ``serve`` (in-process, the daemon's entry point) and stops it at the
end of the test by cancelling its scope from this thread; the socket file must be gone
afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from functools import partial

import httpx
import pytest
import trio

from mcpfs.backends.ipfs.node import Repo
from mcpfs.config import paths
from mcpfs.control.server import serve
from mcpfs.stats import Stats


class ServerThread:
    def __init__(self, tcp_port: int | None = None) -> None:
        self.paths = paths()
        self.socket = self.paths.socket_path
        self.repo = Repo(self.paths.repo_dir)
        self.stats = Stats()
        self.tcp_port = tcp_port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def amain():
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(serve, self.repo, stats=self.stats,
                                                tcp_port=self.tcp_port))
                    self._ready.set()
        try:
            trio.run(amain)
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(20), "control server did not start"
        if self._error:
            raise self._error
        self.client = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                                   base_url="http://localhost/api/v0/", timeout=60)
        return self

    def stop(self) -> None:
        self.client.close()
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(20)
        assert not self._thread.is_alive()
        if self._error:
            raise self._error


@pytest.fixture
def control(mcpfs_home):
    server = ServerThread(tcp_port=None).start()
    yield server
    server.stop()
    assert not server.socket.exists()


@pytest.fixture
def run_cli(mcpfs_home, tmp_path):
    """Run ``mcpfs ARGS`` as a user does (a real process), MCPFS_HOME isolated."""
    def _run(*args, input=None, ok=True, home=None):
        env = {**os.environ, "MCPFS_HOME": str(home or mcpfs_home)}
        proc = subprocess.run([sys.executable, "-m", "mcpfs", *args], input=input,
                              capture_output=True, cwd=tmp_path, timeout=120, env=env)
        if ok:
            assert proc.returncode == 0, proc.stderr.decode()
        else:
            assert proc.returncode != 0
            err = proc.stderr.decode()
            assert "Traceback" not in err and err.splitlines()[-1].startswith("Error: "), err
        return proc
    return _run
