"""Reading a put's source: the convergent key's pass, then chunk after chunk to encode.

Both run in a worker thread (reading a file and hashing or coding a chunk block), and both check
that the source gives exactly the size the put announced: a file that changes while it is read
fails the put, naming the chunk, rather than storing an object that is neither version.
"""

from __future__ import annotations

from typing import BinaryIO

from p2pstore.codec import ConvergentKeyDeriver, EncodedChunk, ObjectEncoder, iter_chunks
from p2pstore.codec.chunking import chunk_length
from p2pstore.errors import PutFailed


def convergent_key(source: BinaryIO, size: int, secret: bytes, chunk_size: int) -> bytes:
    """The object's convergent key from one pass over ``source`` (``size`` bytes)."""
    deriver = ConvergentKeyDeriver(secret)
    for piece in iter_chunks(source, chunk_size):
        deriver.update(piece)
    if deriver.size != size:
        raise PutFailed(
            f"the source gave {deriver.size} bytes where {size} were expected: "
            "did the file change while it was read?",
            chunk=None,
        )
    return deriver.key()


def read_and_encode(
    source: BinaryIO, encoder: ObjectEncoder, size: int, chunk_size: int
) -> EncodedChunk:
    """Read the encoder's next chunk of an object of ``size`` bytes and encode it."""
    index = encoder.next_index
    wanted = chunk_length(size, chunk_size, index)
    data = source.read(wanted)
    if len(data) != wanted:
        raise PutFailed(
            f"chunk {index}: the source ended after {len(data)} of {wanted} bytes: "
            "did the file change while it was read?",
            chunk=index,
        )
    return encoder.encode_chunk(data)
