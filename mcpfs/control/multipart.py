"""Streaming ``multipart/form-data`` for kubo's upload commands, read from a worker thread.

kubo's clients upload files as one multipart body: one part per file, directory
(``Content-Type: application/x-directory``) or symlink (``application/symlink``, the body is
the target), each named by ``Content-Disposition: form-data; name="file";
filename="<url-escaped relative path>"``. :class:`MultipartStream` turns an iterator of
body chunks into a sequence of :class:`Part` objects whose ``read(n)`` pulls just enough
of the body: a part's bytes are never held whole, so a 10 GiB upload needs O(chunk) memory.

Threading: everything here is synchronous and meant for a worker thread;
:func:`body_chunks` bridges the request's async body into it with ``trio.from_thread``.
A stream is used by one thread at a time (parts in order; reading a part after the next
one started is an error). A malformed body raises :class:`InvalidInput`; a client that
disconnects surfaces as whatever the ASGI server raised (``ClientDisconnect``), which
aborts the import running in the thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Final
from urllib.parse import unquote_to_bytes

import trio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InvalidInput

DIRECTORY_TYPES: Final = (b"application/x-directory", b"multipart/mixed")
SYMLINK_TYPE: Final = b"application/symlink"


def body_chunks(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Iterate an async byte stream from a trio worker thread (one hop per chunk)."""
    ait = stream.__aiter__()
    while True:
        try:
            chunk = trio.from_thread.run(ait.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart Content-Type; InvalidInput when it is not multipart."""
    kind, params = parse_options_header(content_type or "")
    if not kind.startswith(b"multipart/") or not params.get(b"boundary"):
        raise InvalidInput("file argument was expected: the request body must be "
                           "multipart/form-data")
    return params[b"boundary"]


class Part:
    """One part: ``name`` (decoded relative path, "" when none), ``kind`` ("file",
    "directory" or "symlink"), headers, and ``read(n)`` over its body."""

    def __init__(self, stream: MultipartStream, headers: dict[bytes, bytes]) -> None:
        self._stream = stream
        self.headers = headers
        ctype, _ = parse_options_header(headers.get(b"content-type", b""))
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        raw_name = disp.get(b"filename", disp.get(b"filename*", b""))
        if raw_name.lower().startswith(b"utf-8''"):
            raw_name = raw_name[7:]
        # go-ipfs-files escapes with url.QueryEscape ("+" for space), js clients with
        # encodeURIComponent; unquote_plus semantics accept both.
        self.name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8",
                                                                           "surrogateescape")
        self.field = disp.get(b"name", b"").decode("latin-1")
        if ctype in DIRECTORY_TYPES:
            self.kind = "directory"
        elif ctype == SYMLINK_TYPE:
            self.kind = "symlink"
        else:
            self.kind = "file"
        self._buf = b""
        self.done = False

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of this part (all the rest when negative); b"" at its end."""
        while not self.done and (size < 0 or len(self._buf) < size):
            event = self._stream._next_event(self)
            if event is None:
                self.done = True
            else:
                self._buf += event
        if size < 0 or size >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class MultipartStream:
    """Parts of a multipart body given as an iterator of chunks; see the module docstring."""

    def __init__(self, chunks: Iterator[bytes], boundary: bytes) -> None:
        self._chunks = iter(chunks)
        self._events: deque[tuple[str, object]] = deque()
        self._eof = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._current: Part | None = None
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        })

    # parser callbacks (called inside parser.write, same thread)
    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _on_headers_finished(self) -> None:
        self._events.append(("headers", self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(("data", bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append(("end", None))

    def _pull(self) -> tuple[str, object] | None:
        """The next parser event, feeding the parser more of the body as needed."""
        while not self._events:
            if self._eof:
                return None
            chunk = next(self._chunks, None)
            try:
                if chunk is None:
                    self._eof = True
                    self._parser.finalize()
                else:
                    self._parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidInput(f"malformed multipart body: {exc}") from None
        return self._events.popleft()

    def _next_event(self, part: Part) -> bytes | None:
        """Data of ``part`` (the current one), or None at its end."""
        if part is not self._current:
            raise InvalidInput("multipart part read after the next one started")
        event = self._pull()
        if event is None:
            raise InvalidInput("multipart body ended inside a part")
        kind, value = event
        if kind == "data":
            return value  # type: ignore[return-value]
        if kind == "end":
            return None
        raise InvalidInput("malformed multipart body")

    def parts(self) -> Iterator[Part]:
        """Each part in order; the previous part's unread bytes are skipped first."""
        while True:
            if self._current is not None and not self._current.done:
                self._current.drain()
            event = self._pull()
            if event is None:
                return
            kind, value = event
            if kind != "headers":
                raise InvalidInput("malformed multipart body")
            self._current = Part(self, value)  # type: ignore[arg-type]
            yield self._current

    def first_file(self) -> Part:
        """The first part (kubo's single-file commands: block put, dag put, files write)."""
        for part in self.parts():
            return part
        raise InvalidInput("file argument 'data' is required")


__all__ = ["MultipartStream", "Part", "body_chunks", "boundary_of"]
