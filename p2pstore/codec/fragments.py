"""Fragments: one coded block of one chunk, prefixed by a small fixed header.

Why a header: a fragment's id is the hash of its bytes, and with k = 1 (replication) every zfec
share of a chunk is the same block -- without a header the n "different" fragments would share
one id, and a store could not tell them apart nor placement spread them.  The header (format
version, k, n, share number, chunk index) makes every share of every chunk distinct, and lets a
store or steward tell what a fragment is without its manifest.  Its fields are covered by the
fragment id, so they are as trustworthy as the block.

Layout (big-endian, 11 bytes): version u8 | k u16 | n u16 | share u16 | chunk index u32 | block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from p2pstore.codec.erasure import MAX_SHARES
from p2pstore.errors import LocalProtocolError, RemoteProtocolError

FRAGMENT_VERSION = 1
_HEADER = struct.Struct(">BHHHI")
HEADER_BYTES = _HEADER.size
MAX_CHUNK_INDEX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class FragmentHeader:
    """What a fragment is: share ``share`` of ``k``-of-``n`` coded chunk ``chunk_index``."""

    k: int
    n: int
    share: int
    chunk_index: int
    version: int = FRAGMENT_VERSION

    def __post_init__(self) -> None:
        if self.version != FRAGMENT_VERSION:
            raise LocalProtocolError(f"fragment format version {self.version} is not supported")
        if not 1 <= self.k <= self.n <= MAX_SHARES:
            raise LocalProtocolError(f"fragment header has invalid k={self.k}, n={self.n}")
        if not 0 <= self.share < self.n:
            raise LocalProtocolError(f"share {self.share} is out of range for n={self.n}")
        if not 0 <= self.chunk_index <= MAX_CHUNK_INDEX:
            raise LocalProtocolError(f"chunk index {self.chunk_index} does not fit a fragment")

    def pack(self) -> bytes:
        """The header's bytes."""
        return _HEADER.pack(self.version, self.k, self.n, self.share, self.chunk_index)


def make_fragment(header: FragmentHeader, block: bytes | bytearray | memoryview) -> bytes:
    """The bytes of a fragment: ``header`` then ``block``."""
    return header.pack() + block


def parse_fragment(data: bytes | bytearray | memoryview) -> tuple[FragmentHeader, memoryview]:
    """Split a fragment into its header and a view of its block (no copy).

    Raises :class:`RemoteProtocolError` if ``data`` is too short, of an unknown version, or has
    inconsistent header fields.  Does *not* check the fragment's id: do that first.
    """
    if len(data) <= HEADER_BYTES:
        raise RemoteProtocolError(
            f"fragment of {len(data)} bytes is too short: a fragment has an {HEADER_BYTES}-byte "
            "header and a non-empty block"
        )
    view = memoryview(data)
    version, k, n, share, chunk_index = _HEADER.unpack_from(view)
    try:
        header = FragmentHeader(k=k, n=n, share=share, chunk_index=chunk_index, version=version)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"malformed fragment header: {exc}") from exc
    return header, view[HEADER_BYTES:]
