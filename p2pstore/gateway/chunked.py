"""The ``aws-chunked`` body encoding: each chunk signed (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``)
or not (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``, with checksum trailers).

Strategy: a sans-IO decoder in h11's shape: bytes in (:meth:`ChunkedDecoder.feed`), verified
payload pieces out.  A signed chunk is released only once its signature, which chains on the
previous one, checks: a tampered, reordered or truncated body never yields a byte that was not
signed.  Buffers are capped (a chunk header line, one chunk's data), so a hostile client cannot
make the gateway hold more than one chunk.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.sigv4 import Authorized, chunk_string_to_sign, sign

MAX_LINE = 4096
MAX_CHUNK = 16 * 1024 * 1024
"""The largest chunk accepted (clients send 8-64 KiB; a signed chunk is held until verified)."""
MAX_TRAILERS = 16


@dataclass
class ChunkedDecoder:
    """Decodes one aws-chunked body; ``signer`` is None for the unsigned-with-trailer form."""

    signer: Authorized | None
    max_chunk: int = MAX_CHUNK
    trailers: dict[str, str] = field(default_factory=dict)
    decoded: int = 0
    done: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _previous: str = ""
    _remaining: int | None = None
    """Bytes of the current chunk still to come (None: expecting a chunk header)."""
    _chunk: list[bytes] = field(default_factory=list)
    _chunk_signature: str = ""
    _hash: hashlib._Hash | None = None
    _final: bool = False

    def __post_init__(self) -> None:
        if self.signer is not None:
            self._previous = self.signer.signature

    def feed(self, data: bytes) -> list[bytes]:
        """Take more of the body; return the payload pieces now verified, in order.

        Raises :class:`S3Error` (``IncompleteBody``, ``SignatureDoesNotMatch``,
        ``InvalidRequest``) for a malformed or tampered body.
        """
        if self.done and data:
            raise S3Error("IncompleteBody", "bytes after the final chunk of an aws-chunked body")
        self._buffer += data
        out: list[bytes] = []
        while not self.done and self._step(out):
            pass
        return out

    def finish(self) -> None:
        """Raise ``IncompleteBody`` unless the final chunk and its trailers arrived."""
        if not self.done:
            raise S3Error("IncompleteBody", "the aws-chunked body ended before its final chunk")

    def _line(self) -> str | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                raise S3Error("InvalidRequest", "an aws-chunked header line is too long")
            return None
        if end > MAX_LINE:
            raise S3Error("InvalidRequest", "an aws-chunked header line is too long")
        line = bytes(self._buffer[:end]).decode("ascii", errors="replace")
        del self._buffer[: end + 2]
        return line

    def _step(self, out: list[bytes]) -> bool:
        """Advance by one piece of the grammar; False when more bytes are needed."""
        if self._final:
            return self._trailer()
        if self._remaining is None:
            line = self._line()
            if line is None:
                return False
            self._start_chunk(line)
            return True
        return self._data(out)

    def _data(self, out: list[bytes]) -> bool:
        assert self._remaining is not None
        if self._remaining > 0:
            if not self._buffer:
                return False
            piece = bytes(self._buffer[: self._remaining])
            del self._buffer[: len(piece)]
            self._remaining -= len(piece)
            self._take(piece, out)
            return True
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] != b"\r\n":
            raise S3Error("IncompleteBody", "an aws-chunked chunk is longer than its size says")
        del self._buffer[:2]
        self._end_chunk(out)
        return True

    def _start_chunk(self, line: str) -> None:
        size_text, _, extension = line.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise S3Error("InvalidRequest", f"bad aws-chunked size {size_text[:20]!r}") from None
        if not 0 <= size <= self.max_chunk:
            raise S3Error("InvalidRequest", f"an aws-chunked chunk of {size} bytes is too large")
        if self.signer is not None:
            name, _, signature = extension.partition("=")
            if name != "chunk-signature" or len(signature) != 64:
                raise S3Error("InvalidRequest", "an aws-chunked chunk lacks its chunk-signature")
            self._chunk_signature = signature
            self._hash = hashlib.sha256()
        self._remaining = size
        if size == 0:
            self._check_signature()
            self._final = True

    def _take(self, piece: bytes, out: list[bytes]) -> None:
        self.decoded += len(piece)
        if self.signer is None:
            out.append(piece)
            return
        assert self._hash is not None
        self._hash.update(piece)
        self._chunk.append(piece)

    def _end_chunk(self, out: list[bytes]) -> None:
        self._check_signature()
        out.extend(self._chunk)
        self._chunk = []
        self._remaining = None

    def _check_signature(self) -> None:
        if self.signer is None:
            return
        assert self._hash is not None
        text = chunk_string_to_sign(
            self.signer.timestamp, self.signer.scope, self._previous, self._hash.hexdigest()
        )
        expected = sign(self.signer.signing_key, text)
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise S3Error("SignatureDoesNotMatch", "an aws-chunked chunk's signature is wrong")
        self._previous = expected

    def _trailer(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if not line:
            self.done = True
            return False
        if self.signer is not None:
            raise S3Error("NotImplemented", "signed aws-chunked trailers are not supported")
        name, colon, value = line.partition(":")
        if not colon or len(self.trailers) >= MAX_TRAILERS:
            raise S3Error("InvalidRequest", f"bad aws-chunked trailer {line[:40]!r}")
        self.trailers[name.strip().lower()] = value.strip()
        return True
