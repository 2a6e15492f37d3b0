"""A request body as the handlers read it: decoded (aws-chunked), hashed and checked.

Strategy: bytes are pulled from the ASGI ``receive`` only when a handler asks (the server stops
reading the socket when its queue is full, so a fast client cannot make the gateway buffer).
Every byte is counted and hashed on the way (MD5 for the ETag, SHA-256 when the signature
covers the payload, a checksum the client declared); :meth:`RequestBody.finish` reads to the
end and raises if anything does not match, and handlers call it *before* a name is committed.
A consumer that writes the bytes from a worker thread may take the hashing there too
(:meth:`RequestBody.take_hashes`), off the thread that serves every request.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from p2pstore.gateway.chunked import ChunkedDecoder
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.sigv4 import (
    STREAMING_PAYLOAD,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    Authorized,
    SignedRequest,
)

Receive = Callable[[], Awaitable[Any]]
_CHECKSUMS = ("crc32", "sha1", "sha256")


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class BodyHashes:
    """Every hash a body is checked by, updated together, in order."""

    def __init__(self, md5: Any, sha256: Any | None, checksum: Any | None) -> None:
        self.md5 = md5
        self.sha256 = sha256
        self.checksum = checksum

    def update(self, piece: bytes) -> None:
        self.md5.update(piece)
        if self.sha256 is not None:
            self.sha256.update(piece)
        if self.checksum is not None:
            self.checksum.update(piece)


class RequestBody:
    """The body of one request; ``size`` is the decoded length the client declared."""

    def __init__(self, receive: Receive, request: SignedRequest, auth: Authorized) -> None:
        self._receive = receive
        self._auth = auth
        self._decoder: ChunkedDecoder | None = None
        if auth.payload in (STREAMING_PAYLOAD, STREAMING_UNSIGNED_TRAILER):
            self._decoder = ChunkedDecoder(auth if auth.payload == STREAMING_PAYLOAD else None)
            declared = request.header("x-amz-decoded-content-length")
        else:
            declared = request.header("content-length")
        self.size: int | None = int(declared) if declared and declared.isdigit() else None
        md5 = hashlib.md5()  # noqa: S324 - S3's ETag, not a security check
        sha256 = hashlib.sha256() if auth.payload not in _MARKERS else None
        self._checksum_name = next(
            (f"x-amz-checksum-{n}" for n in _CHECKSUMS if request.header(f"x-amz-checksum-{n}")),
            None,
        )
        self._checksum_header = request.header(self._checksum_name) if self._checksum_name else None
        trailer = request.header("x-amz-trailer")
        if self._checksum_name is None and trailer and trailer.startswith("x-amz-checksum-"):
            self._checksum_name = trailer.strip().lower()
        algorithm = (self._checksum_name or "").removeprefix("x-amz-checksum-")
        checksum: Any = (
            _Crc32() if algorithm == "crc32" else
            hashlib.new(algorithm) if algorithm in ("sha1", "sha256") else None
        )  # fmt: skip
        self.hashes = BodyHashes(md5, sha256, checksum)
        self._hashed_outside = False
        self.received = 0
        self._pending: list[bytes] = []
        self._ended = False
        self._finished = False

    @property
    def md5(self) -> Any:
        return self.hashes.md5

    def take_hashes(self) -> BodyHashes:
        """From now on :meth:`read` hashes nothing: the caller passes every piece it read to
        the returned hashes, in order, before it calls :meth:`finish` (which checks them)."""
        self._hashed_outside = True
        return self.hashes

    def require_size(self, limit: int) -> int:
        if self.size is None:
            raise S3Error("MissingContentLength", "you must provide the Content-Length header")
        if self.size > limit:
            raise S3Error("EntityTooLarge", f"the body is over the {limit}-byte limit")
        return self.size

    async def _more(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise S3Error("IncompleteBody", "the client went away before the body ended")
        data = bytes(message.get("body", b""))
        if self._decoder is not None:
            self._pending.extend(p for p in self._decoder.feed(data) if p)
        elif data:
            self._pending.append(data)
        if not message.get("more_body", False):
            self._ended = True
            if self._decoder is not None:
                self._decoder.finish()

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` decoded bytes; ``b""`` at the end (then the checks have run)."""
        while not self._pending and not self._ended:
            await self._more()
        if not self._pending:
            if not self._hashed_outside:
                self._check_end()
            return b""
        piece = self._pending[0]
        if len(piece) > limit:
            self._pending[0] = piece[limit:]
            piece = piece[:limit]
        else:
            self._pending.pop(0)
        self.received += len(piece)
        if self.size is not None and self.received > self.size:
            raise S3Error("IncompleteBody", "the body is longer than its declared length")
        if not self._hashed_outside:
            self.hashes.update(piece)
        return piece

    async def read_all(self, limit: int) -> bytes:
        """A small body whole (an XML document); ``EntityTooLarge`` past ``limit``."""
        pieces, total = [], 0
        while piece := await self.read(limit):
            total += len(piece)
            if total > limit:
                raise S3Error("EntityTooLarge", f"this request's body is limited to {limit} bytes")
            pieces.append(piece)
        return b"".join(pieces)

    async def finish(self) -> None:
        """Read to the end and check length, payload hash and checksum."""
        self._hashed_outside = False  # what is left, if anything, is hashed here
        while await self.read(1 << 20):
            pass
        self._check_end()

    def _check_end(self) -> None:
        if self._finished:
            return
        if self.size is not None and self.received != self.size:
            raise S3Error(
                "IncompleteBody", f"the body ended after {self.received} of {self.size} bytes"
            )
        sha256 = self.hashes.sha256
        if sha256 is not None and sha256.hexdigest() != self._auth.payload:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "the provided x-amz-content-sha256 header does not match what was computed",
            )
        declared = self._checksum_header
        if declared is None and self._decoder is not None and self._checksum_name:
            declared = self._decoder.trailers.get(self._checksum_name)
        checksum = self.hashes.checksum
        if (
            checksum is not None
            and declared is not None
            and base64.b64encode(checksum.digest()).decode() != declared
        ):
            raise S3Error("BadDigest", f"the {self._checksum_name} you specified did not match")
        self._finished = True


_MARKERS = (UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_UNSIGNED_TRAILER)
