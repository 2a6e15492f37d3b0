"""Bucket entries on the wire: round trips, and malformed bytes give one typed error."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import RemoteProtocolError
from p2pstore.wire import BucketEntry, decode_entry, encode_entry
from p2pstore.wire.buckets import MAX_ENTRY_BYTES, MAX_ENTRY_PAYLOAD

ENTRY = BucketEntry(
    tenant="acme",
    bucket_token=b"b" * 32,
    name=b"n" * 32,
    version=b"v" * 16,
    op=1,
    timestamp=123,
    retain_until=0,
    legal_hold=False,
    payload=b"sealed",
    signer_key=b"k" * 32,
    certificate=b"c" * 600,
    signature=b"s" * 64,
)


@given(st.binary(max_size=MAX_ENTRY_PAYLOAD), st.integers(0, 2**62), st.booleans())
def test_an_entry_round_trips(payload, timestamp, hold):
    entry = dataclasses.replace(ENTRY, payload=payload, timestamp=timestamp, legal_hold=hold)
    assert decode_entry(encode_entry(entry)) == entry


@given(st.binary(max_size=2000))
def test_random_bytes_give_a_typed_error(data):
    with pytest.raises(RemoteProtocolError):
        decode_entry(data)


@given(st.data())
def test_mutated_entries_decode_or_give_a_typed_error(data):
    encoded = bytearray(encode_entry(ENTRY))
    for _ in range(data.draw(st.integers(1, 5))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_entry(bytes(encoded))
    except RemoteProtocolError:
        return
    assert isinstance(decoded, BucketEntry)


@pytest.mark.parametrize(
    "raw",
    [
        [],
        ["acme"],
        [*msgpack.unpackb(encode_entry(ENTRY))[:-1], b"s" * 63],
        [*msgpack.unpackb(encode_entry(ENTRY)), 1],
        {"tenant": "acme"},
    ],
)
def test_wrong_shapes_are_refused(raw):
    with pytest.raises(RemoteProtocolError):
        decode_entry(msgpack.packb(raw, use_bin_type=True))


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(RemoteProtocolError, match="limit"):
        decode_entry(b"\x00" * (MAX_ENTRY_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode_entry(encode_entry(ENTRY) + b"\x00")
