"""The control API: kubo-compatible RPC plus mcpfs's routes on a unix socket.

``server.serve(repo)`` runs it in the daemon's nursery; ``client.connect()`` is the CLI's
way in (None when no daemon answers); ``ops.RepoOps`` is the one implementation of the
commands, used by the server and by the CLI without a daemon.

The server's modules (FastAPI, hypercorn) load only when ``serve``/``create_app`` are used,
so the CLI's start-up does not pay for them.
"""


def __getattr__(name: str):
    if name in ("serve", "create_app"):
        from . import server
        return getattr(server, name)
    raise AttributeError(name)


__all__ = ["serve", "create_app"]
