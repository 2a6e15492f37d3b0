"""Storage receipts: packing, signing, and every check a receipt must pass before it counts."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.receipts import (
    MAX_POSITION,
    MAX_POSITIONS,
    RECEIPT_TTL,
    Receipt,
    check_receipt,
    decode_receipt,
    pack_positions,
    sign_receipt,
    unpack_positions,
)
from p2pstore.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from p2pstore.identity import MeshCA

T0 = 1_772_366_400.0
ISSUED = datetime.fromtimestamp(T0, UTC) - timedelta(days=1)
CA = MeshCA.create_in_memory(mesh_name="receipts", now=ISSUED)
HOLDER = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=ISSUED)
OTHER = CA.issue_in_memory(datacenter="dc-2", region="FR-GES", now=ISSUED)
OBJECT = hashlib.sha256(b"object").digest()
IDS = [hashlib.sha256(b"fragment %d" % i).digest() for i in range(12)]


def fragment_id(position: int) -> bytes | None:
    return IDS[position] if 0 <= position < len(IDS) else None


def signed(held=(0, 5), missing=(7,), signer=HOLDER, object_id=OBJECT, now=T0):
    return sign_receipt(
        signer,
        object_id,
        address="10.0.0.1:7400",
        held={p: IDS[p] for p in held},
        missing={p: IDS[p] for p in missing},
        now=now,
    )


positions = st.lists(st.integers(0, MAX_POSITION), max_size=200, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(positions)
def test_positions_round_trip(listed):
    assert unpack_positions(pack_positions(listed)) == tuple(listed)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_packed_positions_have_one_encoding(data):
    """Any bytes either fail cleanly or are the one canonical packing of what they decode to."""
    try:
        decoded = unpack_positions(data)
    except RemoteProtocolError:
        return
    assert pack_positions(decoded) == data


def test_positions_must_increase():
    with pytest.raises(LocalProtocolError):
        pack_positions([3, 3])
    with pytest.raises(LocalProtocolError):
        pack_positions([MAX_POSITION + 1])


def test_a_receipt_round_trips_and_checks():
    receipt = signed()
    assert decode_receipt(receipt.encode()) == receipt
    checked = check_receipt(receipt, HOLDER.certificate, OBJECT, fragment_id)
    assert (checked.held, checked.missing) == ((0, 5), (7,))
    assert receipt.expires_ms - receipt.issued_ms == RECEIPT_TTL * 1000
    assert receipt.holder == HOLDER.node_id


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_bit_is_refused(data):
    encoded = bytearray(signed().encode())
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises((RemoteProtocolError, IntegrityError)):
        receipt = decode_receipt(bytes(encoded))
        check_receipt(receipt, HOLDER.certificate, OBJECT, fragment_id)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_junk_is_refused_cleanly(junk):
    with pytest.raises(RemoteProtocolError):
        decode_receipt(junk)


def test_a_receipt_checked_against_another_nodes_certificate_is_refused():
    with pytest.raises(IntegrityError, match="claims to come from"):
        check_receipt(signed(), OTHER.certificate, OBJECT, fragment_id)


def test_a_receipt_for_another_object_is_refused():
    other = hashlib.sha256(b"another object").digest()
    with pytest.raises(RemoteProtocolError, match="another object"):
        check_receipt(signed(object_id=other), HOLDER.certificate, OBJECT, fragment_id)


def test_a_receipt_for_other_fragments_is_refused():
    """The writer named the wrong object for a fragment: the digest gives it away."""
    receipt = sign_receipt(
        HOLDER, OBJECT, address="a:1", held={0: hashlib.sha256(b"x").digest()}, now=T0
    )
    with pytest.raises(IntegrityError, match="other fragments"):
        check_receipt(receipt, HOLDER.certificate, OBJECT, fragment_id)


def test_a_position_beyond_the_object_is_refused():
    receipt = sign_receipt(HOLDER, OBJECT, address="a:1", held={40: IDS[0]}, now=T0)
    with pytest.raises(RemoteProtocolError, match="beyond the object"):
        check_receipt(receipt, HOLDER.certificate, OBJECT, fragment_id)


def test_a_receipt_with_a_changed_field_is_refused():
    receipt = signed()
    for change in (
        {"expires_ms": receipt.expires_ms + 1000},
        {"held": pack_positions([0]), "missing": pack_positions([5, 7])},
        {"address": "evil:1"},
    ):
        forged = dataclasses.replace(receipt, **change)
        with pytest.raises(IntegrityError):
            check_receipt(forged, HOLDER.certificate, OBJECT, fragment_id)


def test_malformed_receipts_cannot_be_built():
    receipt = signed()
    with pytest.raises(LocalProtocolError, match="both held and missing"):
        dataclasses.replace(receipt, missing=pack_positions([0]))
    with pytest.raises(LocalProtocolError, match="lives"):
        dataclasses.replace(receipt, expires_ms=receipt.issued_ms)
    with pytest.raises(LocalProtocolError, match="at least one"):
        dataclasses.replace(receipt, held=b"", missing=b"")
    with pytest.raises(LocalProtocolError, match="at most"):
        Receipt(**{
            **{f.name: getattr(receipt, f.name) for f in dataclasses.fields(receipt)},
            "held": pack_positions(range(MAX_POSITIONS + 1)),
            "missing": b"",
        })  # fmt: skip
