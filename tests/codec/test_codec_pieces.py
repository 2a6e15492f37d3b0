"""Chunking, the erasure coder's guards around zfec, and the fragment header."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.codec import FragmentHeader, chunk_count, iter_chunks, parse_fragment
from p2pstore.codec.chunking import chunk_length
from p2pstore.codec.erasure import ErasureCoder
from p2pstore.codec.fragments import HEADER_BYTES, make_fragment
from p2pstore.errors import (
    IntegrityError,
    LocalProtocolError,
    NotEnoughFragments,
    RemoteProtocolError,
)


class Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data, step):
        self.data, self.pos, self.step, self.reads = data, 0, step, 0

    def readable(self):
        return True

    def read(self, size=-1):
        self.reads += 1
        take = self.step if size < 0 else min(size, self.step)
        out = self.data[self.pos : self.pos + take]
        self.pos += len(out)
        return out


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=2000), chunk_size=st.integers(1, 700), step=st.integers(1, 300))
def test_iter_chunks_splits_exactly(data, chunk_size, step):
    chunks = list(iter_chunks(Trickle(data, step), chunk_size))
    assert b"".join(chunks) == data
    assert len(chunks) == chunk_count(len(data), chunk_size)
    assert [len(c) for c in chunks] == [
        chunk_length(len(data), chunk_size, i) for i in range(len(chunks))
    ]


def test_iter_chunks_is_lazy():
    stream = Trickle(bytes(10_000), 10_000)
    first = next(iter_chunks(stream, 1000))
    assert len(first) == 1000
    assert stream.pos == 1000


def test_empty_stream_is_one_empty_chunk():
    assert list(iter_chunks(io.BytesIO(b""), 10)) == [b""]


@pytest.mark.parametrize("size", [0, -1, 2**40, True, 1.5])
def test_bad_chunk_size(size):
    with pytest.raises(LocalProtocolError, match="chunk size"):
        list(iter_chunks(io.BytesIO(b"x"), size))


def test_erasure_guards_zfec():
    coder = ErasureCoder(2, 4)
    primaries, size = coder.split(b"abcde")
    assert size == 3
    blocks = coder.encode(primaries)
    # zfec would return garbage for share 7 and loop forever on a repeated share; we refuse.
    with pytest.raises(LocalProtocolError, match="out of range"):
        coder.decode({7: blocks[3], 1: blocks[1]})
    with pytest.raises(LocalProtocolError):
        coder.encode(primaries, [4])
    with pytest.raises(NotEnoughFragments):
        coder.decode({3: blocks[3]})
    with pytest.raises(IntegrityError, match="differ in size"):
        coder.decode({2: blocks[2], 3: bytes(blocks[3])[:2]})
    assert b"".join(coder.decode({3: blocks[3], 2: blocks[2]})) == b"abcde\x00"


def test_fragment_header_round_trip_and_garbage():
    header = FragmentHeader(k=4, n=8, share=7, chunk_index=123456)
    fragment = make_fragment(header, b"block")
    parsed, block = parse_fragment(fragment)
    assert parsed == header
    assert bytes(block) == b"block"
    for bad in (
        b"",
        fragment[:HEADER_BYTES],
        b"\x02" + fragment[1:],  # unknown version
        fragment[:1] + b"\x00\x09\x00\x08" + fragment[5:],  # k > n
        fragment[:5] + b"\x00\x08" + fragment[7:],  # share = n
    ):
        with pytest.raises(RemoteProtocolError):
            parse_fragment(bad)
