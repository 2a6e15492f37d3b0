"""Chunking: an object is a sequence of fixed-size chunks, the last one shorter.

Why chunks: memory per put or get must stay bounded whatever the object's size ("Bounded
everything"), so every later stage (encryption, coding, hashing) works on one chunk at a time.
The layout is a pure function of the object's size and the chunk size: chunk ``i`` covers bytes
``[i * chunk_size, min(size, (i + 1) * chunk_size))``.  An empty object still has one (empty)
chunk, so every object ends with an authenticated last chunk and a wrong key is always caught.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from p2pstore.errors import LocalProtocolError

MiB = 1024 * 1024

DEFAULT_CHUNK_SIZE = 4 * MiB
"""Large enough that per-chunk costs (AEAD setup, zfec call, manifest entry) are negligible."""

MIN_CHUNK_SIZE = 1
MAX_CHUNK_SIZE = 256 * MiB
"""Memory per chunk in flight is about (2 + n/k) x chunk size; AEADs cap one message at 2 GiB."""

MAX_OBJECT_SIZE = 2**62
"""Sizes travel as msgpack uint64; the real limit comes from the manifest cap (see manifest.py)."""


class ReadableStream(Protocol):
    """The part of a binary file-like object that :func:`iter_chunks` uses."""

    def read(self, size: int = -1, /) -> bytes: ...


def check_chunk_size(chunk_size: int) -> None:
    """Raise :class:`LocalProtocolError` unless ``chunk_size`` is an allowed chunk size."""
    if (
        not isinstance(chunk_size, int)
        or isinstance(chunk_size, bool)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise LocalProtocolError(
            f"chunk size {chunk_size!r} is invalid: use an int from {MIN_CHUNK_SIZE} to "
            f"{MAX_CHUNK_SIZE} bytes (default {DEFAULT_CHUNK_SIZE})"
        )


def check_object_size(size: int) -> None:
    """Raise :class:`LocalProtocolError` unless ``size`` is a possible object size."""
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_OBJECT_SIZE:
        raise LocalProtocolError(
            f"object size {size!r} is invalid: use an int from 0 to {MAX_OBJECT_SIZE} bytes"
        )


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks an object of ``size`` bytes has (at least one)."""
    return max(1, -(-size // chunk_size))


def chunk_length(size: int, chunk_size: int, index: int) -> int:
    """The plaintext length of chunk ``index``.  Raises :class:`LocalProtocolError` if out of
    range."""
    count = chunk_count(size, chunk_size)
    if not 0 <= index < count:
        raise LocalProtocolError(f"chunk index {index} is out of range: the object has {count}")
    return min(chunk_size, size - index * chunk_size)


def iter_chunks(stream: ReadableStream, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Read ``stream`` to its end as chunks of exactly ``chunk_size`` bytes, the last shorter.

    Never holds more than one chunk.  Short reads (pipes, sockets) are retried until the chunk is
    full or the stream ends.  An empty stream yields one empty chunk, matching :func:`chunk_count`.
    Raises :class:`LocalProtocolError` for a bad chunk size; the stream's own errors propagate.
    """
    check_chunk_size(chunk_size)
    yielded = False
    while True:
        chunk = stream.read(chunk_size)
        if len(chunk) < chunk_size and chunk:
            parts = [chunk]
            have = len(chunk)
            while have < chunk_size:
                more = stream.read(chunk_size - have)
                if not more:
                    break
                parts.append(more)
                have += len(more)
            chunk = b"".join(parts)
        if not chunk:
            if not yielded:
                yield b""
            return
        yielded = True
        yield bytes(chunk)
        if len(chunk) < chunk_size:
            return
