"""An object made of several stored objects: the list of their read caps, itself stored.

A multipart upload ends as one name whose parts are separate objects of the mesh (each encoded
as it arrived, so completing an upload copies nothing).  The bucket entry's cap then opens a
*segment list*: this small document, in order, of each part's read cap and size.  Any tenant
machine that opens the entry (the S3 gateway, ``p2pstore cp``) reads the list, then the parts.
Pure: packing and checking only.
"""

from __future__ import annotations

from typing import Final

import msgpack

from p2pstore.errors import IntegrityError, LocalProtocolError

MAGIC: Final = b"p2pstore-segments-v1\0"
METADATA_KEY: Final = "p2pstore-segments"
"""The entry metadata key whose presence says the cap opens a segment list (value: the count)."""
MAX_SEGMENTS: Final = 10_000
MAX_CAP_CHARS: Final = 512


def pack_segments(segments: list[tuple[str, int]]) -> bytes:
    """The stored form of ``[(read cap, size), ...]``.  Raises :class:`LocalProtocolError`
    for an empty or oversized list or a bad entry."""
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise LocalProtocolError(f"a segment list holds 1 to {MAX_SEGMENTS} segments")
    for cap, size in segments:
        if not (isinstance(cap, str) and len(cap) <= MAX_CAP_CHARS and type(size) is int):
            raise LocalProtocolError("a segment is a read cap and a size")
        if not 0 <= size < 2**63:
            raise LocalProtocolError("a segment's size is out of range")
    packed: bytes = msgpack.packb([[cap, size] for cap, size in segments], use_bin_type=True)
    return MAGIC + packed


def unpack_segments(data: bytes) -> list[tuple[str, int]]:
    """The segments of a stored list.  Raises :class:`IntegrityError` if ``data`` is not one
    (it was decrypted with the object's key, so a tenant machine wrote garbage)."""
    if not data.startswith(MAGIC):
        raise IntegrityError("the object is not a segment list")
    try:
        raw = msgpack.unpackb(
            data[len(MAGIC) :], raw=False, max_map_len=0, max_array_len=MAX_SEGMENTS
        )
        segments = [(cap, size) for cap, size in raw]
        pack_segments(segments)  # the same checks as when it was written
    except (ValueError, TypeError, LocalProtocolError, msgpack.UnpackException) as exc:
        raise IntegrityError(f"a segment list is malformed: {exc}") from None
    return segments
