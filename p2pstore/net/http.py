"""Just enough HTTP/1.x for a node's admin endpoint: parse a GET request's head, build a reply.

Strategy: the admin endpoint serves three read-only pages to Prometheus, load balancers and
``p2pstore node status``, so it needs no bodies, no keep-alive, no chunking and no headers beyond
the request line.  Less HTTP is less to get wrong: this module is pure (bytes in, a value or
:class:`~p2pstore.errors.RemoteProtocolError` out; a value in, bytes out) and the server reads at
most :data:`MAX_HEAD_BYTES` before calling it, so a hostile client costs a bounded buffer.  What
the parser does not understand it refuses (status 400) rather than guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from p2pstore.errors import RemoteProtocolError

MAX_HEAD_BYTES = 8192
"""The request line plus headers; curl and Prometheus send a few hundred bytes."""
MAX_HEADERS = 64
HEAD_END = b"\r\n\r\n"

_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (/[\x21-\x7e]{0,2047}) HTTP/1\.([01])")
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head: ``path`` without its query string, which is ignored."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response; the connection closes after it."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.status not in _REASONS:
            raise ValueError(f"status {self.status} is not one this server sends")
        for name, value in (("content-type", self.content_type), *self.headers):
            if not _HEADER_NAME.fullmatch(name.encode("ascii", "replace")) or any(
                c in value for c in "\r\n"
            ):
                raise ValueError(f"bad response header {name!r}: {value!r:.80}")

    def encode(self, *, head_only: bool = False) -> bytes:
        """The bytes on the wire (``head_only`` for a HEAD request: same headers, no body)."""
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS[self.status]}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def text_response(status: int, text: str) -> Response:
    """A plain-text response whose body is ``text`` and a newline."""
    return Response(status, (text + "\n").encode("utf-8"))


def head_complete(buffer: bytes) -> bool:
    """Whether ``buffer`` holds a whole request head (the blank line that ends it)."""
    return HEAD_END in buffer


def parse_request(buffer: bytes) -> Request:
    """The request whose head starts ``buffer`` (anything after the head is ignored).

    Raises :class:`RemoteProtocolError` naming the problem if the head is incomplete, longer
    than :data:`MAX_HEAD_BYTES`, not HTTP/1.0 or 1.1, or malformed.
    """
    end = buffer.find(HEAD_END)
    if end < 0:
        raise RemoteProtocolError("incomplete request head")
    if end + len(HEAD_END) > MAX_HEAD_BYTES:
        raise RemoteProtocolError(f"request head over {MAX_HEAD_BYTES} bytes")
    request_line, *header_lines = buffer[:end].split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise RemoteProtocolError(f"bad request line {request_line[:80]!r}")
    if len(header_lines) > MAX_HEADERS:
        raise RemoteProtocolError(f"more than {MAX_HEADERS} headers")
    headers = []
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise RemoteProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name.decode("ascii").lower(), value.strip().decode("latin-1")))
    method, target = match.group(1).decode("ascii"), match.group(2).decode("ascii")
    return Request(method, target.partition("?")[0], tuple(headers))
