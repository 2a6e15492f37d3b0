"""Lease renewals on the wire: round trips, and hostile bytes give one typed error."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire import (
    BucketEntry,
    Kind,
    LeaseItem,
    Message,
    Reference,
    RenewLeases,
    RenewLeasesReply,
    RetentionProof,
    decode_envelope,
    encode_envelope,
)
from p2pstore.wire.envelope import Envelope
from p2pstore.wire.leases import MAX_LEASE_OBJECTS

ENTRY = BucketEntry(
    tenant="acme",
    bucket_token=b"b" * 32,
    name=b"n" * 32,
    version=b"v" * 16,
    op=1,
    timestamp=123,
    retain_until=10**9,
    legal_hold=False,
    payload=b"sealed",
    signer_key=b"k" * 32,
    certificate=b"c" * 600,
    signature=b"s" * 64,
)
REFERENCE = Reference(
    object_id=b"o" * 32,
    tenant="acme",
    bucket_token=b"b" * 32,
    name=b"n" * 32,
    version=b"v" * 16,
    issued_ms=5,
    expires_ms=0,
    signer_key=b"k" * 32,
    certificate=b"c" * 600,
    signature=b"s" * 64,
)

fragment_ids = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=8)
items = st.builds(
    LeaseItem, object_id=st.binary(min_size=32, max_size=32), fragment_ids=fragment_ids.map(tuple)
)


def wire(message, kind=Kind.REQUEST):
    return decode_envelope(encode_envelope(Envelope(kind, 3, message))).message


@settings(max_examples=60, deadline=None)
@given(
    st.lists(items, min_size=1, max_size=5),
    st.integers(0, 2**62),
    st.integers(0, 2**62),
    st.booleans(),
)
def test_a_renewal_round_trips(leased, issued, expires, with_proof):
    renewal = RenewLeases(
        holder=b"h" * 20,
        issued_ms=issued,
        expires_ms=expires,
        items=tuple(leased),
        retention=(RetentionProof(reference=REFERENCE, entry=ENTRY),) if with_proof else (),
        steward_key=b"k" * 32,
        signature=b"s" * 64,
    )
    assert wire(renewal) == renewal
    reply = RenewLeasesReply(applied=3, refused=("not eligible",))
    assert wire(reply, Kind.RESPONSE) == reply


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_payloads_decode_or_give_a_typed_error(data):
    try:
        decode_envelope(msgpack.packb([0, 1, 47, data], use_bin_type=True))
    except RemoteProtocolError:
        return


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_renewals_decode_or_give_a_typed_error(data):
    renewal = RenewLeases(
        holder=b"h" * 20,
        issued_ms=1,
        expires_ms=2,
        items=(LeaseItem(object_id=b"o" * 32, fragment_ids=(b"f" * 32,)),),
        retention=(RetentionProof(reference=REFERENCE, entry=ENTRY),),
        steward_key=b"k" * 32,
        signature=b"s" * 64,
    )
    encoded = bytearray(encode_envelope(Envelope(Kind.REQUEST, 3, renewal)))
    for _ in range(data.draw(st.integers(1, 6))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_envelope(bytes(encoded)).message
    except RemoteProtocolError:
        return
    assert isinstance(decoded, Message)


def test_too_many_objects_or_a_wrong_key_are_refused_both_ways():
    item = LeaseItem(object_id=b"o" * 32, fragment_ids=(b"f" * 32,))
    with pytest.raises(LocalProtocolError):
        RenewLeases(
            holder=b"h" * 20,
            issued_ms=1,
            expires_ms=2,
            items=(item,) * (MAX_LEASE_OBJECTS + 1),
            retention=(),
            steward_key=b"k" * 32,
            signature=b"s" * 64,
        )
    payload = msgpack.packb(
        [0, 1, 47, b"h" * 20, 1, 2, [[b"o" * 32, [b"f" * 32]]], [], b"k" * 31, b"s" * 64],
        use_bin_type=True,
    )
    with pytest.raises(RemoteProtocolError, match="steward_key"):
        decode_envelope(payload)


def test_a_reference_list_round_trips_within_its_bound():
    from p2pstore.wire.leases import (
        MAX_REFERENCES_PER_RECORD,
        MAX_REFERENCES_VALUE,
        decode_references,
        encode_references,
    )

    full = (REFERENCE,) * MAX_REFERENCES_PER_RECORD
    assert decode_references(encode_references(full)) == full
    assert len(encode_references(full)) <= MAX_REFERENCES_VALUE
    with pytest.raises(LocalProtocolError):
        encode_references((REFERENCE,) * (MAX_REFERENCES_PER_RECORD + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.builds(msgpack.packb, st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=12), max_leaves=40)))  # fmt: skip
def test_hostile_reference_lists_give_one_typed_error(data):
    from p2pstore.wire.leases import decode_references

    try:
        decoded = decode_references(data)
    except RemoteProtocolError:
        return
    assert all(isinstance(r, Reference) for r in decoded)
