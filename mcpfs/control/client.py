"""The CLI's node when a daemon runs: kubo's RPC over the control socket (sync httpx).

:func:`connect` answers a :class:`RemoteNode` when the socket exists and the daemon
answers ``version`` within ``PROBE_TIMEOUT``, else None (the CLI then opens the repo
itself, as kubo does without a daemon). RemoteNode has the methods and results of
:class:`mcpfs.control.local.LocalNode`.

Uploads (add, block/dag put, dag import, files write) are streamed as multipart bodies
built from generators, files read piece by piece: memory stays flat. ``add`` walks local
paths in the same order and with the same rules as the local Adder (sorted by name,
hidden entries skipped inside folders unless ``hidden``, symlinks not followed).

Errors: kubo's error objects (HTTP 4xx/5xx, or an error line ending an NDJSON stream)
become :class:`McpfsError` with the daemon's message; a stream cut short (a daemon-side
failure after the headers) raises McpfsError too. One ``httpx.Client`` (one connection,
kept alive) per RemoteNode; :meth:`close` releases it.
"""

from __future__ import annotations

import json
from contextlib import closing
import os
import secrets
import stat as stat_mod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import quote

import httpx

from ..config import paths
from ..errors import IsADirectory, McpfsError, NotFound
from .ops import AddOptions

PROBE_TIMEOUT: Final = 2.0  # seconds for the "is a daemon there" request
PIECE: Final = 256 * 1024  # bytes per read of an uploaded file
BASE: Final = "http://localhost/api/v0/"


def connect(socket_path: str | os.PathLike[str] | None = None) -> RemoteNode | None:
    """A RemoteNode when a daemon answers on the socket, else None."""
    path = Path(socket_path) if socket_path else paths().socket_path
    if not path.exists():
        return None
    node = RemoteNode(path)
    try:
        node.client.post(BASE + "version", timeout=PROBE_TIMEOUT).raise_for_status()
    except httpx.HTTPError:
        node.close()
        return None
    return node


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        message = response.json()["Message"]
    except (ValueError, KeyError, TypeError):
        message = response.text.strip() or f"HTTP {response.status_code}"
    raise McpfsError(message)


class _Multipart:
    """A multipart/form-data body assembled from parts, as a byte iterator."""

    def __init__(self) -> None:
        self.boundary = secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"

    def part(self, name: str, ctype: str, body: Iterable[bytes]) -> Iterator[bytes]:
        escaped = quote(os.fsencode(name), safe="")
        yield (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"{escaped}\"\r\nContent-Type: {ctype}\r\n\r\n").encode()
        yield from body
        yield b"\r\n"

    def end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()


def _read_pieces(fh: BinaryIO, on_bytes: Callable[[int], None] | None = None
                 ) -> Iterator[bytes]:
    while True:
        chunk = fh.read(PIECE)
        if not chunk:
            return
        if on_bytes:
            on_bytes(len(chunk))
        yield chunk


def _file_pieces(path: str, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    try:
        fh = open(path, "rb", buffering=0)
    except OSError as exc:
        raise McpfsError(f"{path}: {exc.strerror}", errno=exc.errno) from None
    with fh:
        yield from _read_pieces(fh, on_bytes)


class RemoteNode:
    remote = True

    def __init__(self, socket_path: Path) -> None:
        self.client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                                   timeout=httpx.Timeout(None, connect=PROBE_TIMEOUT))

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- transport
    def _post(self, cmd: str, params: Any = None, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.post(BASE + cmd, params=params, **kwargs)
        except httpx.TransportError as exc:
            raise McpfsError(f"control socket: {exc}") from None
        _raise_for(response)
        return response

    def _json(self, cmd: str, params: Any = None, **kwargs: Any) -> Any:
        return self._post(cmd, params, **kwargs).json()

    def _ndjson(self, cmd: str, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        with closing(self._stream(cmd, params, **kwargs)) as response:
            try:
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    value = json.loads(line)
                    if isinstance(value, dict) and value.get("Type") == "error":
                        raise McpfsError(value.get("Message", "error"))
                    yield value
            except httpx.TransportError as exc:
                raise McpfsError(f"control socket: stream interrupted: {exc}") from None

    def _stream(self, cmd: str, params: Any = None, **kwargs: Any):
        request = self.client.build_request("POST", BASE + cmd, params=params, **kwargs)
        try:
            response = self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise McpfsError(f"control socket: {exc}") from None
        try:
            _raise_for(response)
        except BaseException:
            response.close()
            raise
        return response

    def _bytes(self, cmd: str, params: Any = None) -> Iterator[bytes]:
        with closing(self._stream(cmd, params)) as response:
            expected = response.headers.get("X-Content-Length")
            got = 0
            try:
                for chunk in response.iter_bytes():
                    got += len(chunk)
                    yield chunk
            except httpx.TransportError as exc:
                raise McpfsError(f"control socket: stream interrupted: {exc}") from None
            if expected is not None and got != int(expected):
                raise McpfsError(f"control socket: stream ended after {got} of {expected} bytes")

    def _upload(self, parts: Iterable[bytes], mp: _Multipart) -> dict[str, Any]:
        return {"content": parts, "headers": {"Content-Type": mp.content_type}}

    def _single(self, fh: BinaryIO, on_bytes: Callable[[int], None] | None = None,
                name: str = "") -> dict[str, Any]:
        mp = _Multipart()

        def body() -> Iterator[bytes]:
            yield from mp.part(name, "application/octet-stream", _read_pieces(fh, on_bytes))
            yield mp.end()
        return self._upload(body(), mp)

    # ---------------------------------------------------------------- add / cat / get
    def add_files(self, paths: list[str], opts: AddOptions, *, recursive: bool, wrap: bool,
                  hidden: bool, pin: bool, on_bytes: Callable[[int], None] | None = None
                  ) -> Iterator[dict[str, str]]:
        opts.params()  # bad flags fail here, with the local message
        tops = []
        for path in paths:  # the Adder's top-level checks, before anything is sent
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise NotFound(f"{path}: no such file or directory") from None
            if stat_mod.S_ISDIR(st.st_mode) and not recursive:
                raise IsADirectory(f"{path} is a directory, use the '-r' flag to add directories")
            tops.append((path, os.path.basename(os.path.normpath(path))))
        mp = _Multipart()

        def body() -> Iterator[bytes]:
            for path, name in tops:
                yield from self._walk(mp, path, name, hidden, on_bytes)
            yield mp.end()
        query = {**opts.query(), "pin": _flag(pin), "wrap-with-directory": _flag(wrap)}
        return self._ndjson("add", query, **self._upload(body(), mp))

    def _walk(self, mp: _Multipart, path: str, name: str, hidden: bool,
              on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
        st = os.lstat(path)
        if stat_mod.S_ISLNK(st.st_mode):
            yield from mp.part(name, "application/symlink", [os.fsencode(os.readlink(path))])
        elif stat_mod.S_ISDIR(st.st_mode):
            yield from mp.part(name, "application/x-directory", [])
            with os.scandir(path) as it:
                children = sorted(it, key=lambda e: os.fsencode(e.name))
            for child in children:
                if child.name.startswith(".") and not hidden:
                    continue
                yield from self._walk(mp, child.path, f"{name}/{child.name}", hidden, on_bytes)
        else:
            yield from mp.part(name, "application/octet-stream", _file_pieces(path, on_bytes))

    def add_stdin(self, fh: BinaryIO, opts: AddOptions, *, pin: bool,
                  on_bytes: Callable[[int], None] | None = None) -> dict[str, str]:
        opts.params()
        lines = list(self._ndjson("add", {**opts.query(), "pin": _flag(pin)},
                                  **self._single(fh, on_bytes)))
        return lines[-1]

    def cat(self, path: str, offset: int = 0, length: int | None = None
            ) -> tuple[None, Iterator[bytes]]:
        params = {"arg": path, "offset": offset}
        if length is not None:
            params["length"] = length
        chunks = self._bytes("cat", params)
        first = next(chunks, b"")  # errors surface now, as in the local node
        return None, _chain(first, chunks)

    def get_tar(self, path: str) -> Iterator[bytes]:
        chunks = self._bytes("get", {"arg": path})
        first = next(chunks, b"")
        return _chain(first, chunks)

    # ---------------------------------------------------------------- pins / gc
    def pin_add(self, path: str, recursive: bool = True, name: str | None = None) -> str:
        params = {"arg": path, "recursive": _flag(recursive)}
        if name is not None:
            params["name"] = name
        return self._json("pin/add", params)["Pins"][0]

    def pin_rm(self, path: str, recursive: bool = True) -> str:
        return self._json("pin/rm", {"arg": path, "recursive": _flag(recursive)})["Pins"][0]

    def pin_ls(self, paths: Iterable[str] = (), kind: str = "all"
               ) -> Iterator[tuple[str, str, str | None]]:
        params = {"arg": list(paths), "type": kind, "stream": "true", "names": "true"}
        for entry in self._ndjson("pin/ls", params):
            yield entry["Cid"], entry["Type"], entry.get("Name")

    def gc(self) -> list[dict[str, Any]]:
        return list(self._ndjson("repo/gc"))

    # ---------------------------------------------------------------- blocks / dag
    def block_put(self, fh: BinaryIO, codec: str = "raw", mhtype: str = "sha2-256",
                  pin: bool = False, allow_big_block: bool = False) -> dict[str, Any]:
        params = {"cid-codec": codec, "mhtype": mhtype, "pin": _flag(pin),
                  "allow-big-block": _flag(allow_big_block)}
        return self._json("block/put", params, **self._single(fh))

    def block_get(self, cid: str) -> bytes:
        return b"".join(self._bytes("block/get", {"arg": cid}))

    def block_stat(self, cid: str) -> dict[str, Any]:
        return self._json("block/stat", {"arg": cid})

    def block_rm(self, cids: list[str], force: bool = False) -> list[dict[str, str]]:
        return list(self._ndjson("block/rm", {"arg": cids, "force": _flag(force)}))

    def dag_put(self, fh: BinaryIO, store_codec: str = "dag-cbor",
                input_codec: str = "dag-json", hash_name: str = "sha2-256",
                pin: bool = False, allow_big_block: bool = False) -> str:
        params = {"store-codec": store_codec, "input-codec": input_codec, "hash": hash_name,
                  "pin": _flag(pin), "allow-big-block": _flag(allow_big_block)}
        return self._json("dag/put", params, **self._single(fh))["Cid"]["/"]

    def dag_get(self, path: str, output_codec: str = "dag-json") -> bytes:
        return b"".join(self._bytes("dag/get", {"arg": path, "output-codec": output_codec}))

    def dag_resolve(self, path: str) -> dict[str, str]:
        result = self._json("dag/resolve", {"arg": path})
        return {"Cid": result["Cid"]["/"], "RemPath": result.get("RemPath", "")}

    def dag_export(self, path: str) -> Iterator[bytes]:
        chunks = self._bytes("dag/export", {"arg": path})
        first = next(chunks, b"")
        return _chain(first, chunks)

    def dag_import(self, fh: BinaryIO, pin_roots: bool = True) -> tuple[list[str], int, int]:
        params = {"pin-roots": _flag(pin_roots), "stats": "true"}
        roots, blocks, nbytes = [], 0, 0
        for line in self._ndjson("dag/import", params, **self._single(fh)):
            if "Root" in line:
                roots.append(line["Root"]["Cid"]["/"])
            elif "Stats" in line:
                blocks = line["Stats"]["BlockCount"]
                nbytes = line["Stats"]["BlockBytesCount"]
        return roots, blocks, nbytes

    # ---------------------------------------------------------------- files
    def files_ls(self, path: str, long: bool = False) -> list[dict]:
        return self._json("files/ls", {"arg": path, "long": _flag(long)}).get("Entries") or []

    def files_mkdir(self, path: str, parents: bool = False) -> None:
        self._post("files/mkdir", {"arg": path, "parents": _flag(parents)})

    def files_write(self, path: str, fh: BinaryIO, *, offset: int = 0, create: bool = False,
                    parents: bool = False, truncate: bool = False,
                    count: int | None = None) -> None:
        params = {"arg": path, "offset": offset, "create": _flag(create),
                  "parents": _flag(parents), "truncate": _flag(truncate)}
        if count is not None:
            params["count"] = count
        self._post("files/write", params, **self._single(fh))

    def files_read(self, path: str, out: BinaryIO, offset: int = 0,
                   count: int | None = None) -> None:
        params = {"arg": path, "offset": offset}
        if count is not None:
            params["count"] = count
        for chunk in self._bytes("files/read", params):
            out.write(chunk)

    def files_rm(self, paths: list[str], recursive: bool = False, force: bool = False) -> None:
        self._post("files/rm", {"arg": paths, "recursive": _flag(recursive),
                                "force": _flag(force)})

    def files_mv(self, src: str, dst: str) -> None:
        self._post("files/mv", {"arg": [src, dst]})

    def files_cp(self, src: str, dst: str, parents: bool = False) -> None:
        self._post("files/cp", {"arg": [src, dst], "parents": _flag(parents)})

    def files_stat(self, path: str) -> dict:
        return self._json("files/stat", {"arg": path})

    def files_flush(self, path: str = "/") -> str:
        return self._json("files/flush", {"arg": path})["Cid"]


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


__all__ = ["connect", "RemoteNode", "PROBE_TIMEOUT"]
